//! Decisions as plain code, with no actix types, threads or wall time. `cluster` is the
//! mechanism — page accounting of device weight pools, residency, pins, health, the queue, the
//! host-link model — and `policies` holds the four policies (`native`, `simpleswap`, `torpor`,
//! `faaswap`), one file each, which decide queue order, placement, victims and batching. The
//! server's scheduler holds a `Cluster` and applies its decisions; `faaswap simulate` drives the
//! same `Cluster` in virtual time.

pub mod cluster;
pub mod estimate;
pub mod health;
pub mod pages;
pub(crate) mod policies;
pub mod slo;
pub mod stats;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use cluster::{
    Cluster, ClusterConfig, Decision, DeviceId, DeviceSpec, Dispatch, DropReason, FunctionId, RequestId,
};
pub use pages::{Extent, PagePool};
pub use slo::{SloStatus, SloTracker};

/// Where a swap-in copies from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapSource {
    Host,
    Peer(DeviceId),
}

/// Which scheduling and memory policy the cluster follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// Early binding: each function pinned to one device while memory lasts, no swapping.
    Native,
    /// FIFO queue, a random idle device, LRU eviction, copies from the host only.
    SimpleSwap,
    /// The FaaSwap/Torpor paper's policy: RRC priority groups, interference-aware placement,
    /// class-ordered eviction.
    Torpor,
    /// Ours: a time model (wait + swap over the shared link + profiled execution), deadline
    /// order, batching, replicas, eviction by expected reload cost, optional shedding.
    #[default]
    Faaswap,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 4] = [Self::Native, Self::SimpleSwap, Self::Torpor, Self::Faaswap];

    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::SimpleSwap => "simpleswap",
            Self::Torpor => "torpor",
            Self::Faaswap => "faaswap",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PolicyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown policy {s:?}: expected native, simpleswap, torpor or faaswap"))
    }
}

/// How costly a model is to swap relative to running it — measured, not labelled: the ratio
/// of its host-link transfer time to its execution time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelClass {
    /// The transfer hides under execution (ratio below 0.8).
    Light,
    /// Transfer and execution about even (0.8 to 2).
    Medium,
    /// The transfer dominates (2 or more).
    Heavy,
}

impl ModelClass {
    /// Classifies a model of `bytes` running `exec_ms` per request over a host link of
    /// `host_bytes_per_s`.
    pub fn measure(bytes: u64, exec_ms: f64, host_bytes_per_s: f64) -> Self {
        let ratio = estimate::transfer_ms(bytes, host_bytes_per_s) / exec_ms.max(1e-3);
        if ratio < 0.8 {
            Self::Light
        } else if ratio < 2.0 {
            Self::Medium
        } else {
            Self::Heavy
        }
    }
}

/// A function described by its profile alone (on `sim` devices: no weights in host memory).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Bytes a swap moves (its resident footprint).
    pub weight_bytes: u64,
    /// Execution time of one request, ms.
    pub exec_ms: f64,
    /// Measured from the profile over the host link when left out.
    #[serde(default)]
    pub class: Option<ModelClass>,
}

impl Profile {
    pub fn validate(&self) -> Result<(), String> {
        if self.weight_bytes == 0 || self.weight_bytes > 1 << 40 {
            return Err(format!("weight_bytes {} must be 1 to 2^40", self.weight_bytes));
        }
        if !(self.exec_ms > 0.0 && self.exec_ms <= 60_000.0) {
            return Err(format!("exec_ms {} must be in (0, 60000]", self.exec_ms));
        }
        Ok(())
    }
}

/// What the policies know about one function.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    pub name: String,
    /// Weight bytes moved on a swap (the resident footprint).
    pub bytes: u64,
    /// Execution time of one request (batch of 1), milliseconds; updated from observation.
    pub exec_ms: f64,
    pub class: ModelClass,
    pub deadline_ms: f64,
    pub percentile: f64,
    pub max_batch: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_classes_match_the_papers_labels() {
        // The paper-node models over a 12 GB/s host link: (MB, ms, the paper's class).
        let models = [
            (57, 25.0, ModelClass::Light),
            (81, 28.0, ModelClass::Light),
            (109, 14.0, ModelClass::Light),
            (21, 12.0, ModelClass::Light),
            (103, 9.0, ModelClass::Medium),
            (179, 14.0, ModelClass::Medium),
            (242, 17.0, ModelClass::Medium),
            (1340, 43.0, ModelClass::Heavy),
        ];
        for (mb, ms, class) in models {
            assert_eq!(ModelClass::measure(mb * 1_000_000, ms, 12e9), class, "{mb} MB, {ms} ms");
        }
    }

    #[test]
    fn policy_names_round_trip() {
        for p in PolicyKind::ALL {
            assert_eq!(p.name().parse::<PolicyKind>(), Ok(p));
        }
        assert!("lru".parse::<PolicyKind>().is_err());
    }
}
