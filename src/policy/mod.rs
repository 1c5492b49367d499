//! Decisions as plain code, with no actix types: page accounting of device weight pools,
//! residency, placement, queue order and eviction. The scheduler actor holds a `Cluster` and
//! only moves messages; the simulator (later) reuses the same code.

pub mod cluster;
pub mod pages;
pub mod slo;

pub use cluster::{Cluster, DeviceId, Dispatch, FunctionId, Links, RequestId, SwapSource};
pub use pages::{Extent, PagePool};
pub use slo::{SloStatus, SloTracker};
