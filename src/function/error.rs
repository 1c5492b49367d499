//! Why a deploy, an undeploy, a settings change or a restore did not happen.

use crate::engine::EngineError;
use crate::request::{NameError, RuntimeError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("no model repository is configured (start with --model-repository DIR)")]
    NoRepository,
    #[error("model {0:?} is not in the model repository")]
    ModelNotFound(String),
    #[error("{0:?} leads outside the model repository (symlinks out are refused)")]
    OutsideRepository(String),
    #[error("package {model:?} holds {bytes} bytes, more than the limit of {limit} (--max-package)")]
    PackageTooLarge { model: String, bytes: u64, limit: u64 },
    #[error("function {0:?} is already deployed")]
    AlreadyExists(String),
    #[error("function {name:?} is persisted but not served ({reason}); delete it (DELETE /api/v1/functions/{name}) before reusing its name")]
    Unavailable { name: String, reason: String },
    #[error("function {0:?} is not deployed")]
    NotDeployed(String),
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
    #[error("invalid profile: {0}")]
    InvalidProfile(String),
    #[error("a function deployed from a profile alone needs sim devices (it has no weights to compute with)")]
    ProfileNeedsSim,
    #[error("bad model package: {0}")]
    BadPackage(#[source] EngineError),
    #[error("function {name:?} cannot be served: {reason}")]
    DoesNotFit { name: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("deploy task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}
