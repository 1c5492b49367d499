//! The inference engine: model packages (Hugging Face layout), the packed swappable weight
//! layout, and the model families (`models/`, found through `registry`), each of which writes
//! its forward pass as a device program (`program`) that every device runs — the CPU through
//! `program::exec`.

pub mod arch;
mod batch;
pub mod chat;
mod config;
mod error;
mod fast_math;
mod files;
pub mod generate;
mod io;
#[cfg(target_arch = "x86_64")]
mod lanes;
mod layout;
mod matmul;
mod model;
pub mod models;
pub mod nn;
pub mod onnx;
mod ops;
mod plan;
mod pooling;
pub mod program;
pub mod registry;
mod sampling;
mod skinny;
mod streamed;
pub mod synth;
mod tokenize;
mod weights;
mod workspace;

pub use arch::{Architecture, Decoder};
pub use batch::TokenBatch;
pub use chat::{ChatError, ChatMessage, ChatTemplate};
pub use config::Activation;
pub use error::{EngineError, Result};
pub use generate::{Decoded, Ended, GenerateOptions};
pub use io::{max_abs_diff, InputSpec, InputTensor, Inputs, IoSpec, OutputKind, OutputSpec, OutputTensor, Produced};
pub use layout::{Dtype, LayerSpan, Span, TensorSlot, WeightLayout};
pub use model::{Model, ModelSpec, ModelSummary};
pub use pooling::{PoolMode, Pooling};
pub use program::storage::Compute;
pub use sampling::{argmax, SamplingParams};
pub use streamed::StreamedWeights;
pub use tokenize::TextEncoder;
pub use weights::{shard_names, INDEX as SHARD_INDEX};
pub use workspace::Workspace;

/// A reference fixture package for unit tests: `../shared/fixtures/NAME`, or under
/// `FAASWAP_FIXTURES` (as the integration tests take it).
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("FAASWAP_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    let p = dir.join(name);
    assert!(p.exists(), "{} is needed by this test (set FAASWAP_FIXTURES)", p.display());
    p
}
