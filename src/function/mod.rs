//! A deployed function as the request path sees it: an immutable snapshot its function actor
//! publishes (`Function`: record, settings, host weights, tokenizer), the counters and SLO
//! window every snapshot of it shares, the registry of them all, the model repository they
//! come from, and the deploy errors.

pub mod error;
pub mod registry;
pub mod repository;
pub mod settings;
pub mod triton;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use error::DeployError;
pub use registry::{Registry, Unavailable};
pub use repository::Repository;

use crate::engine::Model;
use crate::policy::{FunctionId, SloStatus, SloTracker};
use crate::request::{FunctionName, Payload};
use crate::store::{FunctionRecord, FunctionSettings};

/// One published state of a deployed function. A new one replaces it when its settings change;
/// a request holds the one it started with to its end.
pub struct Function {
    pub id: FunctionId,
    pub name: FunctionName,
    record: FunctionRecord,
    pub payload: Payload,
    /// Shared by every snapshot of the function.
    pub counters: Arc<InferenceCounters>,
    slo: Arc<SloWindow>,
}

impl Function {
    pub fn new(id: FunctionId, name: FunctionName, record: FunctionRecord, payload: Payload) -> Self {
        Self { id, name, record, payload, counters: Arc::default(), slo: Arc::default() }
    }

    /// The next snapshot: `record` (new settings), the same model, counters and SLO window.
    pub fn with_record(&self, record: FunctionRecord) -> Self {
        Self {
            id: self.id,
            name: self.name.clone(),
            record,
            payload: self.payload.clone(),
            counters: self.counters.clone(),
            slo: self.slo.clone(),
        }
    }

    /// The model package (none for a function deployed from a profile alone).
    pub fn model(&self) -> Option<&Arc<Model>> {
        self.payload.model()
    }

    /// The dtype and compute its loaded weights have (none for a profile).
    pub fn held(&self) -> settings::Held {
        let model = self.model();
        settings::Held { dtype: model.map(|m| m.spec.layout.matrix_dtype()), compute: model.map(|m| m.spec.compute) }
    }

    pub fn record(&self) -> &FunctionRecord {
        &self.record
    }

    pub fn settings(&self) -> &FunctionSettings {
        &self.record.settings
    }

    /// The SLO window against this snapshot's settings.
    pub fn slo(&self) -> SloStatus {
        self.slo.status(self.settings())
    }

    /// Counts one request's latency in the SLO window (a refused request as infinite). Cheap:
    /// the percentile is computed only when someone asks (`slo`).
    pub fn record_latency(&self, ms: f64) {
        self.slo.tracker.lock().unwrap_or_else(|e| e.into_inner()).record(ms);
    }

    /// Requests finished, when some came since the last call (to publish an `slo` event).
    pub fn requests_since_published(&self) -> Option<u64> {
        let c = &self.counters;
        let requests = c.success.load(Ordering::Relaxed) + c.fail.load(Ordering::Relaxed);
        (self.slo.published.swap(requests, Ordering::Relaxed) != requests).then_some(requests)
    }
}

/// Counters behind `GET /v2/models/{name}/stats`, written by the request path.
#[derive(Debug, Default)]
pub struct InferenceCounters {
    pub success: AtomicU64,
    pub fail: AtomicU64,
    pub success_ns: AtomicU64,
    pub fail_ns: AtomicU64,
    pub queue_ns: AtomicU64,
    pub swap_ns: AtomicU64,
    pub exec_ns: AtomicU64,
    pub last_inference_ms: AtomicU64,
}

/// The latencies the function's SLO is judged on, and how many requests its last `slo` event
/// counted.
#[derive(Default)]
struct SloWindow {
    tracker: Mutex<SloTracker>,
    published: AtomicU64,
}

impl SloWindow {
    fn status(&self, settings: &FunctionSettings) -> SloStatus {
        let tracker = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        tracker.status(settings.slo_ms, settings.slo_percentile)
    }
}
