//! Every actor message, grouped by the actor that receives it.

use std::sync::Arc;
use std::time::Instant;

use actix::Message;
use serde::Serialize;
use tokio::sync::oneshot;

use super::RuntimeError;
use crate::engine::{Model, OutputKind, OutputTensor, TokenBatch};
use crate::gpu::{Generated, Generation, Job};
use crate::policy::{DeviceId, Extent, FunctionId, FunctionSpec, SwapSource};

/// Where a finished request's result goes.
pub type Reply = oneshot::Sender<Result<Completed, RuntimeError>>;

/// A request's result and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct Completed {
    pub outputs: Vec<OutputTensor>,
    pub device: String,
    pub simulated: bool,
    /// Where the model was copied from for this request: `host`, `peer:<device index>`, or
    /// `None` when it was already resident.
    pub swap_source: Option<String>,
    pub swapped_bytes: u64,
    pub queue_ms: f64,
    pub swap_ms: f64,
    pub exec_ms: f64,
    pub total_ms: f64,
    /// What a generation produced (token ids, time to first token, why it ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated: Option<Generated>,
}

/// A request the scheduler has accepted: what to run, once placed.
pub struct Work {
    /// `None` for a function deployed from a profile alone.
    pub model: Option<Arc<Model>>,
    pub bytes: u64,
    pub exec_ms: Option<f64>,
    pub batch: TokenBatch,
    pub outputs: Vec<OutputKind>,
    pub generation: Option<Generation>,
}

impl Work {
    /// Bytes of the results it will produce (the output tensors as `f32`).
    pub fn result_bytes(&self) -> u64 {
        self.model.as_ref().map_or(0, |m| m.spec.output_elems(&self.batch, &self.outputs) as u64 * 4)
    }

    /// The device's order for this work, placed at `extent` (copied in first when `swap`, from
    /// `source_extent` of the source device for a peer copy).
    pub fn into_job(self, extent: Extent, swap: Option<SwapSource>, source_extent: Option<Extent>) -> Job {
        let Self { model, bytes, exec_ms, batch, outputs, generation } = self;
        Job { model, bytes, exec_ms, extent, swap, source_extent, batch, outputs, generation }
    }
}

impl From<Job> for Work {
    /// The work of an order that did not complete (to be placed again).
    fn from(job: Job) -> Self {
        let Job { model, bytes, exec_ms, batch, outputs, generation, .. } = job;
        Self { model, bytes, exec_ms, batch, outputs, generation }
    }
}

// ---- SchedulerActor ----

/// The GPU actors, one per device in device order (started after the scheduler, since they
/// need its address).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachGpus {
    pub gpus: Vec<actix::Addr<super::gpu::GpuActor>>,
}

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

/// An undeployed function: its queued requests fail, its residency is dropped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnregisterFunction {
    pub id: FunctionId,
}

/// A device has just failed: schedule its health checks (the actor's timers).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeviceFailed {
    pub device: DeviceId,
}

/// A request to queue and place: not sent but applied on the caller's thread (the HTTP
/// worker's) through `Scheduler::submit`.
pub struct Submit {
    pub function: FunctionId,
    pub name: String,
    pub work: Work,
    pub received: Instant,
    /// Must finish within this many ms of `received` (the function's SLO deadline when `None`).
    pub deadline_ms: Option<f64>,
    pub reply: Reply,
}

/// A device finished its job; with a `fault`, the model's copy there is not complete. Not sent
/// but applied on the device's thread through `Scheduler::job_done`.
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

/// The outcome of a device's health check (`attempt` counts the checks since the failure).
#[derive(Message)]
#[rtype(result = "()")]
pub struct HealthResult {
    pub device: DeviceId,
    pub ok: bool,
    pub attempt: u32,
}

/// Residency and memory map of every device.
#[derive(Message)]
#[rtype(result = "Vec<crate::policy::cluster::DeviceSnapshot>")]
pub struct GetDevices;

/// Requests waiting for a device, for one function.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct GetQueued {
    pub function: FunctionId,
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

/// Check whether the device works again after a failure.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HealthCheck {
    pub attempt: u32,
}

/// Arm a fault on the device (sim devices only).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct InjectFault {
    pub fault: crate::gpu::faults::FaultSpec,
}

// ---- Request inputs (prepared on the HTTP worker, `function.rs`) ----

/// The inputs of one inference request, as the API decoded them.
pub enum Inputs {
    Texts(Vec<String>),
    Tokens(TokenBatch),
}
