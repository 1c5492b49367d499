//! The engine layer's error type: everything that can go wrong loading a package or running it.

use std::path::PathBuf;

/// Errors of the engine layer. Every variant that concerns a file names it; every variant that
/// concerns a tensor names the tensor as it is spelled in the file.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: file is {size} bytes, more than the limit of {limit} bytes")]
    FileTooLarge { path: PathBuf, size: u64, limit: u64 },
    #[error("{path}: invalid config: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("{path}: unsupported model_type {model_type:?} (supported: {supported})")]
    UnknownModelType { path: PathBuf, model_type: String, supported: String },
    #[error("{path}: corrupt or truncated safetensors file: {reason}")]
    CorruptWeights { path: PathBuf, reason: String },
    #[error("{path}: missing tensor {tensor:?}")]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("{path}: tensor {tensor:?} has shape {found:?}, expected {expected:?}")]
    WrongShape { path: PathBuf, tensor: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("{path}: tensor {tensor:?} has dtype {dtype}, expected F32, F16 or BF16")]
    WrongDtype { path: PathBuf, tensor: String, dtype: String },
    #[error("{path}: tensor {tensor:?} holds a non-finite value at element {index}")]
    NonFiniteWeight { path: PathBuf, tensor: String, index: usize },
    #[error("{path}: invalid ONNX model: {reason}")]
    BadOnnx { path: PathBuf, reason: String },
    #[error("{path}: operator {op} (node {node:?}) is not supported")]
    UnsupportedOperator { path: PathBuf, op: String, node: String },
    #[error("{path}: invalid tokenizer: {reason}")]
    BadTokenizer { path: PathBuf, reason: String },
    /// Said to clients: no server path in it.
    #[error("this model's package has no tokenizer.json, so it takes token ids, not text")]
    NoTokenizer,
    #[error("invalid input: {0}")]
    BadInput(String),
    #[error("output {name:?} is not produced by this model (it produces: {available})")]
    UnknownOutput { name: String, available: String },
    #[error("the request needs {needed} bytes of activation memory, more than the workspace's {available}")]
    WorkspaceTooSmall { needed: u64, available: u64 },
    #[error("weights buffer holds {found} floats, the layout needs {expected}")]
    WeightsSizeMismatch { expected: usize, found: usize },
}

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::BadConfig { path: path.into(), reason: reason.into() }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
