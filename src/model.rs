//! The values that flow through the daemon: devices, readings and their quality.
//!
//! A source produces [`Reading`]s; the pipeline hands the same `Arc`-shared reading to every
//! consumer. Device metadata and field schemas are built once (at start-up, or when an MQTT
//! device is first seen) and shared by pointer, so the hot path never copies strings.

use std::sync::Arc;

use serde::Serialize;

use crate::sinks::lineproto;

/// Nanoseconds since the Unix epoch (UTC).
pub type Timestamp = i64;

/// Index of a field in a reading's [`Schema`].
pub type FieldId = u16;

/// The current wall-clock time in nanoseconds since the epoch.
pub fn now_ns() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// What a device is and where it stands in the network; fixed while the daemon runs.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    /// Unique device id, e.g. `TX-0701`.
    pub id: String,
    /// Device kind (`transformer`, `meter`, ...); also the line-protocol measurement.
    pub kind: String,
    /// Site (substation) name.
    pub site: String,
    /// Feeder the device hangs on.
    pub feeder: String,
    /// Parent device (a meter's transformer), if known.
    pub parent: Option<String>,
    /// Free-text location for field crews (street, pole number, GPS).
    pub location: Option<String>,
    /// Rated apparent power in kVA (transformers).
    pub rated_kva: Option<f64>,
    /// Nominal phase-to-neutral voltage in V.
    pub nominal_voltage: Option<f64>,
    /// Customers supplied through this device (meters; default 1).
    pub customers: u32,
    /// Poll or expected reporting interval in nanoseconds (drives stale detection).
    pub interval_ns: i64,
    /// Pre-escaped line-protocol series key: `measurement,device=..,feeder=..,kind=..,site=..`.
    #[serde(skip)]
    pub lp_series: String,
    /// Dense index given at registration, where consumers keep this device's state.
    #[serde(skip)]
    pub slot: Slot,
}

/// A device's dense index from [`crate::registry::DeviceRegistry`]: consumers keep per-device
/// state in a vector at this index ([`crate::devmap::DeviceMap`]) instead of hashing the id
/// on every reading. [`Slot::NONE`] for a device that was never registered (replays, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(u32);

impl Slot {
    /// No slot: state is found by id.
    pub const NONE: Slot = Slot(u32::MAX);

    /// Slot `i` (NONE if it does not fit).
    pub fn new(i: usize) -> Slot {
        u32::try_from(i).map_or(Slot::NONE, Slot)
    }

    /// The index, unless NONE.
    pub fn index(self) -> Option<usize> {
        (self != Slot::NONE).then_some(self.0 as usize)
    }
}

impl DeviceInfo {
    /// Recomputes the cached line-protocol series key after the identity fields were set.
    pub fn finish(mut self) -> Self {
        self.lp_series = lineproto::series_key(
            &self.kind,
            &[
                ("device", &self.id),
                ("feeder", &self.feeder),
                ("kind", &self.kind),
                ("site", &self.site),
            ],
        );
        self
    }
}

#[cfg(test)]
impl DeviceInfo {
    /// A device `id` of `kind` on site `S1`, feeder `F1`, polled every second (tests).
    pub(crate) fn for_test(id: &str, kind: &str) -> Self {
        DeviceInfo {
            id: id.into(),
            kind: kind.into(),
            site: "S1".into(),
            feeder: "F1".into(),
            parent: None,
            location: None,
            rated_kva: None,
            nominal_voltage: None,
            customers: 1,
            interval_ns: 1_000_000_000,
            lp_series: String::new(),
            slot: Slot::NONE,
        }
        .finish()
    }
}

/// One field of a schema: its name and unit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDef {
    /// Field name as written to the store.
    pub name: String,
    /// Engineering unit, if known.
    pub unit: Option<String>,
    /// The line-protocol text before this field's value: `,key=` with the key escaped, or
    /// empty when the key is (such a field is not written).
    #[serde(skip)]
    pub lp_prefix: String,
    /// `lp_prefix` padded with zeros to a fixed size, so that the encoder copies it in one
    /// fixed-size move instead of a `memcpy` call; all zeros when the prefix is longer.
    #[serde(skip)]
    pub lp_padded: [u8; lineproto::PADDED_PREFIX],
}

impl FieldDef {
    /// A field with its line-protocol key precomputed.
    pub fn new(name: impl Into<String>, unit: Option<String>) -> Self {
        let name = name.into();
        let key = lineproto::escape_key(&name);
        let lp_prefix = if key.is_empty() {
            key
        } else {
            format!(",{key}=")
        };
        let mut lp_padded = [0; lineproto::PADDED_PREFIX];
        if let Some(room) = lp_padded.get_mut(..lp_prefix.len()) {
            room.copy_from_slice(lp_prefix.as_bytes());
        }
        FieldDef {
            name,
            unit,
            lp_prefix,
            lp_padded,
        }
    }
}

/// The list of fields a device (or a profile) can report; readings refer to fields by index.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Schema {
    /// Fields, indexed by [`FieldId`].
    pub fields: Vec<FieldDef>,
    /// Field id by name: rules and KPIs look fields up by name on every reading, and most
    /// names they ask for are absent (a meter has no oil temperature), which a scan pays in
    /// full.
    #[serde(skip)]
    index: foldhash::HashMap<String, FieldId>,
    /// Ids of the [`Known`] fields, so that derived quantities skip the name lookup.
    #[serde(skip)]
    known: [Option<FieldId>; Known::ALL.len()],
}

/// Fields that derived quantities, KPIs and built-in rules read on every reading: each
/// schema resolves them once, and [`Reading::known`] is an array index instead of a hash
/// lookup of the name (a dozen per reading otherwise, most for fields a device lacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// `voltage_a`.
    VoltageA,
    /// `voltage_b`.
    VoltageB,
    /// `voltage_c`.
    VoltageC,
    /// `current_a`.
    CurrentA,
    /// `current_b`.
    CurrentB,
    /// `current_c`.
    CurrentC,
    /// `active_power`.
    ActivePower,
    /// `reactive_power`.
    ReactivePower,
    /// `frequency`.
    Frequency,
    /// `oil_temp`.
    OilTemp,
    /// `winding_temp`.
    WindingTemp,
    /// `clock_offset`.
    ClockOffset,
    /// `meter_time`.
    MeterTime,
    /// `last_gasp`.
    LastGasp,
    /// `power_factor`.
    PowerFactor,
    /// `thd_voltage`.
    ThdVoltage,
    /// `energy_import`.
    EnergyImport,
}

impl Known {
    /// Every known field, in declaration order.
    pub const ALL: [Known; 17] = [
        Known::VoltageA,
        Known::VoltageB,
        Known::VoltageC,
        Known::CurrentA,
        Known::CurrentB,
        Known::CurrentC,
        Known::ActivePower,
        Known::ReactivePower,
        Known::Frequency,
        Known::OilTemp,
        Known::WindingTemp,
        Known::ClockOffset,
        Known::MeterTime,
        Known::LastGasp,
        Known::PowerFactor,
        Known::ThdVoltage,
        Known::EnergyImport,
    ];

    /// The three phase voltages.
    pub const VOLTAGES: [Known; 3] = [Known::VoltageA, Known::VoltageB, Known::VoltageC];
    /// The three phase currents.
    pub const CURRENTS: [Known; 3] = [Known::CurrentA, Known::CurrentB, Known::CurrentC];

    /// The field name.
    pub fn name(self) -> &'static str {
        match self {
            Known::VoltageA => "voltage_a",
            Known::VoltageB => "voltage_b",
            Known::VoltageC => "voltage_c",
            Known::CurrentA => "current_a",
            Known::CurrentB => "current_b",
            Known::CurrentC => "current_c",
            Known::ActivePower => "active_power",
            Known::ReactivePower => "reactive_power",
            Known::Frequency => "frequency",
            Known::OilTemp => "oil_temp",
            Known::WindingTemp => "winding_temp",
            Known::ClockOffset => "clock_offset",
            Known::MeterTime => "meter_time",
            Known::LastGasp => "last_gasp",
            Known::PowerFactor => "power_factor",
            Known::ThdVoltage => "thd_voltage",
            Known::EnergyImport => "energy_import",
        }
    }

    /// The known field called `name`.
    pub fn from_name(name: &str) -> Option<Known> {
        Known::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl Schema {
    /// A schema of `fields`, in this order (the first wins if a name repeats).
    pub fn new(fields: Vec<FieldDef>) -> Self {
        let mut index =
            foldhash::HashMap::with_capacity_and_hasher(fields.len(), Default::default());
        for (i, f) in fields.iter().enumerate() {
            if let Ok(id) = FieldId::try_from(i) {
                index.entry(f.name.clone()).or_insert(id);
            }
        }
        let mut s = Schema {
            fields,
            index,
            known: Default::default(),
        };
        for k in Known::ALL {
            s.known[k as usize] = s.id_of(k.name());
        }
        s
    }

    /// Adds a field at the end; returns its id (`None` when the schema is full). Use this, not
    /// `fields.push`, so that [`id_of`](Self::id_of) finds it.
    pub fn push(&mut self, field: FieldDef) -> Option<FieldId> {
        let id = FieldId::try_from(self.fields.len()).ok()?;
        if let Some(k) = Known::from_name(&field.name)
            && self.known[k as usize].is_none()
        {
            self.known[k as usize] = Some(id);
        }
        self.index.entry(field.name.clone()).or_insert(id);
        self.fields.push(field);
        Some(id)
    }

    /// Looks a field up by name.
    pub fn id_of(&self, name: &str) -> Option<FieldId> {
        match self.index.get(name) {
            Some(id) => Some(*id),
            // Fewer names than fields: a repeated name, or fields pushed past `push`.
            None if self.index.len() < self.fields.len() => self
                .fields
                .iter()
                .position(|f| f.name == name)
                .and_then(|i| FieldId::try_from(i).ok()),
            None => None,
        }
    }

    /// The name of field `id` (empty if out of range).
    pub fn name(&self, id: FieldId) -> &str {
        self.fields
            .get(usize::from(id))
            .map(|f| f.name.as_str())
            .unwrap_or("")
    }
}

/// How much of a reading can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// Every field the device should report is present.
    Good,
    /// Some reads of the poll failed; the fields present are good.
    Partial,
}

/// One poll response or one message: a set of field values taken at one instant.
#[derive(Debug, Clone)]
pub struct Reading {
    /// The device the values belong to.
    pub device: Arc<DeviceInfo>,
    /// When the response arrived (ns since epoch), or the timestamp the device sent.
    pub ts: Timestamp,
    /// Names of the fields `values` refers to.
    pub schema: Arc<Schema>,
    /// Field values by id; non-finite values never get here.
    pub values: Vec<(FieldId, f64)>,
    /// Whether the poll was complete.
    pub quality: Quality,
}

impl Reading {
    /// A complete reading of `device` at `ts` with its own schema of these field names (for
    /// tools and tests; sources share a schema per profile).
    pub fn from_pairs(device: Arc<DeviceInfo>, ts: Timestamp, values: &[(&str, f64)]) -> Reading {
        Reading {
            device,
            ts,
            schema: Arc::new(Schema::new(
                values
                    .iter()
                    .map(|(n, _)| FieldDef::new(*n, None))
                    .collect(),
            )),
            values: values
                .iter()
                .enumerate()
                .map(|(i, (_, v))| (FieldId::try_from(i).unwrap_or(FieldId::MAX), *v))
                .collect(),
            quality: Quality::Good,
        }
    }

    /// The value of a field by name, if the reading has it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.value_of(self.schema.id_of(name)?)
    }

    /// The value of a [`Known`] field, if the reading has it.
    pub fn known(&self, k: Known) -> Option<f64> {
        self.value_of(self.schema.known[k as usize]?)
    }

    /// The value of field `id`, if the reading has it.
    pub fn value_of(&self, id: FieldId) -> Option<f64> {
        // Sources emit values in schema order, so the value of field `id` is usually at `id`.
        match self.values.get(usize::from(id)) {
            Some((f, v)) if *f == id => Some(*v),
            _ => self.values.iter().find(|(f, _)| *f == id).map(|(_, v)| *v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_fields_agree_with_the_lookup_by_name() {
        let dev = Arc::new(DeviceInfo::for_test("M1", "meter"));
        let mut r = Reading::from_pairs(
            Arc::clone(&dev),
            0,
            &[("energy", 5.0), ("voltage_b", 231.0), ("voltage_a", 229.5)],
        );
        assert_eq!(r.known(Known::VoltageA), Some(229.5));
        assert_eq!(r.known(Known::VoltageB), Some(231.0));
        assert_eq!(r.known(Known::VoltageC), None);
        for k in Known::ALL {
            assert_eq!(r.known(k), r.get(k.name()), "{}", k.name());
            assert_eq!(Known::from_name(k.name()), Some(k));
        }
        // A field added later (an MQTT device naming a new field) is found too; a repeated
        // name keeps the first, as the lookup by name does.
        let mut schema = Schema::clone(&r.schema);
        let c = schema.push(FieldDef::new("voltage_c", None));
        let again = schema.push(FieldDef::new("voltage_a", None));
        r.schema = Arc::new(schema);
        r.values.push((c.unwrap(), 228.0));
        r.values.push((again.unwrap(), 1.0));
        assert_eq!(r.known(Known::VoltageC), Some(228.0));
        assert_eq!(r.known(Known::VoltageA), Some(229.5));
        assert_eq!(r.get("voltage_a"), Some(229.5));
    }
}
