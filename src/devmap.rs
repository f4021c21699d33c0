//! Per-device state found by the device's registration [`Slot`] instead of by hashing its id.
//!
//! Rules, KPIs, history and the status board each keep state per device and look it up on
//! every reading. Hashing an id and comparing it with the stored key touches two or three
//! cache lines of a 10,000-entry table, once per consumer per reading: a fifth of the
//! daemon's CPU at 100,000 MQTT messages/s (perf, this repository's bench). A registered
//! device carries a dense slot, so the usual lookup is one index into a small vector and a
//! pointer comparison. Devices without a slot (replays, tests), a slot another device
//! already holds, and entries made from an id alone (state restored at start-up) use the id
//! index instead, which is also what lookups by id (the API) use — slower, never wrong.

use std::sync::Arc;

use crate::model::DeviceInfo;

/// No entry at this slot.
const EMPTY: u32 = u32::MAX;

/// Slots above this use the id index (a stray slot must not allocate a huge vector).
const MAX_SLOTS: usize = 1 << 22;

/// Who an entry belongs to. Kept apart from the values: the hot path compares addresses in
/// `by_slot` and then touches only the value, not a line of names and handles before it.
#[derive(Debug)]
struct Key {
    id: String,
    /// The device this entry's slot was linked from (None for an entry made by id). Holding
    /// it keeps its address, which `by_slot` compares with, from being reused.
    device: Option<Arc<DeviceInfo>>,
}

/// A slot's entry and the address of the device it was linked from.
#[derive(Debug, Clone, Copy)]
struct Link {
    entry: u32,
    device: usize,
}

const UNLINKED: Link = Link {
    entry: EMPTY,
    device: 0,
};

/// Per-device values, by device (fast, by slot) or by id.
#[derive(Debug)]
pub struct DeviceMap<V> {
    values: Vec<V>,
    keys: Vec<Key>,
    ids: foldhash::HashMap<String, u32>,
    by_slot: Vec<Link>,
}

impl<V> Default for DeviceMap<V> {
    fn default() -> Self {
        DeviceMap {
            values: Vec::new(),
            keys: Vec::new(),
            ids: Default::default(),
            by_slot: Vec::new(),
        }
    }
}

/// The address `by_slot` identifies a device by.
fn address(d: &DeviceInfo) -> usize {
    std::ptr::from_ref(d) as usize
}

impl<V> DeviceMap<V> {
    /// Number of devices held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The entry linked at `d`'s slot, if it is `d`'s.
    fn at_slot(&self, d: &DeviceInfo) -> Option<usize> {
        let link = *self.by_slot.get(d.slot.index()?)?;
        if link.entry == EMPTY {
            return None;
        }
        // Another handle of the same device (same id and slot) is the same device too.
        let same = link.device == address(d)
            || self
                .keys
                .get(link.entry as usize)
                .is_some_and(|k| k.id == d.id);
        same.then_some(link.entry as usize)
    }

    fn find(&self, d: &DeviceInfo) -> Option<usize> {
        self.at_slot(d)
            .or_else(|| self.ids.get(d.id.as_str()).map(|&i| i as usize))
    }

    /// The value of `d`.
    pub fn get(&self, d: &DeviceInfo) -> Option<&V> {
        let i = self.find(d)?;
        self.values.get(i)
    }

    /// The value of `d`, mutable.
    pub fn get_mut(&mut self, d: &DeviceInfo) -> Option<&mut V> {
        let i = self.find(d)?;
        self.values.get_mut(i)
    }

    /// The value of `d`, made by `make` if there is none; links `d`'s slot to it.
    pub fn get_or_insert_with(&mut self, d: &Arc<DeviceInfo>, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.at_slot(d) {
            Some(i) => i,
            None => self.link(d, make),
        };
        &mut self.values[i]
    }

    /// Finds or makes the entry of `d` by id and links `d`'s slot to it if the slot is free.
    fn link(&mut self, d: &Arc<DeviceInfo>, make: impl FnOnce() -> V) -> usize {
        let i = match self.ids.get(d.id.as_str()) {
            Some(&i) => i as usize,
            None => self.push(d.id.clone(), make()),
        };
        if let Some(s) = d.slot.index().filter(|s| *s < MAX_SLOTS) {
            if self.by_slot.len() <= s {
                self.by_slot.resize(s + 1, UNLINKED);
            }
            if self.by_slot[s].entry == EMPTY {
                self.by_slot[s] = Link {
                    entry: i as u32,
                    device: address(d),
                };
                self.keys[i].device = Some(Arc::clone(d));
            }
        }
        i
    }

    fn push(&mut self, id: String, value: V) -> usize {
        let i = self.values.len();
        self.ids.insert(id.clone(), i as u32);
        self.keys.push(Key { id, device: None });
        self.values.push(value);
        i
    }

    /// The value of the device called `id`.
    pub fn get_by_id(&self, id: &str) -> Option<&V> {
        let i = *self.ids.get(id)?;
        self.values.get(i as usize)
    }

    /// The value of the device called `id`, mutable.
    pub fn get_by_id_mut(&mut self, id: &str) -> Option<&mut V> {
        let i = *self.ids.get(id)?;
        self.values.get_mut(i as usize)
    }

    /// Sets the value of the device called `id` (restored state; no device to link yet).
    pub fn insert_by_id(&mut self, id: &str, value: V) {
        match self.get_by_id_mut(id) {
            Some(v) => *v = value,
            None => {
                self.push(id.to_string(), value);
            }
        }
    }

    /// `(id, value)` of every device, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.keys.iter().map(|k| k.id.as_str()).zip(&self.values)
    }

    /// Every value, in the order they were added.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.values.iter()
    }

    /// Every value, mutable.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.values.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Slot;

    fn dev(id: &str, slot: Slot) -> Arc<DeviceInfo> {
        Arc::new(DeviceInfo {
            slot,
            ..DeviceInfo::for_test(id, "meter")
        })
    }

    #[test]
    fn slotted_devices_find_their_own_values() {
        let mut m = DeviceMap::default();
        let a = dev("A", Slot::new(0));
        let b = dev("B", Slot::new(5));
        *m.get_or_insert_with(&a, || 0) += 1;
        *m.get_or_insert_with(&b, || 10) += 1;
        *m.get_or_insert_with(&a, || 0) += 1;
        assert_eq!(m.get(&a), Some(&2));
        assert_eq!(m.get(&b), Some(&11));
        assert_eq!(m.get_by_id("B"), Some(&11));
        assert_eq!(m.len(), 2);
        // Another Arc of the same device (same id and slot) reaches the same value.
        let a2 = dev("A", Slot::new(0));
        assert_eq!(m.get(&a2), Some(&2));
    }

    #[test]
    fn a_slot_held_by_another_device_falls_back_to_the_id() {
        let mut m = DeviceMap::default();
        let a = dev("A", Slot::new(3));
        let stray = dev("Z", Slot::new(3));
        *m.get_or_insert_with(&a, || 1) += 0;
        *m.get_or_insert_with(&stray, || 7) += 1;
        assert_eq!(m.get(&a), Some(&1));
        assert_eq!(m.get(&stray), Some(&8));
        let none = dev("N", Slot::NONE);
        assert_eq!(m.get(&none), None);
        *m.get_or_insert_with(&none, || 4) += 1;
        assert_eq!(m.get_mut(&none).copied(), Some(5));
        let ids: Vec<&str> = m.iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["A", "Z", "N"]);
    }

    #[test]
    fn state_restored_by_id_is_found_by_the_device_later() {
        let mut m = DeviceMap::default();
        m.insert_by_id("A", 40);
        let a = dev("A", Slot::new(1));
        assert_eq!(m.get(&a), Some(&40));
        *m.get_or_insert_with(&a, || 0) += 2;
        assert_eq!(m.get_by_id("A"), Some(&42));
        assert_eq!(m.len(), 1);
        m.insert_by_id("A", 1);
        assert_eq!(m.get(&a), Some(&1));
        assert_eq!(m.values().sum::<i32>(), 1);
    }
}
