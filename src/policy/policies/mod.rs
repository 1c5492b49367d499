//! The four policies, one file each. Each owns what it decides — queue order, placement (device
//! and swap source), victims, batch size — and its own state; `Policy` only delegates. They
//! read the cluster's `State` and never change its accounting: `Cluster` applies their answers.
//!
//! - `native`: early binding, each function bound to one device at deploy while memory lasts.
//! - `simpleswap`: FIFO, a random idle device, LRU eviction, copies from the host.
//! - `torpor`: the FaaSwap/Torpor paper's policy.
//! - `faaswap`: ours — the time model, deadline order, batching, reload-cost eviction, shedding.

mod faaswap;
#[cfg(test)]
pub(in crate::policy) use faaswap::LOST_HORIZON;
mod native;
mod simpleswap;
mod torpor;

use super::cluster::{DeviceId, EvictReason, FunctionId, State};
use super::{FunctionSpec, PolicyKind, SwapSource};

/// A device's eviction candidates with their per-page values, cheapest first (`faaswap`
/// computes it while placing, and the eviction plan reuses it).
pub(in crate::policy) type Ranking = Vec<(FunctionId, f64)>;

pub(in crate::policy) enum Choice {
    /// Start now on `device` (copying first when `swap` says so); `ranking` is the device's
    /// eviction candidates, cheapest first, when the decision already computed them.
    Run { device: DeviceId, swap: Option<SwapSource>, ranking: Option<Ranking> },
    /// Not now: the right device is busy, or none has room.
    Wait,
    /// It cannot meet its deadline anywhere (faaswap with shedding on).
    Shed,
}

#[derive(Debug)]
pub(in crate::policy) enum Policy {
    Native(native::Native),
    SimpleSwap(simpleswap::SimpleSwap),
    Torpor(torpor::Torpor),
    Faaswap(faaswap::Faaswap),
}

impl Policy {
    pub fn new(kind: PolicyKind, seed: u64) -> Self {
        match kind {
            PolicyKind::Native => Self::Native(native::Native),
            PolicyKind::SimpleSwap => Self::SimpleSwap(simpleswap::SimpleSwap::new(seed)),
            PolicyKind::Torpor => Self::Torpor(torpor::Torpor::default()),
            PolicyKind::Faaswap => Self::Faaswap(faaswap::Faaswap),
        }
    }

    /// A new function of `bytes`: the device its copy is bound to, if the policy binds (the
    /// copy is then placed there now).
    pub fn bind(&self, s: &mut State, id: FunctionId, bytes: u64) -> Option<DeviceId> {
        match self {
            Self::Native(p) => p.bind(s, id, bytes),
            _ => None,
        }
    }

    /// Whether a function bound to no device is refused (`NotPlaced`).
    pub fn refuses_unbound(&self) -> bool {
        matches!(self, Self::Native(_))
    }

    pub fn forget(&mut self, id: FunctionId) {
        if let Self::Torpor(p) = self {
            p.forget(id);
        }
    }

    /// Called before every decision.
    pub fn tick(&mut self, s: &State, now: f64) {
        if let Self::Torpor(p) = self {
            p.update_groups(s, now);
        }
    }

    /// Queue indices in the order requests are considered.
    pub fn order(&self, s: &State) -> Vec<usize> {
        match self {
            // The queue is kept in arrival order.
            Self::Native(_) | Self::SimpleSwap(_) => (0..s.queue.len()).collect(),
            Self::Torpor(p) => p.order(s),
            Self::Faaswap(p) => p.order(s),
        }
    }

    /// Whether the function's requests wait this round whatever the devices (torpor runs one
    /// job of a function at a time).
    pub fn holds_back(&self, s: &State, f: FunctionId) -> bool {
        matches!(self, Self::Torpor(_)) && s.functions[&f].in_flight > 0
    }

    /// Where the request runs; `deadline` is its (absolute) deadline, `window` the time it was
    /// given.
    pub fn choose(&mut self, s: &State, f: FunctionId, now: f64, deadline: f64, window: f64) -> Choice {
        match self {
            Self::Native(p) => p.choose(s, f),
            Self::SimpleSwap(p) => p.choose(s, f),
            Self::Torpor(p) => p.choose(s, f, now),
            Self::Faaswap(p) => p.choose(s, f, now, deadline, window),
        }
    }

    /// A request of `f` is about to run.
    pub fn dispatching(&self, s: &mut State, f: FunctionId, now: f64) {
        if let Self::Faaswap(p) = self {
            p.dispatching(s, f, now);
        }
    }

    /// Most requests of one function run as one batch.
    pub fn max_batch(&self, spec: &FunctionSpec) -> usize {
        match self {
            Self::Faaswap(_) => spec.max_batch.max(1),
            _ => 1,
        }
    }

    /// The models that may make room on `device` for `f`, in the order they go.
    pub fn victims(
        &self,
        s: &State,
        device: DeviceId,
        f: FunctionId,
        now: f64,
        ranking: Option<Ranking>,
    ) -> Vec<(FunctionId, EvictReason)> {
        match self {
            Self::Native(_) => Vec::new(),
            Self::SimpleSwap(_) => simpleswap::victims(s, device, f),
            Self::Torpor(_) => torpor::victims(s, device, f),
            Self::Faaswap(_) => faaswap::victims(s, device, f, now, ranking),
        }
    }

    /// Torpor's threshold and high-priority group size (zeros for the others).
    pub fn torpor_groups(&self) -> (f64, usize) {
        match self {
            Self::Torpor(p) => p.groups(),
            _ => (0.0, 0),
        }
    }
}

/// Evictable models of device `i` other than `f`, with when they were last used.
fn candidates(s: &State, i: DeviceId, f: FunctionId) -> impl Iterator<Item = (FunctionId, f64)> + '_ {
    s.devices[i].resident.iter().filter(move |&(&v, r)| v != f && s.evictable(i, v, r)).map(|(&v, r)| (v, r.last_used))
}

/// Victims sorted by (group, value, function id): deterministic.
fn sorted(mut order: Vec<(FunctionId, EvictReason, (u8, f64))>) -> Vec<(FunctionId, EvictReason)> {
    order.sort_by(|a, b| a.2 .0.cmp(&b.2 .0).then(a.2 .1.total_cmp(&b.2 .1)).then(a.0.cmp(&b.0)));
    order.into_iter().map(|(v, reason, _)| (v, reason)).collect()
}

/// Runs on `device`, copying from `source` first unless a complete copy is there.
fn run_on(s: &State, device: DeviceId, f: FunctionId, source: SwapSource) -> Choice {
    let swap = (!s.ready_on(device, f)).then_some(source);
    Choice::Run { device, swap, ranking: None }
}
