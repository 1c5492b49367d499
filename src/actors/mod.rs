//! Actors of the runtime. Each is a thin shell: the scheduler holds a `policy::Cluster` and
//! moves messages; a GPU actor owns one device on its own thread and runs its jobs; a function
//! actor owns a deployed function's model and turns requests into jobs. Every message is in
//! `messages`, grouped by the actor that receives it.

pub mod function;
pub mod gpu;
pub mod messages;
pub mod scheduler;

/// Errors of the runtime layer (between the API and the devices).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
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
