//! The inference engine: model packages (Hugging Face layout), the packed swappable weight
//! layout, and CPU execution of the BERT and GPT-2 families.

mod batch;
mod bert;
mod config;
mod error;
mod fast_math;
mod files;
mod gpt2;
mod layout;
mod matmul;
mod model;
mod ops;
mod output;
mod pooling;
pub mod program;
mod sampling;
mod streamed;
pub mod synth;
mod tokenize;
mod weights;
mod workspace;

pub use batch::TokenBatch;
pub use config::{Activation, BertConfig, Gpt2Config, ModelConfig};
pub use error::{EngineError, Result};
pub use layout::{LayerSpan, Span, TensorSlot, WeightLayout};
pub use model::{GenerateOptions, Model, ModelSpec, ModelSummary};
pub use output::{max_abs_diff, OutputKind, OutputTensor};
pub use pooling::{PoolMode, Pooling};
pub use sampling::{argmax, SamplingParams};
pub use streamed::{StreamedWeights, Weights};
pub use tokenize::TextEncoder;
pub use workspace::{Arena, Workspace};

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
