//! A request from the API to a device and back: its inputs, the work the scheduler places (and
//! the validation that makes it), a generation's stream and its text as clients see it, the
//! result and what it cost, the errors. Nothing here knows of actors or HTTP.

pub mod error;
pub mod generation;
pub mod name;
pub mod prepare;
pub mod text;

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::oneshot;

pub use crate::engine::Inputs;
use crate::engine::{Model, OutputKind, OutputTensor, TokenBatch};
pub use error::RuntimeError;
pub use generation::{FinishReason, Generated, Generation, TokenEvent};
pub use name::{FunctionName, ModelName, NameError};
pub use prepare::Payload;

/// Where a finished request's result goes.
pub type Reply = oneshot::Sender<Result<Completed, RuntimeError>>;

/// A validated request: what to run, once placed.
pub struct Work {
    /// `None` for a function deployed from a profile alone.
    pub model: Option<Arc<Model>>,
    /// Weight bytes a swap moves.
    pub bytes: u64,
    /// Profiled execution time of one request, ms (`None`: estimated from the model).
    pub exec_ms: Option<f64>,
    pub batch: TokenBatch,
    pub outputs: Vec<OutputKind>,
    /// A generation instead of a forward pass (`batch` then holds its prompt).
    pub generation: Option<Generation>,
}

impl Work {
    /// Bytes of the results it will produce (the output tensors as `f32`).
    pub fn result_bytes(&self) -> u64 {
        self.model.as_ref().map_or(0, |m| m.spec.output_elems(&self.batch, &self.outputs) as u64 * 4)
    }
}

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
