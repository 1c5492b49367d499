//! `faaswap simulate`: a deterministic discrete-event simulator that runs the scheduler's own
//! `policy::Cluster` over modelled devices in virtual time. Scenarios (`scenario`), workloads
//! generated from a seed or replayed from CSV (`workload`), the event loop with shared links
//! (`engine`), and the report with its table and plot (`report`).

pub mod engine;
pub mod report;
pub mod scenario;
pub mod workload;

pub use engine::{run, SimOptions};
pub use report::{Counts, Report, RunReport};
pub use scenario::Scenario;
pub use workload::Arrival;

/// Errors of scenario and trace loading.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("scenario {0}")]
    Scenario(String),
    #[error("trace {0}")]
    Trace(String),
    #[error("plot: {0}")]
    Plot(String),
}
