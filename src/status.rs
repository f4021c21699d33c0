//! Device status (`online / degraded / offline`) and last-seen times, as sources report them.
//!
//! Sources call [`StatusBoard::success`] / [`StatusBoard::failure`] after every poll or message;
//! the API reads snapshots. A device is `degraded` after one failed or partial poll and
//! `offline` after `offline_after` consecutive failures (per endpoint, default 2), so a unit
//! that stops answering is shown offline within three of its intervals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::devmap::DeviceMap;
use crate::model::{DeviceInfo, Timestamp};

/// Health of one device as the control room sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// Not polled yet since start-up.
    Unknown,
    /// The last poll succeeded completely.
    Online,
    /// The last poll failed or was partial, but not long enough to call it offline.
    Degraded,
    /// Consecutive polls failed.
    Offline,
}

/// What the board knows about one device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceState {
    /// Current status.
    pub status: DeviceStatus,
    /// When the device last answered (ns since epoch). Kept in the device's [`Liveness`]:
    /// filled in the copies [`StatusBoard::get`] hands out, `None` in the board itself.
    pub last_seen: Option<Timestamp>,
    /// Failed polls since the last success.
    pub consecutive_failures: u32,
    /// The last error, if the last poll failed.
    pub last_error: Option<String>,
    /// When the status last changed (ns since epoch).
    pub since: Timestamp,
    /// Request-level health of a unit on a bus (RTU, RTU over TCP); `None` for others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkHealth>,
    /// Where `last_seen` lives while the status stays online (see [`Liveness`]).
    #[serde(skip)]
    live: Arc<Liveness>,
}

/// The part of a device's state a repeated successful poll changes, outside the board's lock.
///
/// Nearly every poll of a healthy device only moves `last_seen`. Taking the board's one lock
/// for that made both runtime workers write the same cache line 10,000 times a second;
/// a poller holding its device's `Liveness` writes only that device's line instead.
#[derive(Debug)]
pub struct Liveness {
    /// Last answer (ns since epoch), [`NEVER`] before the first.
    last_seen: AtomicI64,
    /// The status is `online`: a complete poll changes nothing but `last_seen`.
    online: AtomicBool,
}

/// `Liveness::last_seen` of a device never heard from.
const NEVER: i64 = i64::MIN;

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            last_seen: AtomicI64::new(NEVER),
            online: AtomicBool::new(false),
        }
    }
}

impl Liveness {
    fn last_seen(&self) -> Option<Timestamp> {
        let at = self.last_seen.load(Ordering::Acquire);
        (at != NEVER).then_some(at)
    }
}

impl DeviceState {
    /// Not heard from yet, since `at`.
    fn unknown(at: Timestamp) -> Self {
        DeviceState {
            status: DeviceStatus::Unknown,
            last_seen: None,
            consecutive_failures: 0,
            last_error: None,
            since: at,
            link: None,
            live: Arc::default(),
        }
    }
}

/// Per-unit counters of a Modbus unit on a shared bus, since start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinkHealth {
    /// Requests sent to the unit (retries included).
    pub requests: u64,
    /// Requests that got no answer within the timeout.
    pub timeouts: u64,
    /// Answers rejected because their CRC was wrong (never decoded).
    pub crc_errors: u64,
    /// Modbus exception answers.
    pub exceptions: u64,
    /// Other failures: garbled or mismatched frames, a broken port or socket.
    pub transport_errors: u64,
    /// The unit failed `backoff_after` polls in a row and is polled less often.
    pub backed_off: bool,
    /// The interval the unit is polled at now (its own, or the backed-off one), ms.
    pub poll_interval_ms: u64,
}

/// A status transition, for the event log and alarms.
#[derive(Debug, Clone, Serialize)]
pub struct StatusChange {
    /// The device.
    pub device: String,
    /// Status before.
    pub from: DeviceStatus,
    /// Status after.
    pub to: DeviceStatus,
    /// When it changed.
    pub at: Timestamp,
}

/// Shared status of every device.
#[derive(Debug)]
pub struct StatusBoard {
    devices: RwLock<DeviceMap<DeviceState>>,
    /// Every transition is also broadcast here, whichever source reported it, for the
    /// event log and the live stream ([`StatusBoard::subscribe`]).
    changes: tokio::sync::broadcast::Sender<StatusChange>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard {
            devices: RwLock::default(),
            changes: tokio::sync::broadcast::channel(4096).0,
        }
    }
}

impl StatusBoard {
    /// A board with every configured device in `unknown`.
    pub fn new(devices: &[Arc<DeviceInfo>], now: Timestamp) -> Arc<Self> {
        let mut map = DeviceMap::default();
        for d in devices {
            map.get_or_insert_with(d, || DeviceState::unknown(now));
        }
        Arc::new(StatusBoard {
            devices: RwLock::new(map),
            ..StatusBoard::default()
        })
    }

    /// Receives every status transition from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StatusChange> {
        self.changes.subscribe()
    }

    /// The lock-free handle of `device`'s last-seen time, for [`StatusBoard::success_at`].
    pub fn liveness(&self, device: &Arc<DeviceInfo>, now: Timestamp) -> Arc<Liveness> {
        let mut map = self.devices.write().unwrap_or_else(|e| e.into_inner());
        let state = map.get_or_insert_with(device, || DeviceState::unknown(now));
        Arc::clone(&state.live)
    }

    /// [`StatusBoard::success`] for a device whose [`Liveness`] the caller holds: while it
    /// stays online, a complete poll only stores the time, without the board's lock.
    pub fn success_at(
        &self,
        device: &Arc<DeviceInfo>,
        live: &Liveness,
        at: Timestamp,
        complete: bool,
    ) -> Option<StatusChange> {
        if complete && live.online.load(Ordering::Acquire) {
            live.last_seen.store(at, Ordering::Release);
            return None;
        }
        self.success(device, at, complete)
    }

    /// Records a successful poll (`complete` false for a partial one).
    pub fn success(
        &self,
        device: &Arc<DeviceInfo>,
        at: Timestamp,
        complete: bool,
    ) -> Option<StatusChange> {
        let to = if complete {
            DeviceStatus::Online
        } else {
            DeviceStatus::Degraded
        };
        self.update(device, at, |s| {
            s.live.last_seen.store(at, Ordering::Release);
            s.consecutive_failures = 0;
            s.last_error = None;
            to
        })
    }

    /// Records a failed poll; `offline_after` consecutive failures make the device offline.
    pub fn failure(
        &self,
        device: &Arc<DeviceInfo>,
        at: Timestamp,
        error: &str,
        offline_after: u32,
    ) -> Option<StatusChange> {
        self.update(device, at, |s| {
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            if s.last_error.as_deref() != Some(error) {
                s.last_error = Some(error.to_string());
            }
            if s.consecutive_failures >= offline_after {
                DeviceStatus::Offline
            } else {
                DeviceStatus::Degraded
            }
        })
    }

    fn update(
        &self,
        device: &Arc<DeviceInfo>,
        at: Timestamp,
        f: impl FnOnce(&mut DeviceState) -> DeviceStatus,
    ) -> Option<StatusChange> {
        let mut map = self.devices.write().unwrap_or_else(|e| e.into_inner());
        let state = map.get_or_insert_with(device, || DeviceState::unknown(at));
        let to = f(state);
        if to == state.status {
            return None;
        }
        let from = state.status;
        state.status = to;
        state
            .live
            .online
            .store(to == DeviceStatus::Online, Ordering::Release);
        state.since = at;
        let change = StatusChange {
            device: device.id.clone(),
            from,
            to,
            at,
        };
        // No subscriber (tests, or before the daemon wired one) is fine.
        let _ = self.changes.send(change.clone());
        Some(change)
    }

    /// Updates the bus counters of `device` (created at zero on first use).
    pub fn update_link(&self, device: &DeviceInfo, f: impl FnOnce(&mut LinkHealth)) {
        let mut map = self.devices.write().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = map.get_mut(device) {
            f(state.link.get_or_insert_with(LinkHealth::default));
        }
    }

    /// The state of one device.
    pub fn get(&self, device: &str) -> Option<DeviceState> {
        let map = self.devices.read().unwrap_or_else(|e| e.into_inner());
        map.get_by_id(device).map(|s| DeviceState {
            last_seen: s.live.last_seen(),
            ..s.clone()
        })
    }

    /// Number of devices in each status.
    pub fn counts(&self) -> HashMap<DeviceStatus, usize> {
        let map = self.devices.read().unwrap_or_else(|e| e.into_inner());
        let mut counts = HashMap::new();
        for s in map.values() {
            *counts.entry(s.status).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_then_offline_then_back_online() {
        let board = StatusBoard::new(&[], 0);
        let a = Arc::new(DeviceInfo::for_test("a", "meter"));
        assert_eq!(
            board.success(&a, 1, true).map(|c| c.to),
            Some(DeviceStatus::Online)
        );
        assert_eq!(
            board.failure(&a, 2, "timeout", 2).map(|c| c.to),
            Some(DeviceStatus::Degraded)
        );
        assert_eq!(
            board.failure(&a, 3, "timeout", 2).map(|c| c.to),
            Some(DeviceStatus::Offline)
        );
        assert!(board.failure(&a, 4, "timeout", 2).is_none());
        let back = board.success(&a, 5, true).map(|c| (c.from, c.to));
        assert_eq!(back, Some((DeviceStatus::Offline, DeviceStatus::Online)));
        let state = board
            .get("a")
            .map(|s| (s.last_seen, s.consecutive_failures));
        assert_eq!(state, Some((Some(5), 0)));
    }

    #[test]
    fn the_lock_free_path_keeps_last_seen_and_gives_way_to_a_failure() {
        let a = Arc::new(DeviceInfo::for_test("a", "meter"));
        let board = StatusBoard::new(std::slice::from_ref(&a), 0);
        let live = board.liveness(&a, 0);
        let to = |c: Option<StatusChange>| c.map(|c| c.to);
        // First success goes through the board (unknown -> online), the next ones do not.
        assert_eq!(
            to(board.success_at(&a, &live, 1, true)),
            Some(DeviceStatus::Online)
        );
        assert_eq!(to(board.success_at(&a, &live, 2, true)), None);
        assert_eq!(board.get("a").and_then(|s| s.last_seen), Some(2));
        assert_eq!(
            to(board.failure(&a, 3, "timeout", 2)),
            Some(DeviceStatus::Degraded)
        );
        // Degraded: the next complete poll must bring it back, not just move the time.
        assert_eq!(
            to(board.success_at(&a, &live, 4, true)),
            Some(DeviceStatus::Online)
        );
        assert_eq!(
            to(board.success_at(&a, &live, 5, false)),
            Some(DeviceStatus::Degraded)
        );
        assert_eq!(
            to(board.success_at(&a, &live, 6, true)),
            Some(DeviceStatus::Online)
        );
        let state = board
            .get("a")
            .map(|s| (s.status, s.last_seen, s.consecutive_failures, s.last_error));
        assert_eq!(state, Some((DeviceStatus::Online, Some(6), 0, None)));
    }
}
