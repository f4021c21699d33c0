//! The devices the daemon knows: configured ones from start-up, plus MQTT devices registered
//! when their first message arrives (`mqtt.auto_register`).
//!
//! The API lists it; sources look devices up and add to it. Reads are frequent and writes
//! rare (one per new device), hence a `RwLock`; entries are never removed while running.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::model::{DeviceInfo, Slot};

#[derive(Debug, Default)]
struct Inner {
    list: Vec<Arc<DeviceInfo>>,
    by_id: HashMap<String, usize>,
}

/// Shared, growable set of devices in registration order.
#[derive(Debug, Default)]
pub struct DeviceRegistry {
    inner: RwLock<Inner>,
}

impl DeviceRegistry {
    /// A registry holding `devices` (config order); later duplicates of an id are ignored.
    pub fn new(devices: &[Arc<DeviceInfo>]) -> Arc<Self> {
        let reg = DeviceRegistry::default();
        for d in devices {
            reg.insert(Arc::clone(d));
        }
        Arc::new(reg)
    }

    /// The device with `id`.
    pub fn get(&self, id: &str) -> Option<Arc<DeviceInfo>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.by_id.get(id).map(|&i| Arc::clone(&inner.list[i]))
    }

    /// Adds `device` unless its id is taken; returns the registered entry either way and
    /// whether it was new. A new entry carries its [`Slot`], the index in this registry.
    pub fn insert(&self, device: Arc<DeviceInfo>) -> (Arc<DeviceInfo>, bool) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&i) = inner.by_id.get(&device.id) {
            return (Arc::clone(&inner.list[i]), false);
        }
        let i = inner.list.len();
        let device = if device.slot == Slot::new(i) {
            device
        } else {
            Arc::new(DeviceInfo {
                slot: Slot::new(i),
                ..(*device).clone()
            })
        };
        inner.by_id.insert(device.id.clone(), i);
        inner.list.push(Arc::clone(&device));
        (device, true)
    }

    /// Every device, in registration order.
    pub fn list(&self) -> Vec<Arc<DeviceInfo>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.list.clone()
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_device_carries_its_index_as_slot() {
        let a = Arc::new(DeviceInfo {
            slot: Slot::new(0),
            ..DeviceInfo::for_test("A", "meter")
        });
        let b = Arc::new(DeviceInfo::for_test("B", "meter"));
        let reg = DeviceRegistry::new(&[Arc::clone(&a), Arc::clone(&b)]);
        // A device already at its index is kept as is (the sources hold that very Arc).
        assert!(Arc::ptr_eq(&reg.get("A").unwrap(), &a));
        assert_eq!(reg.get("B").unwrap().slot, Slot::new(1));
        let (c, new) = reg.insert(Arc::new(DeviceInfo::for_test("C", "meter")));
        assert!(new);
        assert_eq!(c.slot, Slot::new(2));
        let (again, new) = reg.insert(Arc::new(DeviceInfo::for_test("C", "meter")));
        assert!(!new && Arc::ptr_eq(&again, &c));
    }
}
