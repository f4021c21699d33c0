use std::time::Duration;

use tokio_modbus::{
    Slave,
    client::{Context, Reader as _, Writer as _},
    prelude::SlaveContext as _,
};

use super::*;

async fn start(record: bool) -> ModbusSimHandle {
    start_modbus(ModbusSimConfig {
        transformers: 2,
        meters: 2,
        meter_profile: "mixed".to_owned(),
        seed: 7,
        record,
        ..ModbusSimConfig::default()
    })
    .await
    .unwrap()
}

async fn client(sim: &ModbusSimHandle, unit: u8) -> Context {
    tokio_modbus::client::tcp::connect_slave(sim.local_addr(), Slave(unit))
        .await
        .unwrap()
}

fn f32_abcd(w: &[u16]) -> f64 {
    f64::from(f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1])))
}

fn field(s: &Served, name: &str) -> f64 {
    s.fields
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} not served"))
        .1
}

fn raw(s: &Served, name: &str) -> i64 {
    s.raw.iter().find(|(n, _)| n == name).unwrap().1
}

#[tokio::test]
async fn serves_the_image_and_records_it() {
    let sim = start(true).await;
    let units = sim.units();
    assert_eq!(units.len(), 4);
    assert_eq!(units[2].profile, "sdm630");
    assert_eq!(units[3].profile, "sunspec203");
    assert_eq!(units[3].parent_unit, Some(2));
    let mut ctx = client(&sim, 1).await;

    // Transformer input registers: f32 temperatures/voltages, i32 powers, u16 frequency.
    let w = ctx.read_input_registers(0, 22).await.unwrap().unwrap();
    let s = sim.served().last().cloned().unwrap();
    assert_eq!((s.unit, s.function, s.address, s.quantity), (1, 4, 0, 22));
    assert_eq!(f32_abcd(&w[0..2]), field(&s, "oil_temp"));
    assert_eq!(f32_abcd(&w[6..8]), field(&s, "voltage_a"));
    let v = field(&s, "voltage_a");
    assert!((220.0..240.0).contains(&v), "{v}");
    // active_power is i32 BADC x 0.01.
    let badc = |w: &[u16]| {
        let (hi, lo) = (w[0].swap_bytes(), w[1].swap_bytes());
        i64::from(((u32::from(hi) << 16) | u32::from(lo)) as i32)
    };
    assert_eq!(badc(&w[12..14]), raw(&s, "active_power"));
    assert_eq!(i64::from(w[17]), raw(&s, "frequency"));
    let hz = field(&s, "frequency");
    assert!((49.9..50.1).contains(&hz), "{hz}");
    assert_eq!(s.fields.len(), 11, "{:?}", s.fields);

    // Holding registers: currents, tap, alarm word, gap at 5 and 7 reads 0, u32 CDAB energy.
    let w = ctx.read_holding_registers(0, 16).await.unwrap().unwrap();
    let s = sim.served().last().cloned().unwrap();
    assert_eq!(i64::from(w[0]), raw(&s, "current_a"));
    assert_eq!(i64::from(w[4] as i16), raw(&s, "tap_position"));
    assert_eq!((w[5], w[6], w[7]), (0, 0, 0));
    let energy = (u32::from(w[9]) << 16) | u32::from(w[8]);
    assert_eq!(i64::from(energy), raw(&s, "energy_import"));
    assert!(field(&s, "energy_import") > 1000.0);

    // Partial read cutting a register in half: answered, but that field is not recorded.
    let w = ctx.read_holding_registers(9, 2).await.unwrap().unwrap();
    assert_eq!(w.len(), 2);
    assert!(sim.served().last().unwrap().fields.is_empty());

    // Bits.
    let coils = ctx.read_coils(0, 1).await.unwrap().unwrap();
    assert_eq!(coils.len(), 1);
    let din = ctx.read_discrete_inputs(2, 1).await.unwrap().unwrap();
    assert_eq!(din, [false]);
    assert_eq!(field(sim.served().last().unwrap(), "door_open"), 0.0);

    // SDM630 meter: float32 input registers.
    ctx.set_slave(Slave(3));
    let w = ctx.read_input_registers(0x48, 4).await.unwrap().unwrap();
    let s = sim.served().last().cloned().unwrap();
    assert_eq!(f32_abcd(&w[0..2]), field(&s, "energy_import"));
    assert_eq!(f32_abcd(&w[2..4]), 0.0);
    let w = ctx.read_input_registers(0x34, 2).await.unwrap().unwrap();
    let s = sim.served().last().cloned().unwrap();
    assert_eq!(f32_abcd(&w) * 0.001, field(&s, "active_power"));

    // SunSpec meter: marker, headers, scale factors.
    ctx.set_slave(Slave(4));
    let w = ctx.read_holding_registers(40000, 4).await.unwrap().unwrap();
    assert_eq!(w, [0x5375, 0x6E53, 1, 65]);
    let w = ctx
        .read_holding_registers(40069, 109)
        .await
        .unwrap()
        .unwrap();
    let s = sim.served().last().cloned().unwrap();
    assert_eq!((w[0], w[1]), (203, 105));
    assert_eq!((w[107], w[108]), (0xFFFF, 0));
    assert_eq!(w[6] as i16, -1, "a_sf");
    assert_eq!(raw(&s, "a_sf"), -1);
    assert_eq!(i64::from(w[8] as i16), raw(&s, "voltage_a"));
    assert_eq!(field(&s, "voltage_a"), f64::from(w[8] as i16) * 1.0 * 0.1);
    let hz = field(&s, "frequency");
    assert!((49.9..50.1).contains(&hz), "{hz}");
    let wh = (u32::from(w[46]) << 16) | u32::from(w[47]);
    assert_eq!(i64::from(wh), raw(&s, "energy_import"));
    assert!(!s.fields.iter().any(|(n, _)| n.ends_with("_sf")));
    assert_eq!(s.fields.len(), 22);

    drop(ctx);
    sim.shutdown().await;
}

#[tokio::test]
async fn refuses_what_a_device_would_refuse() {
    let sim = start(false).await;
    let mut ctx = client(&sim, 1).await;
    assert_eq!(
        ctx.write_single_register(0, 1).await.unwrap(),
        Err(ExceptionCode::IllegalFunction)
    );
    assert_eq!(
        ctx.write_single_coil(0, true).await.unwrap(),
        Err(ExceptionCode::IllegalFunction)
    );
    assert_eq!(
        ctx.read_input_registers(1000, 2).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    // Runs past the end of the map.
    assert_eq!(
        ctx.read_input_registers(20, 10).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.read_input_registers(0, 126).await.unwrap(),
        Err(ExceptionCode::IllegalDataValue)
    );
    assert_eq!(
        ctx.read_coils(0, 2001).await.unwrap(),
        Err(ExceptionCode::IllegalDataValue)
    );
    ctx.set_slave(Slave(99));
    assert_eq!(
        ctx.read_input_registers(0, 2).await.unwrap(),
        Err(ExceptionCode::GatewayTargetDevice)
    );
    assert_eq!(sim.request_count(99), 1);
    assert_eq!(sim.request_count(1), 6);
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_dead_and_exception() {
    let sim = start(true).await;
    let mut ctx = client(&sim, 1).await;
    sim.set_fault(1, Fault::Dead);
    let r = tokio::time::timeout(Duration::from_millis(300), ctx.read_input_registers(0, 2)).await;
    assert!(r.is_err(), "dead unit must not answer: {r:?}");
    assert_eq!(sim.request_count(1), 1);
    // Another unit on the same connection still answers.
    ctx.set_slave(Slave(2));
    let w = ctx.read_input_registers(0, 2).await.unwrap().unwrap();
    assert_eq!(w.len(), 2);
    assert_eq!(sim.served().len(), 1, "the dead read is not recorded");

    sim.set_fault(2, Fault::Exception(4));
    assert_eq!(
        ctx.read_input_registers(0, 2).await.unwrap(),
        Err(ExceptionCode::ServerDeviceFailure)
    );
    sim.set_fault(2, Fault::Exception(0x0B));
    assert_eq!(
        ctx.read_input_registers(0, 2).await.unwrap(),
        Err(ExceptionCode::GatewayTargetDevice)
    );
    sim.clear_fault(2);
    sim.clear_fault(1);
    ctx.set_slave(Slave(1));
    assert!(ctx.read_input_registers(0, 2).await.unwrap().is_ok());

    // Physics faults show on the wire.
    sim.set_fault(1, Fault::OverTemperature);
    let w = ctx.read_input_registers(0, 2).await.unwrap().unwrap();
    assert!((f32_abcd(&w) - 100.0).abs() < 2.0);
    sim.set_fault(1, Fault::PhaseLoss(crate::Phase::A));
    let w = ctx.read_input_registers(6, 2).await.unwrap().unwrap();
    assert!(f32_abcd(&w) < 2.0);
    // ... and reach the SunSpec meter the transformer feeds (unit 4's parent is 2).
    sim.set_fault(2, Fault::UnderVoltage);
    ctx.set_slave(Slave(4));
    let w = ctx.read_holding_registers(40175, 1).await.unwrap().unwrap();
    assert_eq!(w[0], 1 << 3, "evt_under_voltage");
    let s = sim.served().last().cloned().unwrap();
    assert_eq!(field(&s, "evt_under_voltage"), 1.0);
    assert_eq!(field(&s, "evt_over_voltage"), 0.0);
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let sim = start(false).await;
    let addr = sim.local_addr();
    sim.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
