//! Errors of a request between the API and the devices.

/// Why a request did not complete (mapped to a status and code by `api::error`).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// A conversation its function's chat template could not render (or refused).
    #[error(transparent)]
    Chat(#[from] crate::engine::ChatError),
    #[error("function {0:?} has no chat template: use completions with a prompt")]
    NoChatTemplate(String),
    #[error("device {device}: {source}")]
    Device {
        device: String,
        #[source]
        source: crate::gpu::DeviceError,
    },
    #[error("function {0:?} was undeployed before its request ran")]
    FunctionGone(String),
    #[error("function {0:?} has no device (the native policy binds functions at deploy while memory lasts)")]
    NotPlaced(String),
    #[error("the request to {0:?} cannot finish before its deadline on any device")]
    DeadlineUnmeetable(String),
    #[error("too many requests are waiting for {function:?}; retry in about {retry_after_s} s")]
    Overloaded { function: String, retry_after_s: u64 },
    #[error("the runtime is shutting down")]
    Stopped,
    #[error("too many results are waiting for their clients to read them; retry in about {retry_after_s} s")]
    Backlogged { retry_after_s: u64 },
    #[error("the client went away before its request ran")]
    Cancelled,
    /// A bug met while running this request (a panic in the engine, a non-finite output): the
    /// request fails, the device does not.
    #[error("internal error while running the request on {device}; it is logged")]
    Internal { device: String },
}
