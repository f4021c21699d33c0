//! The live hub: one `tokio::sync::broadcast` channel that everything the control room
//! should see at once is published into, and that `GET /api/v1/stream` (Server-Sent
//! Events) subscribes to.
//!
//! Publishers: the device-status task in [`crate::run`] (status changes), the event log
//! (alarm changes made through the store, including acknowledgements and shelving from the
//! API), and the readings forwarder (live values). The alarm engine publishes its own
//! changes with [`Hub::publish`] and [`LiveEvent::Alarm`]. A subscriber that lags loses the
//! oldest messages (counted), never blocks a publisher.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::eventlog::AlarmRecord;
use crate::model::Timestamp;
use crate::status::DeviceStatus;

/// Messages kept for a slow subscriber before it starts losing the oldest.
pub const HUB_CAPACITY: usize = 1024;

/// One thing that happened, as the stream sends it (`event:` is [`LiveEvent::name`]).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// An alarm was raised, escalated, acknowledged, shelved or cleared.
    Alarm {
        /// What happened: `raised`, `escalated`, `acknowledged`, `shelved`, `cleared`.
        change: String,
        /// The alarm after the change.
        alarm: Box<AlarmRecord>,
    },
    /// A device changed status.
    DeviceStatus {
        /// The device.
        device: String,
        /// Status before.
        from: DeviceStatus,
        /// Status after.
        to: DeviceStatus,
        /// When (ns since epoch).
        at: Timestamp,
    },
    /// The latest values of a device (sent only to subscribers that chose the device).
    Reading {
        /// The device.
        device: String,
        /// When the values were taken (ns since epoch).
        ts: Timestamp,
        /// Field values by name.
        values: BTreeMap<String, f64>,
    },
}

impl LiveEvent {
    /// The SSE event name: `alarm`, `device_status` or `reading`.
    pub fn name(&self) -> &'static str {
        match self {
            LiveEvent::Alarm { .. } => "alarm",
            LiveEvent::DeviceStatus { .. } => "device_status",
            LiveEvent::Reading { .. } => "reading",
        }
    }

    /// The device the event is about.
    pub fn device(&self) -> &str {
        match self {
            LiveEvent::Alarm { alarm, .. } => &alarm.device,
            LiveEvent::DeviceStatus { device, .. } | LiveEvent::Reading { device, .. } => device,
        }
    }
}

/// The broadcast hub; cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    /// Readings go on their own channel so a burst of them never pushes an alarm change
    /// out of a slow subscriber's window.
    readings: broadcast::Sender<Arc<LiveEvent>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    /// A hub with [`HUB_CAPACITY`].
    pub fn new() -> Hub {
        let (tx, _) = broadcast::channel(HUB_CAPACITY);
        let (readings, _) = broadcast::channel(HUB_CAPACITY);
        Hub { tx, readings }
    }

    /// Sends `event` to every current subscriber; without subscribers it is dropped.
    pub fn publish(&self, event: LiveEvent) {
        let _ = self.tx.send(Arc::new(event));
    }

    /// A new subscription, starting with the next published event.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.tx.subscribe()
    }

    /// Sends a [`LiveEvent::Reading`] to the subscribers of readings.
    pub fn publish_reading(&self, event: LiveEvent) {
        let _ = self.readings.send(Arc::new(event));
    }

    /// Whether anyone listens to readings (so the forwarder can skip building them).
    pub fn wants_readings(&self) -> bool {
        self.readings.receiver_count() > 0
    }

    /// A new subscription to readings.
    pub fn subscribe_readings(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.readings.subscribe()
    }
}
