//! Every actor message, grouped by the actor that receives it, and the scheduler's two
//! per-request events, which are applied through its handle on the thread where they happen.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use actix::Message;

use crate::function::{DeployError, Function};
use crate::gpu::Job;
use crate::policy::{DeviceId, FunctionId, FunctionSpec};
use crate::request::{Reply, Work};
use crate::store::{FunctionRecord, FunctionSettings};

// ---- Scheduler: the per-request events, applied under its lock (`actors::scheduler`) ----

/// A request to queue and place, applied on the HTTP worker that decoded it.
pub struct Submit {
    pub function: FunctionId,
    pub name: String,
    pub work: Work,
    pub received: Instant,
    /// Must finish within this many ms of `received` (the function's SLO deadline when `None`).
    pub deadline_ms: Option<f64>,
    pub reply: Reply,
}

/// A device finished its job (applied on the device's thread); with a `fault`, the model's
/// copy there is not complete.
pub struct JobDone {
    pub device: DeviceId,
    pub function: FunctionId,
    /// Arrival-to-completion latency of each request of the batch — to the first token for a
    /// generation — (none for a request refused for its input or left for a retry).
    pub latencies_ms: Vec<f64>,
    /// Execution time of the batch's forward passes (generations excluded), ms.
    pub exec_ms: f64,
    /// Forward passes in `exec_ms`.
    pub batch: usize,
    /// The device failed during the batch.
    pub fault: Option<DeviceFault>,
    /// A request of the batch met a bug (a panic) and failed alone: the device is healthy, but
    /// the copy this job made is not trusted, and these requests of the batch, not yet run,
    /// are queued again.
    pub aborted: Option<Vec<ExecItem>>,
}

/// A device failure: what happened, and the requests of the batch that did not complete (the
/// failed one and those not yet run), to be retried once on another device.
pub struct DeviceFault {
    pub kind: &'static str,
    pub error: String,
    pub retry: Vec<ExecItem>,
}

// ---- SchedulerActor (from function actors) ----

/// A newly deployed function (its weight bytes, first execution-time estimate, SLO). Refused
/// when it fits no device.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct RegisterFunction {
    pub id: FunctionId,
    pub spec: FunctionSpec,
}

/// A function's SLO or batch limit changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateSlo {
    pub id: FunctionId,
    pub deadline_ms: f64,
    pub percentile: f64,
    pub max_batch: usize,
}

/// A retired function: its queued requests fail, its residency is dropped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnregisterFunction {
    pub id: FunctionId,
}

// ---- GpuActor ----

/// Run a batch of a function's requests on the device, back to back (the first copies the
/// model in when the order says so).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Execute {
    pub function: FunctionId,
    pub name: String,
    pub items: Vec<ExecItem>,
    pub dispatched: Instant,
}

/// One request of an `Execute` batch.
pub struct ExecItem {
    pub job: Job,
    pub received: Instant,
    pub reply: Reply,
    /// Already retried once after a device failure.
    pub retried: bool,
}

/// Arm a fault on the device (sim devices only).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct InjectFault {
    pub fault: crate::gpu::faults::FaultSpec,
}

// ---- FunctionActor ----

/// Bring a new function up: import its package (copy and digest) or take its profile, load
/// and pin its weights, register it with the scheduler, persist its record, publish it.
#[derive(Message)]
#[rtype(result = "Result<Arc<Function>, DeployError>")]
pub struct Deploy {
    pub source: DeploySource,
}

pub enum DeploySource {
    /// A package folder in the model repository.
    Package(PathBuf),
    /// The record's profile alone.
    Profile,
}

/// Bring a persisted function back after a start: its package copy verified against the
/// recorded digest (re-imported from the repository when it changed and the same package is
/// there), loaded, registered, published.
#[derive(Message)]
#[rtype(result = "Result<Arc<Function>, NotRestored>")]
pub struct Restore;

/// Why a persisted function is not served: `package_changed` or `restore_failed`.
#[derive(Debug)]
pub struct NotRestored {
    pub kind: &'static str,
    pub reason: String,
}

/// New settings: persisted, published in a new snapshot, told to the scheduler.
#[derive(Message)]
#[rtype(result = "Result<FunctionRecord, DeployError>")]
pub struct UpdateSettings {
    pub settings: FunctionSettings,
}

/// Undeploy: the record deleted (the durable fact), the function unpublished and unregistered;
/// the actor stops.
#[derive(Message)]
#[rtype(result = "Result<(), DeployError>")]
pub struct Retire;
