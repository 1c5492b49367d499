//! The mechanism every policy runs on, and its one consistency boundary: which models are
//! resident where (extents of each device's `PagePool`, readiness, pins of peer-copy sources,
//! copies bound to a device), which devices run what until when (predicted), health, and the
//! queue. `Cluster` holds that `State` and the configured `Policy`; `next_dispatch` asks the
//! policy for queue order, placement, victims and batch size, and applies its answers here, so
//! that every page and pin is accounted in one place (`check_accounting`). Time is milliseconds
//! on the caller's clock (wall time in the server, virtual time in the simulator).
//!
//! The queue and admission are in `queue`, the host-link time model in `link`, the devices API's
//! memory maps in `snapshot`; what each policy decides is in `super::policies`.

mod link;
mod queue;
mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::estimate::{self, FIRST_CHUNK_BYTES};
use super::pages::{Extent, PagePool};
use super::policies::{Choice, Policy};
use super::stats::RequestWindow;
use super::{FunctionSpec, PolicyKind, SwapSource};

pub use queue::Admission;
pub use snapshot::{DeviceSnapshot, ResidentSnapshot};

pub type FunctionId = u64;
pub type DeviceId = usize;
pub type RequestId = u64;

/// Requests of the queue (in policy order) considered per decision: bounds a decision's cost
/// under a long queue.
const SCAN_LIMIT: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub policy: PolicyKind,
    /// Seeds the `simpleswap` policy's random device choice.
    pub seed: u64,
    /// `faaswap` only: drop a request that cannot meet its deadline on any device.
    pub shed: bool,
    /// Most requests waiting per function, and in all; beyond, `enqueue` refuses (`Overloaded`).
    pub max_queue_per_function: usize,
    pub max_queue: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            policy: PolicyKind::Faaswap,
            seed: 0,
            shed: false,
            max_queue_per_function: usize::MAX,
            max_queue: usize::MAX,
        }
    }
}

/// One device as the policies see it.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub pool: PagePool,
    /// Host→device bytes per second (`None`: unlimited, a host memory copy).
    pub host_link: Option<f64>,
    /// Copy rate from each other device, by index (`None`: no peer access).
    pub peers: Vec<Option<f64>>,
    /// Devices with the same group share one host link (a PCIe switch).
    pub host_group: usize,
}

/// Why a resident model was dropped (the `reason` label of `faaswap_evictions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvictReason {
    /// Least recently used.
    Lru,
    /// An extra replica: another device still holds the model.
    Replica,
    /// Torpor: a lighter class goes first.
    Class,
    /// Faaswap: the lowest expected reload cost per byte freed.
    ReloadCost,
    /// The function was undeployed.
    Undeploy,
    /// The device failed: its copies are not to be trusted.
    DeviceFault,
    /// The job that made the copy failed on a bug (the device is fine; the copy may be
    /// incomplete).
    FailedJob,
}

impl EvictReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::Lru => "lru",
            Self::Replica => "replica",
            Self::Class => "class",
            Self::ReloadCost => "reload_cost",
            Self::Undeploy => "undeploy",
            Self::DeviceFault => "device_fault",
            Self::FailedJob => "failed_job",
        }
    }
}

/// An order for one device: run `requests` (one batch) of `function` from `extent`, copying the
/// model in first when `swap` says so; `evicted` lists what was dropped to make room.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    pub requests: Vec<RequestId>,
    pub function: FunctionId,
    pub device: DeviceId,
    pub extent: Extent,
    pub swap: Option<SwapSource>,
    pub evicted: Vec<(FunctionId, EvictReason)>,
    /// The time model's prediction of the job's duration, ms.
    pub predicted_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// `native`: the function got no device at deploy time.
    NotPlaced,
    /// Shedding: no device can finish it before its deadline.
    Unmeetable,
    /// The function's queue, or the whole queue, is full.
    Overloaded,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Run(Dispatch),
    Drop { requests: Vec<RequestId>, function: FunctionId, reason: DropReason },
}

#[derive(Debug, Clone)]
pub(in crate::policy) struct Func {
    pub spec: FunctionSpec,
    pub stats: RequestWindow,
    pub in_flight: usize,
    /// A device whose copy of it is bound there (`native` binds each function at deploy): never
    /// evicted, never dropped when a job ends.
    pub bound: Option<DeviceId>,
    /// Bit `i`: device `i` holds a complete copy (kept with `Resident::ready`, so asking
    /// "is it ready elsewhere?" costs one lookup, not one per device).
    pub ready_mask: u64,
    /// Its requests in the queue.
    pub queued: usize,
    /// Since when every request of it has been refused (shed), if its last one was.
    pub refused_since: Option<f64>,
}

#[derive(Debug, Clone)]
pub(in crate::policy) struct Resident {
    pub extent: Extent,
    pub last_used: f64,
    /// When the copy was made.
    pub loaded_at: f64,
    /// Copies to other devices reading from this one: never evicted while non-zero.
    pub pins: usize,
    /// The copy is complete (only a complete copy runs without a swap or serves as a source).
    pub ready: bool,
}

#[derive(Debug, Clone)]
pub(in crate::policy) struct Running {
    pub function: FunctionId,
    /// The device a peer copy reads from (its copy is pinned until this job ends).
    pub source: Option<DeviceId>,
    pub ends_at: f64,
    /// When the job's host-link copy is predicted to end (`None`: no host copy).
    pub host_copy_until: Option<f64>,
    /// The earliest deadline among the batch's requests (absolute, ms): a later copy on the
    /// same link should not push the job past it.
    pub deadline: f64,
}

#[derive(Debug, Clone)]
pub(in crate::policy) struct Dev {
    pub pool: PagePool,
    pub host_bw: f64,
    pub peers: Vec<Option<f64>>,
    pub group: usize,
    pub resident: BTreeMap<FunctionId, Resident>,
    pub job: Option<Running>,
    /// Exponentially decayed sum of the job time dispatched here, and when it was updated.
    pub load: f64,
    pub load_at: f64,
    /// An unhealthy device gets no work until a health check passes.
    pub healthy: bool,
}

/// Time constant of a device's recent load, ms.
const LOAD_TAU_MS: f64 = 10_000.0;

impl Dev {
    /// Can take a job now.
    pub fn idle(&self) -> bool {
        self.job.is_none() && self.healthy
    }

    /// Fraction of recent time this device has been given work.
    pub fn recent_load(&self, now: f64) -> f64 {
        self.load * (-(now - self.load_at).max(0.0) / LOAD_TAU_MS).exp() / LOAD_TAU_MS
    }
}

/// A request waiting in the queue.
#[derive(Debug, Clone)]
pub(in crate::policy) struct Queued {
    pub request: RequestId,
    pub function: FunctionId,
    pub deadline: f64,
    /// The time it was given (deadline − arrival), ms.
    pub window: f64,
}

/// What the policies read and the mechanism keeps consistent.
#[derive(Debug)]
pub(in crate::policy) struct State {
    pub cfg: ClusterConfig,
    pub devices: Vec<Dev>,
    /// Looked up for every resident model of every candidate device: a fast hash map (its
    /// order is never relied on).
    pub functions: FxHashMap<FunctionId, Func>,
    pub queue: Vec<Queued>,
}

#[derive(Debug)]
pub struct Cluster {
    pub(in crate::policy) s: State,
    policy: Policy,
}

impl Cluster {
    pub fn new(cfg: ClusterConfig, devices: Vec<DeviceSpec>) -> Self {
        let policy = Policy::new(cfg.policy, cfg.seed);
        let devices = devices
            .into_iter()
            .map(|d| Dev {
                pool: d.pool,
                host_bw: d.host_link.unwrap_or(estimate::UNLIMITED_LINK),
                peers: d.peers,
                group: d.host_group,
                resident: BTreeMap::new(),
                job: None,
                load: 0.0,
                load_at: 0.0,
                healthy: true,
            })
            .collect();
        Self { s: State { cfg, devices, functions: FxHashMap::default(), queue: Vec::new() }, policy }
    }

    /// Registers a function. Refused when no device could ever hold its weights. The policy may
    /// bind it to a device (`native`: the one with the most free memory, or none when none has
    /// room left; its requests are then rejected).
    pub fn add_function(&mut self, id: FunctionId, spec: FunctionSpec) -> Result<(), String> {
        let bytes = spec.bytes;
        if !self.s.devices.iter().any(|d| d.pool.can_ever_hold(bytes)) {
            let largest = self.s.devices.iter().map(|d| d.pool.capacity_bytes()).max().unwrap_or(0);
            return Err(format!(
                "the model's weights ({bytes} bytes) do not fit the largest device weight pool ({largest} bytes)"
            ));
        }
        let bound = self.policy.bind(&mut self.s, id, bytes);
        self.s.functions.insert(
            id,
            Func {
                spec,
                stats: RequestWindow::default(),
                in_flight: 0,
                bound,
                ready_mask: 0,
                queued: 0,
                refused_since: None,
            },
        );
        Ok(())
    }

    /// Changes a function's SLO and batch limit.
    pub fn set_slo(&mut self, id: FunctionId, deadline_ms: f64, percentile: f64, max_batch: usize) {
        if let Some(f) = self.s.functions.get_mut(&id) {
            f.spec.deadline_ms = deadline_ms;
            f.spec.percentile = percentile;
            f.spec.max_batch = max_batch.max(1);
        }
    }

    /// Forgets a function: drops its queued requests (returned, to be answered) and frees its
    /// residency on devices not running it and not copying from it (their count is returned);
    /// the others free it when their job completes.
    pub fn remove_function(&mut self, id: FunctionId) -> (Vec<RequestId>, Vec<DeviceId>) {
        self.s.functions.remove(&id);
        self.policy.forget(id);
        let mut dropped = Vec::new();
        self.s.queue.retain(|q| {
            if q.function == id {
                dropped.push(q.request);
            }
            q.function != id
        });
        let mut evicted = Vec::new();
        for i in 0..self.s.devices.len() {
            let d = &self.s.devices[i];
            let running = d.job.as_ref().is_some_and(|j| j.function == id);
            let pinned = d.resident.get(&id).is_some_and(|r| r.pins > 0);
            if !running && !pinned && self.s.drop_copy(i, id) {
                evicted.push(i);
            }
        }
        (dropped, evicted)
    }

    /// One finished request's latency (infinite for a request dropped on the server's side),
    /// for compliance, RRC and the eviction values.
    pub fn record(&mut self, function: FunctionId, latency_ms: f64) {
        if let Some(f) = self.s.functions.get_mut(&function) {
            let deadline = f.spec.deadline_ms;
            f.stats.record(latency_ms, deadline);
        }
    }

    /// A measured execution of a batch of `batch`: refines the function's profile (moving
    /// average of the single-request time).
    pub fn observe_exec(&mut self, function: FunctionId, batch: usize, exec_ms: f64) {
        if let Some(f) = self.s.functions.get_mut(&function) {
            let single = exec_ms / estimate::batched_exec_ms(1.0, batch);
            f.spec.exec_ms = 0.8 * f.spec.exec_ms + 0.2 * single;
        }
    }

    /// The next decision — a request (or batch) to run, or requests to drop — or `None` when
    /// nothing can start now. Call until `None`.
    pub fn next_dispatch(&mut self, now: f64) -> Option<Decision> {
        self.policy.tick(&self.s, now);
        if !self.s.devices.iter().any(Dev::idle) || self.s.queue.is_empty() {
            return None;
        }
        // Strictly in the policy's order. (faaswap once let requests whose model was resident
        // on an idle device jump the queue; that starved the swaps behind them past their
        // deadlines — BENCHMARKS.md, "Scheduling".)
        let order: Vec<usize> = self.policy.order(&self.s).into_iter().take(SCAN_LIMIT).collect();
        for &qi in &order {
            let q = &self.s.queue[qi];
            let (function, deadline, window) = (q.function, q.deadline, q.window);
            if self.policy.holds_back(&self.s, function) {
                continue;
            }
            match self.policy.choose(&self.s, function, now, deadline, window) {
                Choice::Run { device, swap, ranking } => {
                    if let Some(d) = self.commit(qi, &order, device, swap, ranking, now) {
                        return Some(Decision::Run(d));
                    }
                }
                Choice::Wait => {}
                Choice::Shed => return Some(self.s.shed(qi, now)),
            }
        }
        None
    }

    /// Torpor's current threshold and high-priority group size (for tests and reports).
    pub fn torpor_groups(&self) -> (f64, usize) {
        self.policy.torpor_groups()
    }

    /// Starts the request at queue index `qi` (with same-function requests batched when the
    /// policy batches, taken in the decision's queue `order`) on `device`; `None` when room
    /// cannot be made after all.
    fn commit(
        &mut self,
        qi: usize,
        order: &[usize],
        device: DeviceId,
        swap: Option<SwapSource>,
        ranking: Option<super::policies::Ranking>,
        now: f64,
    ) -> Option<Dispatch> {
        let function = self.s.queue[qi].function;
        self.policy.dispatching(&mut self.s, function, now);
        if let Some(f) = self.s.functions.get_mut(&function) {
            f.refused_since = None;
        }
        let (bytes, exec1) = {
            let s = &self.s.functions[&function].spec;
            (s.bytes, s.exec_ms)
        };
        let max_batch = self.policy.max_batch(&self.s.functions[&function].spec);
        let mut evicted = Vec::new();
        let extent = match (swap, self.s.devices[device].resident.get(&function).map(|r| r.extent)) {
            (_, Some(extent)) => extent,
            (None, None) => return None,
            (Some(_), None) => {
                let pages = self.s.devices[device].pool.pages_for(bytes);
                let order = self.policy.victims(&self.s, device, function, now, ranking);
                for (v, reason) in self.s.make_room(device, pages, order)? {
                    assert!(self.s.drop_copy(device, v), "a victim is resident");
                    evicted.push((v, reason));
                }
                let d = &mut self.s.devices[device];
                let extent = d.pool.alloc(pages).expect("the eviction plan made room");
                d.resident.insert(function, Resident { extent, last_used: now, loaded_at: now, pins: 0, ready: false });
                extent
            }
        };
        let s = &mut self.s;
        if let Some(SwapSource::Peer(j)) = swap {
            let r = s.devices[j].resident.get_mut(&function).expect("a peer source holds the model");
            r.pins += 1;
            r.last_used = now;
        }
        s.devices[device].resident.get_mut(&function).expect("resident now").last_used = now;
        // The batch: this request and more of the same function, in queue order.
        let mut batch = vec![qi];
        for &i in order {
            if batch.len() >= max_batch {
                break;
            }
            if i != qi && s.queue[i].function == function {
                batch.push(i);
            }
        }
        let exec = estimate::batched_exec_ms(exec1, batch.len());
        let deadline = batch.iter().map(|&i| s.queue[i].deadline).fold(f64::INFINITY, f64::min);
        let (swap_ms, link) = match swap {
            None => (None, s.devices[device].host_bw),
            Some(SwapSource::Host) => (Some(s.start_host_copy(device, now, bytes)), s.devices[device].host_bw),
            Some(SwapSource::Peer(j)) => {
                let bw = s.devices[device].peers.get(j).copied().flatten().unwrap_or(s.devices[device].host_bw);
                (Some(estimate::transfer_ms(bytes, bw)), bw)
            }
        };
        let chunk = estimate::transfer_ms(FIRST_CHUNK_BYTES.min(bytes), link);
        let predicted_ms = estimate::job_ms(swap_ms, chunk, exec);
        s.devices[device].job = Some(Running {
            function,
            source: match swap {
                Some(SwapSource::Peer(j)) => Some(j),
                _ => None,
            },
            ends_at: now + predicted_ms,
            host_copy_until: match swap {
                Some(SwapSource::Host) => swap_ms.map(|t| now + t),
                _ => None,
            },
            deadline,
        });
        let dev = &mut s.devices[device];
        dev.load = dev.recent_load(now) * LOAD_TAU_MS + predicted_ms;
        dev.load_at = now;
        let func = s.functions.get_mut(&function).expect("queued functions are registered");
        func.in_flight += 1;
        func.queued -= batch.len();
        batch.sort_unstable_by(|a, b| b.cmp(a));
        let mut requests: Vec<RequestId> = batch.into_iter().map(|i| s.queue.remove(i).request).collect();
        requests.reverse();
        Some(Dispatch { requests, function, device, extent, swap, evicted, predicted_ms })
    }

    /// The device finished its job (successfully or not: `keep` says whether the model's copy
    /// there is complete and may be reused).
    pub fn complete(&mut self, device: DeviceId) {
        let _ = self.s.finish(device, true);
    }

    /// As `complete`, but the copy on the device is not to be trusted (the job failed).
    /// Returns whether that copy was dropped (it stays while another device reads from it).
    pub fn fail(&mut self, device: DeviceId) -> bool {
        self.s.finish(device, false)
    }

    /// Marks a device unhealthy (it gets no work, and every copy on it that nothing is reading
    /// is dropped: a failed device's memory is not to be trusted) or healthy again. Returns the
    /// functions whose copies were dropped.
    pub fn set_health(&mut self, device: DeviceId, healthy: bool) -> Vec<FunctionId> {
        let d = &mut self.s.devices[device];
        d.healthy = healthy;
        if healthy {
            return Vec::new();
        }
        let running = d.job.as_ref().map(|j| j.function);
        let dropped: Vec<FunctionId> =
            d.resident.iter().filter(|(f, r)| r.pins == 0 && Some(**f) != running).map(|(f, _)| *f).collect();
        for &f in &dropped {
            self.s.drop_copy(device, f);
        }
        dropped
    }

    pub fn healthy(&self, device: DeviceId) -> bool {
        self.s.devices[device].healthy
    }

    /// A deployed function's name.
    pub fn function_name(&self, function: FunctionId) -> Option<&str> {
        self.s.functions.get(&function).map(|f| f.spec.name.as_str())
    }

    pub fn device_count(&self) -> usize {
        self.s.devices.len()
    }

    /// Where `function`'s copy sits in `device`'s pool, if it is resident there.
    pub fn extent_of(&self, device: DeviceId, function: FunctionId) -> Option<Extent> {
        self.s.devices.get(device)?.resident.get(&function).map(|r| r.extent)
    }

    /// Devices where the function is resident.
    pub fn residency(&self, function: FunctionId) -> Vec<DeviceId> {
        (0..self.s.devices.len()).filter(|&i| self.s.devices[i].resident.contains_key(&function)).collect()
    }

    /// Checks the bookkeeping: every device's used pages are exactly its resident models'
    /// extents, each ready bit matches a complete copy, and queue counters match the queue.
    /// `Err` names the first mismatch (tests and the simulator's end-of-run check call it).
    pub fn check_accounting(&self) -> Result<(), String> {
        for (i, d) in self.s.devices.iter().enumerate() {
            let held: usize = d.resident.values().map(|r| r.extent.pages).sum();
            if held != d.pool.used_pages() {
                return Err(format!("device {i}: {held} pages resident, {} used", d.pool.used_pages()));
            }
            for (f, r) in &d.resident {
                if let Some(func) = self.s.functions.get(f) {
                    if r.ready != (func.ready_mask & (1 << i) != 0) {
                        return Err(format!("device {i}: function {f}'s ready bit disagrees"));
                    }
                }
            }
        }
        for (f, func) in &self.s.functions {
            let queued = self.s.queue.iter().filter(|q| q.function == *f).count();
            if queued != func.queued {
                return Err(format!("function {f}: {queued} queued, counter says {}", func.queued));
            }
        }
        Ok(())
    }
}

impl State {
    pub fn ready_on(&self, device: DeviceId, function: FunctionId) -> bool {
        self.devices[device].resident.get(&function).is_some_and(|r| r.ready)
    }

    /// Devices other than `device` holding a complete copy of `function`, as a bit mask.
    pub fn ready_elsewhere(&self, device: DeviceId, function: FunctionId) -> u64 {
        match self.functions.get(&function) {
            Some(f) => f.ready_mask & !(1 << device),
            // Undeployed, still resident somewhere: ask the devices.
            None => (0..self.devices.len())
                .filter(|&j| j != device && self.ready_on(j, function))
                .fold(0, |m, j| m | 1 << j),
        }
    }

    /// Whether a resident model may be evicted from `device` now: not pinned as a copy source,
    /// not running there, not bound there.
    pub fn evictable(&self, device: DeviceId, function: FunctionId, r: &Resident) -> bool {
        let d = &self.devices[device];
        r.pins == 0
            && d.job.as_ref().is_none_or(|j| j.function != function)
            && self.functions.get(&function).is_none_or(|f| f.bound != Some(device))
    }

    /// Whether `device` can make room for `function` by evicting what may be evicted
    /// (contiguity aside: the eviction plan settles that).
    pub fn can_fit(&self, device: DeviceId, function: FunctionId) -> bool {
        let d = &self.devices[device];
        if d.resident.contains_key(&function) {
            return true;
        }
        let bytes = self.functions[&function].spec.bytes;
        if !d.pool.can_ever_hold(bytes) {
            return false;
        }
        let need = d.pool.pages_for(bytes);
        let mut have = d.pool.free_pages();
        for (&f, r) in &d.resident {
            if have >= need {
                break;
            }
            if self.evictable(device, f, r) {
                have += r.extent.pages;
            }
        }
        have >= need
    }

    /// The victims, taken from `order` (the policy's, cheapest first), whose eviction lets
    /// `device` allocate `pages` contiguous pages; `None` when even all of them would not.
    fn make_room(
        &self,
        device: DeviceId,
        pages: usize,
        order: Vec<(FunctionId, EvictReason)>,
    ) -> Option<Vec<(FunctionId, EvictReason)>> {
        let d = &self.devices[device];
        if d.pool.can_alloc(pages) {
            return Some(Vec::new());
        }
        let mut pool = d.pool.clone();
        let mut victims = Vec::new();
        let mut next = order.into_iter();
        while pool.alloc(pages).is_none() {
            let (v, reason) = next.next()?;
            pool.free(d.resident[&v].extent);
            victims.push((v, reason));
        }
        Some(victims)
    }

    /// Ends the device's job; returns whether its function's copy there was dropped.
    fn finish(&mut self, device: DeviceId, keep: bool) -> bool {
        let Some(job) = self.devices[device].job.take() else {
            return false;
        };
        let f = job.function;
        let registered = self.functions.contains_key(&f);
        if let Some(j) = job.source {
            let src = &mut self.devices[j];
            if let Some(r) = src.resident.get_mut(&f) {
                r.pins -= 1;
                let running = src.job.as_ref().is_some_and(|j| j.function == f);
                // Undeployed, or on a device that failed, while it was a copy source, and not
                // running there: drop it now.
                if r.pins == 0 && (!registered || !src.healthy) && !running {
                    self.drop_copy(j, f);
                }
            }
        }
        let mut bound_here = false;
        if let Some(func) = self.functions.get_mut(&f) {
            func.in_flight = func.in_flight.saturating_sub(1);
            bound_here = func.bound == Some(device);
            let held = self.devices[device].resident.contains_key(&f);
            if keep && held {
                func.ready_mask |= 1 << device;
            } else {
                func.ready_mask &= !(1 << device);
            }
        }
        if let Some(r) = self.devices[device].resident.get_mut(&f) {
            r.ready = keep;
            if (!keep || !registered) && r.pins == 0 && !bound_here {
                return self.drop_copy(device, f);
            }
        }
        false
    }

    /// Drops `function`'s copy on `device`, if there is one: its pages return to the pool and
    /// it is no longer a ready copy. Returns whether there was one. The one way a copy leaves
    /// a device.
    fn drop_copy(&mut self, device: DeviceId, function: FunctionId) -> bool {
        let d = &mut self.devices[device];
        let Some(r) = d.resident.remove(&function) else {
            return false;
        };
        d.pool.free(r.extent);
        if let Some(func) = self.functions.get_mut(&function) {
            func.ready_mask &= !(1 << device);
        }
        true
    }
}
