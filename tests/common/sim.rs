//! The Modbus simulator running in the test process, and daemon configs that poll it.

use gridwatch_sim::{ModbusSimConfig, ModbusSimHandle};

use super::free_port;

/// A running simulator with its own tokio runtime (the test body is blocking code).
pub struct Sim {
    /// Runtime the simulator's tasks run on.
    pub rt: tokio::runtime::Runtime,
    handle: Option<ModbusSimHandle>,
}

impl Sim {
    /// Starts `transformers` + `meters` units (meters alternate SDM630 / SunSpec 203).
    pub fn start(transformers: u16, meters: u16) -> Sim {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt
            .block_on(gridwatch_sim::start_modbus(ModbusSimConfig {
                transformers,
                meters,
                meter_profile: "mixed".into(),
                record: true,
                ..ModbusSimConfig::default()
            }))
            .unwrap();
        Sim {
            rt,
            handle: Some(handle),
        }
    }

    /// The simulator handle.
    pub fn h(&self) -> &ModbusSimHandle {
        self.handle.as_ref().unwrap()
    }

    /// Makes every unit stop answering, so `served()` no longer grows.
    pub fn silence(&self) {
        for u in self.h().units() {
            self.h().set_fault(u.unit, gridwatch_sim::Fault::Dead);
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

/// Config for the daemon: every simulator unit as a device named `{tag}-{device_id}`.
pub fn fleet_config(sim: &Sim, tag: &str, interval: &str, storage: &str, data_dir: &str) -> String {
    let mut s = format!(
        r#"
# These tests read the API without tokens (allowed on loopback only).
[api]
auth = "off"

[daemon]
data_dir = "{data_dir}"
http_listen = "127.0.0.1:{port}"

{storage}

[[modbus.endpoints]]
name = "sim"
address = "{addr}"
timeout = "300ms"
"#,
        port = free_port(),
        addr = sim.h().local_addr()
    );
    let units = sim.h().units();
    for u in &units {
        let parent = u
            .parent_unit
            .and_then(|p| units.iter().find(|x| x.unit == p))
            .map(|p| format!("parent = \"{tag}-{}\"\n", p.device_id))
            .unwrap_or_default();
        s.push_str(&format!(
            r#"
[[devices]]
id = "{tag}-{id}"
kind = "{kind}"
site = "Substation 7"
feeder = "F07, north"
endpoint = "sim"
unit_id = {unit}
profile = "{profile}"
interval = "{interval}"
{parent}"#,
            id = u.device_id,
            kind = u.kind.as_str(),
            unit = u.unit,
            profile = u.profile,
        ));
    }
    s
}
