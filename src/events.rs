//! The event feed behind `/api/v1/events`: what the runtime does (deploys, swaps, evictions,
//! executions, SLO changes), broadcast to subscribers. Publishing never waits: events are
//! serialised once into a bounded broadcast channel, and a subscriber that falls a whole
//! channel behind is dropped rather than allowed to slow the runtime.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

/// Events a subscriber may be behind before it is dropped.
pub const CAPACITY: usize = 1024;

/// One thing that happened. Serialised as `{"type": "<kind>", "ts_ms": ..., ...fields}`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Deploy {
        function: String,
        model: String,
        weight_bytes: u64,
    },
    Undeploy {
        function: String,
    },
    /// A model copied onto a device: from the host, or from another device (`from`).
    SwapIn {
        device: String,
        function: String,
        bytes: u64,
        source: &'static str,
        from: Option<String>,
        ms: f64,
    },
    Evict {
        device: String,
        function: String,
        reason: &'static str,
    },
    /// A batch ran; `tokens` counts the new tokens of a generation (and `cancelled` says the
    /// client left before the end).
    Execute {
        device: String,
        function: String,
        batch: usize,
        ms: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        tokens: Option<usize>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        cancelled: bool,
    },
    /// A device failed (its unfinished requests are retried elsewhere, once).
    DeviceFault {
        device: String,
        fault: &'static str,
        error: String,
    },
    /// A failed device passed its health check and takes work again.
    DeviceHealthy {
        device: String,
    },
    /// Requests refused before running (overload, unmeetable deadline, no device).
    Dropped {
        function: String,
        reason: &'static str,
        count: usize,
    },
    /// A function's SLO status, published when it has new requests.
    Slo {
        function: String,
        compliant: bool,
        observed_ms: Option<f64>,
        percentile: f64,
        deadline_ms: f64,
        requests: u64,
    },
}

#[derive(Serialize)]
struct Stamped<'a> {
    ts_ms: u64,
    #[serde(flatten)]
    event: &'a Event,
}

/// Cheap to clone; every actor that reports holds one.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<str>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(CAPACITY)
    }
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        Self { tx: broadcast::channel(capacity).0 }
    }

    /// Whether anyone listens (callers skip building costly events otherwise).
    pub fn active(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Publishes the event built by `event` if anyone listens; never blocks.
    pub fn emit(&self, event: impl FnOnce() -> Event) {
        if !self.active() {
            return;
        }
        let event = event();
        let text = serde_json::to_string(&Stamped { ts_ms: now_ms(), event: &event })
            .expect("events serialise: plain fields only");
        // No receiver left between the check and now: nothing to do.
        let _ = self.tx.send(text.into());
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_tagged_and_stamped() {
        let bus = EventBus::new(4);
        let mut rx = bus.subscribe();
        bus.emit(|| Event::Evict { device: "cpu:0".into(), function: "f".into(), reason: "lru" });
        let v: serde_json::Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(v["type"], "evict");
        assert_eq!(v["device"], "cpu:0");
        assert_eq!(v["reason"], "lru");
        assert!(v["ts_ms"].as_u64().unwrap() > 0);
    }

    #[test]
    fn a_slow_subscriber_lags_instead_of_blocking_the_publisher() {
        let bus = EventBus::new(4);
        let mut rx = bus.subscribe();
        for i in 0..10 {
            bus.emit(|| Event::Undeploy { function: format!("f{i}") });
        }
        assert!(matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Lagged(6))));
    }

    #[test]
    fn nothing_is_built_without_subscribers() {
        let bus = EventBus::new(4);
        bus.emit(|| panic!("built with nobody listening"));
    }
}
