//! The scheduler's view of every device — which models are resident where, which devices are
//! running what and until when (predicted), which host links are carrying copies — and the
//! queue of waiting requests. `next_dispatch` applies the configured policy: queue order here,
//! device and swap source in `placement`, victims in `eviction`. Time is milliseconds on the
//! caller's clock (wall time in the server, virtual time in the simulator).

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::estimate::{self, FIRST_CHUNK_BYTES};
use super::pages::{Extent, PagePool};
use super::placement::{self, Choice};
use super::stats::FunctionStats;
use super::torpor::{self, Threshold};
use super::{eviction, FunctionSpec, PolicyKind, SwapSource};

pub type FunctionId = u64;
pub type DeviceId = usize;
pub type RequestId = u64;

/// Requests of the queue (in policy order) considered per decision: bounds a decision's cost
/// under a long queue.
const SCAN_LIMIT: usize = 256;

/// Requests over which a function's miss budget is counted before its window is that long.
pub(super) const LOST_HORIZON: usize = 250;

/// The longest a function's requests are all refused before one runs however late (`starved`).
pub(super) const MAX_REFUSED_MS: f64 = 600_000.0;

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

/// What `enqueue` did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Queued,
    Rejected(DropReason),
    /// Not registered (e.g. undeployed while the request was on its way).
    Unknown,
}

#[derive(Debug, Clone)]
pub(super) struct Func {
    pub spec: FunctionSpec,
    pub stats: FunctionStats,
    pub in_flight: usize,
    /// `native`: the device the function was bound to at deploy.
    pub home: Option<DeviceId>,
    /// Bit `i`: device `i` holds a complete copy (kept with `Resident::ready`, so asking
    /// "is it ready elsewhere?" costs one lookup, not one per device).
    pub ready_mask: u64,
    /// Its requests in the queue.
    pub queued: usize,
    /// Since when every request of it has been refused (shed), if its last one was.
    pub refused_since: Option<f64>,
}

#[derive(Debug, Clone)]
pub(super) struct Resident {
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
pub(super) struct Running {
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
pub(super) struct Dev {
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

#[derive(Debug, Clone)]
struct Queued {
    request: RequestId,
    function: FunctionId,
    deadline: f64,
    /// The time it was given (deadline − arrival), ms.
    window: f64,
}

#[derive(Debug)]
pub struct Cluster {
    pub(super) cfg: ClusterConfig,
    pub(super) devices: Vec<Dev>,
    /// Looked up for every resident model of every candidate device: a fast hash map (its
    /// order is never relied on).
    pub(super) functions: FxHashMap<FunctionId, Func>,
    queue: Vec<Queued>,
    pub(super) rng: ChaCha8Rng,
    threshold: Threshold,
    /// Torpor: functions in the high-priority group.
    high: BTreeSet<FunctionId>,
    last_update: Option<f64>,
}

impl Cluster {
    pub fn new(cfg: ClusterConfig, devices: Vec<DeviceSpec>) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        Self {
            cfg,
            devices: devices
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
                .collect(),
            functions: FxHashMap::default(),
            queue: Vec::new(),
            rng,
            threshold: Threshold::default(),
            high: BTreeSet::new(),
            last_update: None,
        }
    }

    /// Registers a function. Refused when no device could ever hold its weights. Under `native`
    /// it is bound to the device with the most free memory, or to none when none has room left
    /// (its requests are then rejected).
    pub fn add_function(&mut self, id: FunctionId, spec: FunctionSpec) -> Result<(), String> {
        let bytes = spec.bytes;
        if !self.devices.iter().any(|d| d.pool.can_ever_hold(bytes)) {
            let largest = self.devices.iter().map(|d| d.pool.capacity_bytes()).max().unwrap_or(0);
            return Err(format!(
                "the model's weights ({bytes} bytes) do not fit the largest device weight pool ({largest} bytes)"
            ));
        }
        let mut home = None;
        if self.cfg.policy == PolicyKind::Native {
            let mut order: Vec<DeviceId> = (0..self.devices.len()).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(self.devices[i].pool.free_pages()));
            for i in order {
                let d = &mut self.devices[i];
                if let Some(extent) = d.pool.alloc(d.pool.pages_for(bytes)) {
                    d.resident.insert(id, Resident { extent, last_used: 0.0, loaded_at: 0.0, pins: 0, ready: false });
                    home = Some(i);
                    break;
                }
            }
        }
        self.functions.insert(
            id,
            Func {
                spec,
                stats: FunctionStats::default(),
                in_flight: 0,
                home,
                ready_mask: 0,
                queued: 0,
                refused_since: None,
            },
        );
        Ok(())
    }

    /// Changes a function's SLO and batch limit.
    pub fn set_slo(&mut self, id: FunctionId, deadline_ms: f64, percentile: f64, max_batch: usize) {
        if let Some(f) = self.functions.get_mut(&id) {
            f.spec.deadline_ms = deadline_ms;
            f.spec.percentile = percentile;
            f.spec.max_batch = max_batch.max(1);
        }
    }

    /// Forgets a function: drops its queued requests (returned, to be answered) and frees its
    /// residency on devices not running it and not copying from it (their count is returned);
    /// the others free it when their job completes.
    pub fn remove_function(&mut self, id: FunctionId) -> (Vec<RequestId>, Vec<DeviceId>) {
        self.functions.remove(&id);
        self.high.remove(&id);
        let mut dropped = Vec::new();
        self.queue.retain(|q| {
            if q.function == id {
                dropped.push(q.request);
            }
            q.function != id
        });
        let mut evicted = Vec::new();
        for i in 0..self.devices.len() {
            let d = &self.devices[i];
            let running = d.job.as_ref().is_some_and(|j| j.function == id);
            let pinned = d.resident.get(&id).is_some_and(|r| r.pins > 0);
            if !running && !pinned && self.drop_copy(i, id) {
                evicted.push(i);
            }
        }
        (dropped, evicted)
    }

    /// Queues a request arriving at `now` with `deadline_ms` to run (the function's SLO deadline
    /// when `None`).
    pub fn enqueue(
        &mut self,
        request: RequestId,
        function: FunctionId,
        now: f64,
        deadline_ms: Option<f64>,
    ) -> Admission {
        let native = self.cfg.policy == PolicyKind::Native;
        let Some(f) = self.functions.get_mut(&function) else {
            return Admission::Unknown;
        };
        f.stats.arrived(now);
        if native && f.home.is_none() {
            f.stats.record(f64::INFINITY, f.spec.deadline_ms);
            return Admission::Rejected(DropReason::NotPlaced);
        }
        if f.queued >= self.cfg.max_queue_per_function || self.queue.len() >= self.cfg.max_queue {
            return Admission::Rejected(DropReason::Overloaded);
        }
        f.queued += 1;
        // A request may ask for less time than its function's SLO, never more.
        let window = deadline_ms.map_or(f.spec.deadline_ms, |d| d.min(f.spec.deadline_ms));
        self.queue.push(Queued { request, function, deadline: now + window, window });
        Admission::Queued
    }

    pub fn queued(&self, function: FunctionId) -> usize {
        self.functions.get(&function).map_or(0, |f| f.queued)
    }

    /// How long until the function's queue is likely to have drained, ms (for `Retry-After`):
    /// the work ahead — what the devices run now, and every queued request at its own
    /// function's profiled time, in batches of its `max_batch`, with a copy from the host for a
    /// function resident nowhere — spread over the healthy devices; or the function's own
    /// queue run back to back, when that is longer.
    pub fn drain_estimate_ms(&self, function: FunctionId, now: f64) -> f64 {
        let Some(f) = self.functions.get(&function) else { return 0.0 };
        let link = self.devices.iter().map(|d| d.host_bw).fold(0.0, f64::max);
        let work = |func: &Func, n: usize| {
            let b = func.spec.max_batch.max(1);
            let rest = if n.is_multiple_of(b) { 0.0 } else { estimate::batched_exec_ms(func.spec.exec_ms, n % b) };
            let batches = (n / b) as f64 * estimate::batched_exec_ms(func.spec.exec_ms, b) + rest;
            let copy = if func.ready_mask == 0 { estimate::transfer_ms(func.spec.bytes, link) } else { 0.0 };
            batches + copy
        };
        let running: f64 = self.devices.iter().filter_map(|d| d.job.as_ref()).map(|j| (j.ends_at - now).max(0.0)).sum();
        let queued: f64 = self.functions.values().filter(|g| g.queued > 0).map(|g| work(g, g.queued)).sum();
        let healthy = self.devices.iter().filter(|d| d.healthy).count().max(1) as f64;
        ((running + queued) / healthy).max(work(f, f.queued))
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// One finished request's latency (infinite for a request dropped on the server's side),
    /// for compliance, RRC and the eviction values.
    pub fn record(&mut self, function: FunctionId, latency_ms: f64) {
        if let Some(f) = self.functions.get_mut(&function) {
            let deadline = f.spec.deadline_ms;
            f.stats.record(latency_ms, deadline);
        }
    }

    /// A measured execution of a batch of `batch`: refines the function's profile (moving
    /// average of the single-request time).
    pub fn observe_exec(&mut self, function: FunctionId, batch: usize, exec_ms: f64) {
        if let Some(f) = self.functions.get_mut(&function) {
            let single = exec_ms / estimate::batched_exec_ms(1.0, batch);
            f.spec.exec_ms = 0.8 * f.spec.exec_ms + 0.2 * single;
        }
    }

    /// Whether the function has spent its miss budget (the faaswap policy then serves it last
    /// and evicts it first, concentrating misses instead of spreading them).
    pub(super) fn lost(&self, function: FunctionId) -> bool {
        self.functions.get(&function).is_some_and(|f| f.stats.lost(f.spec.percentile, LOST_HORIZON))
    }

    /// Whether every request of the function has been refused for longer than its SLO window
    /// in time — the time its last `LOST_HORIZON` requests take at its arrival rate, at least
    /// `max(1 s, its deadline)` and at most `MAX_REFUSED_MS`. A request of it that can make its
    /// deadline then runs although the function is lost, and that one's dispatch forgives it
    /// (its window, made of refusals by then, starts afresh, on probation: one miss and it is
    /// lost again), so that refusing is never permanent.
    pub(super) fn starved(&self, function: FunctionId, now: f64) -> bool {
        self.functions.get(&function).is_some_and(|f| {
            let window = (LOST_HORIZON as f64 / f.stats.rate_per_s(now).max(1e-9) * 1e3)
                .clamp(f.spec.deadline_ms.max(1000.0), MAX_REFUSED_MS);
            f.refused_since.is_some_and(|t| now - t > window)
        })
    }

    /// The next decision — a request (or batch) to run, or requests to drop — or `None` when
    /// nothing can start now. Call until `None`.
    pub fn next_dispatch(&mut self, now: f64) -> Option<Decision> {
        self.update_groups(now);
        if !self.devices.iter().any(Dev::idle) || self.queue.is_empty() {
            return None;
        }
        // Strictly in the policy's order. (faaswap once let requests whose model was resident
        // on an idle device jump the queue; that starved the swaps behind them past their
        // deadlines — BENCHMARKS.md, "Scheduling".)
        let order: Vec<usize> = self.order().into_iter().take(SCAN_LIMIT).collect();
        self.scan(&order, now)
    }

    fn scan(&mut self, order: &[usize], now: f64) -> Option<Decision> {
        for &qi in order {
            let (function, deadline, window) =
                (self.queue[qi].function, self.queue[qi].deadline, self.queue[qi].window);
            if self.cfg.policy == PolicyKind::Torpor && self.functions[&function].in_flight > 0 {
                continue;
            }
            match placement::choose(self, function, now, deadline, window) {
                Choice::Run { device, swap, ranking } => {
                    if let Some(d) = self.commit(qi, order, device, swap, ranking, now) {
                        return Some(Decision::Run(d));
                    }
                }
                Choice::Wait => {}
                Choice::Shed => {
                    let q = self.queue.remove(qi);
                    if let Some(f) = self.functions.get_mut(&q.function) {
                        f.queued -= 1;
                        f.refused_since.get_or_insert(now);
                        // A miss of the function's SLO only when it was the request's deadline:
                        // one the client shortened is the client's, or a client could spend
                        // the function's miss budget for everyone.
                        if q.window >= f.spec.deadline_ms {
                            f.stats.record(f64::INFINITY, f.spec.deadline_ms);
                        }
                    }
                    return Some(Decision::Drop {
                        requests: vec![q.request],
                        function: q.function,
                        reason: DropReason::Unmeetable,
                    });
                }
            }
        }
        None
    }

    /// Queue indices in the policy's order.
    fn order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.queue.len()).collect();
        match self.cfg.policy {
            // The queue is kept in arrival order.
            PolicyKind::Native | PolicyKind::SimpleSwap => {}
            PolicyKind::Torpor => idx.sort_by_key(|&i| !self.high.contains(&self.queue[i].function)),
            PolicyKind::Faaswap => idx.sort_by(|&a, &b| {
                let key = |i: usize| {
                    let q = &self.queue[i];
                    (self.lost(q.function), q.deadline)
                };
                let (ka, kb) = (key(a), key(b));
                ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(a.cmp(&b))
            }),
        }
        idx
    }

    /// Torpor: every 2 s, recompute the groups and adapt the threshold.
    fn update_groups(&mut self, now: f64) {
        if self.cfg.policy != PolicyKind::Torpor || self.last_update.is_some_and(|t| now - t < torpor::UPDATE_MS) {
            return;
        }
        self.last_update = Some(now);
        let seen: Vec<&Func> = self.functions.values().filter(|f| f.stats.counts().0 > 0).collect();
        let compliance = if seen.is_empty() {
            1.0
        } else {
            seen.iter().filter(|f| f.stats.compliant(f.spec.percentile)).count() as f64 / seen.len() as f64
        };
        self.threshold.update(compliance);
        let scores: Vec<(FunctionId, f64)> = self
            .functions
            .iter()
            .map(|(&id, f)| {
                let (n, m) = f.stats.counts();
                (id, torpor::rrc(f.spec.percentile, n, m) * f.stats.mean_latency_ms().unwrap_or(0.0))
            })
            .collect();
        let max = scores.iter().map(|s| s.1).fold(0.0, f64::max);
        self.high =
            scores.into_iter().filter(|&(_, s)| s > 0.0 && s / max >= self.threshold.value).map(|(id, _)| id).collect();
    }

    /// Torpor's current threshold and high-priority group size (for tests and reports).
    pub fn torpor_groups(&self) -> (f64, usize) {
        (self.threshold.value, self.high.len())
    }

    /// The copies on `device`'s host link in flight at `at` (other than `device`'s own), as
    /// (device, bytes left) — each one's bytes left estimated from its predicted end at the
    /// link's current split.
    pub(super) fn host_copies(&self, device: DeviceId, at: f64) -> Vec<(DeviceId, f64)> {
        let group = self.devices[device].group;
        let until: Vec<(DeviceId, f64)> = self
            .devices
            .iter()
            .enumerate()
            .filter(|&(i, d)| i != device && d.group == group)
            .filter_map(|(i, d)| d.job.as_ref().and_then(|j| j.host_copy_until).filter(|&t| t > at).map(|t| (i, t)))
            .collect();
        let share = self.devices[device].host_bw / until.len().max(1) as f64;
        until.into_iter().map(|(i, t)| (i, (t - at) / 1e3 * share)).collect()
    }

    /// A host copy of `bytes` to `device` starting at `at`: how long it takes (ms) and how long
    /// it delays each copy already on the link (ms, by device). The link is shared equally
    /// among the copies in flight (processor sharing): a copy with `r` bytes left delays a new
    /// one of `b` bytes by min(r, b) over the link's rate, and is delayed by as much.
    pub(super) fn host_copy(&self, device: DeviceId, at: f64, bytes: u64) -> (f64, Vec<(DeviceId, f64)>) {
        let bw = self.devices[device].host_bw;
        let b = bytes as f64;
        let delays: Vec<(DeviceId, f64)> = self
            .host_copies(device, at)
            .into_iter()
            .map(|(i, r)| (i, estimate::transfer_ms(r.min(b) as u64, bw)))
            .collect();
        (estimate::transfer_ms(bytes, bw) + delays.iter().map(|d| d.1).sum::<f64>(), delays)
    }

    pub(super) fn ready_on(&self, device: DeviceId, function: FunctionId) -> bool {
        self.devices[device].resident.get(&function).is_some_and(|r| r.ready)
    }

    /// Devices other than `device` holding a complete copy of `function`, as a bit mask.
    pub(super) fn ready_elsewhere(&self, device: DeviceId, function: FunctionId) -> u64 {
        match self.functions.get(&function) {
            Some(f) => f.ready_mask & !(1 << device),
            // Undeployed, still resident somewhere: ask the devices.
            None => (0..self.devices.len())
                .filter(|&j| j != device && self.ready_on(j, function))
                .fold(0, |m, j| m | 1 << j),
        }
    }

    /// Whether a resident model may be evicted from `device` now.
    pub(super) fn evictable(&self, device: DeviceId, function: FunctionId, r: &Resident) -> bool {
        let d = &self.devices[device];
        r.pins == 0
            && d.job.as_ref().is_none_or(|j| j.function != function)
            && !(self.cfg.policy == PolicyKind::Native && self.functions.contains_key(&function))
    }

    /// Whether `device` can make room for `function` by evicting what may be evicted
    /// (contiguity aside: the eviction plan settles that).
    pub(super) fn can_fit(&self, device: DeviceId, function: FunctionId) -> bool {
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

    /// Starts the request at queue index `qi` (with same-function requests batched under
    /// `faaswap`, taken in the decision's queue `order`) on `device`; `None` when room cannot be
    /// made after all.
    fn commit(
        &mut self,
        qi: usize,
        order: &[usize],
        device: DeviceId,
        swap: Option<SwapSource>,
        ranking: Option<eviction::Ranking>,
        now: f64,
    ) -> Option<Dispatch> {
        let function = self.queue[qi].function;
        if self.starved(function, now) {
            self.functions.get_mut(&function).expect("queued functions are registered").stats.forgive();
        }
        if let Some(f) = self.functions.get_mut(&function) {
            f.refused_since = None;
        }
        let (bytes, exec1, max_batch) = {
            let s = &self.functions[&function].spec;
            (s.bytes, s.exec_ms, s.max_batch)
        };
        let mut evicted = Vec::new();
        let extent = match (swap, self.devices[device].resident.get(&function).map(|r| r.extent)) {
            (_, Some(extent)) => extent,
            (None, None) => return None,
            (Some(_), None) => {
                let pages = self.devices[device].pool.pages_for(bytes);
                let victims = eviction::plan(self, device, function, pages, now, ranking)?;
                for (v, reason) in victims {
                    assert!(self.drop_copy(device, v), "a victim is resident");
                    evicted.push((v, reason));
                }
                let d = &mut self.devices[device];
                let extent = d.pool.alloc(pages).expect("the eviction plan made room");
                d.resident.insert(function, Resident { extent, last_used: now, loaded_at: now, pins: 0, ready: false });
                extent
            }
        };
        if let Some(SwapSource::Peer(j)) = swap {
            let r = self.devices[j].resident.get_mut(&function).expect("a peer source holds the model");
            r.pins += 1;
            r.last_used = now;
        }
        self.devices[device].resident.get_mut(&function).expect("resident now").last_used = now;
        // The batch: this request and, under faaswap, more of the same function in queue order.
        let mut batch = vec![qi];
        if self.cfg.policy == PolicyKind::Faaswap && max_batch > 1 {
            for &i in order {
                if batch.len() >= max_batch {
                    break;
                }
                if i != qi && self.queue[i].function == function {
                    batch.push(i);
                }
            }
        }
        let exec = estimate::batched_exec_ms(exec1, batch.len());
        let deadline = batch.iter().map(|&i| self.queue[i].deadline).fold(f64::INFINITY, f64::min);
        let (swap_ms, link) = match swap {
            None => (None, self.devices[device].host_bw),
            Some(SwapSource::Host) => {
                let (ms, delays) = self.host_copy(device, now, bytes);
                // The copies already on the link slow down by as much as they slow this one.
                for (j, delay) in delays {
                    if let Some(r) = self.devices[j].job.as_mut() {
                        if let Some(until) = r.host_copy_until.as_mut() {
                            *until += delay;
                            r.ends_at = r.ends_at.max(*until);
                        }
                    }
                }
                (Some(ms), self.devices[device].host_bw)
            }
            Some(SwapSource::Peer(j)) => {
                let bw = self.devices[device].peers.get(j).copied().flatten().unwrap_or(self.devices[device].host_bw);
                (Some(estimate::transfer_ms(bytes, bw)), bw)
            }
        };
        let chunk = estimate::transfer_ms(FIRST_CHUNK_BYTES.min(bytes), link);
        let predicted_ms = estimate::job_ms(swap_ms, chunk, exec);
        self.devices[device].job = Some(Running {
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
        let dev = &mut self.devices[device];
        dev.load = dev.recent_load(now) * LOAD_TAU_MS + predicted_ms;
        dev.load_at = now;
        self.functions.get_mut(&function).expect("queued functions are registered").in_flight += 1;
        batch.sort_unstable_by(|a, b| b.cmp(a));
        self.functions.get_mut(&function).expect("queued functions are registered").queued -= batch.len();
        let mut requests: Vec<RequestId> = batch.into_iter().map(|i| self.queue.remove(i).request).collect();
        requests.reverse();
        Some(Dispatch { requests, function, device, extent, swap, evicted, predicted_ms })
    }

    /// The device finished its job (successfully or not: `keep` says whether the model's copy
    /// there is complete and may be reused).
    pub fn complete(&mut self, device: DeviceId) {
        let _ = self.finish(device, true);
    }

    /// As `complete`, but the copy on the device is not to be trusted (the job failed).
    /// Returns whether that copy was dropped (it stays while another device reads from it).
    pub fn fail(&mut self, device: DeviceId) -> bool {
        self.finish(device, false)
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
        if let Some(func) = self.functions.get_mut(&f) {
            func.in_flight = func.in_flight.saturating_sub(1);
        }
        let native_home = registered && self.cfg.policy == PolicyKind::Native;
        if let Some(func) = self.functions.get_mut(&f) {
            let held = self.devices[device].resident.contains_key(&f);
            if keep && held {
                func.ready_mask |= 1 << device;
            } else {
                func.ready_mask &= !(1 << device);
            }
        }
        if let Some(r) = self.devices[device].resident.get_mut(&f) {
            r.ready = keep;
            if (!keep || !registered) && r.pins == 0 && !native_home {
                return self.drop_copy(device, f);
            }
        }
        false
    }

    /// Drops `function`'s copy on `device`, if there is one: its pages return to the pool and
    /// it is no longer a ready copy. Returns whether there was one.
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

    /// Marks a device unhealthy (it gets no work, and every copy on it that nothing is reading
    /// is dropped: a failed device's memory is not to be trusted) or healthy again. Returns the
    /// functions whose copies were dropped.
    pub fn set_health(&mut self, device: DeviceId, healthy: bool) -> Vec<FunctionId> {
        let d = &mut self.devices[device];
        d.healthy = healthy;
        if healthy {
            return Vec::new();
        }
        let running = d.job.as_ref().map(|j| j.function);
        let dropped: Vec<FunctionId> =
            d.resident.iter().filter(|(f, r)| r.pins == 0 && Some(**f) != running).map(|(f, _)| *f).collect();
        for &f in &dropped {
            self.drop_copy(device, f);
        }
        dropped
    }

    pub fn healthy(&self, device: DeviceId) -> bool {
        self.devices[device].healthy
    }

    /// A deployed function's name.
    pub fn function_name(&self, function: FunctionId) -> Option<&str> {
        self.functions.get(&function).map(|f| f.spec.name.as_str())
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Where `function`'s copy sits in `device`'s pool, if it is resident there.
    pub fn extent_of(&self, device: DeviceId, function: FunctionId) -> Option<Extent> {
        self.devices.get(device)?.resident.get(&function).map(|r| r.extent)
    }

    /// Devices where the function is resident.
    pub fn residency(&self, function: FunctionId) -> Vec<DeviceId> {
        (0..self.devices.len()).filter(|&i| self.devices[i].resident.contains_key(&function)).collect()
    }

    /// Checks the bookkeeping: every device's used pages are exactly its resident models'
    /// extents, each ready bit matches a complete copy, and queue counters match the queue.
    /// `Err` names the first mismatch (tests and the simulator's end-of-run check call it).
    pub fn check_accounting(&self) -> Result<(), String> {
        for (i, d) in self.devices.iter().enumerate() {
            let held: usize = d.resident.values().map(|r| r.extent.pages).sum();
            if held != d.pool.used_pages() {
                return Err(format!("device {i}: {held} pages resident, {} used", d.pool.used_pages()));
            }
            for (f, r) in &d.resident {
                if let Some(func) = self.functions.get(f) {
                    if r.ready != (func.ready_mask & (1 << i) != 0) {
                        return Err(format!("device {i}: function {f}'s ready bit disagrees"));
                    }
                }
            }
        }
        for (f, func) in &self.functions {
            let queued = self.queue.iter().filter(|q| q.function == *f).count();
            if queued != func.queued {
                return Err(format!("function {f}: {queued} queued, counter says {}", func.queued));
            }
        }
        Ok(())
    }

    /// A device's (used, capacity) weight-pool bytes, without building its memory map.
    pub fn memory(&self, device: DeviceId) -> (u64, u64) {
        let pool = &self.devices[device].pool;
        (pool.used_pages() as u64 * pool.page_bytes(), pool.capacity_bytes())
    }

    pub fn snapshot(&self, device: DeviceId) -> DeviceSnapshot {
        let d = &self.devices[device];
        let name = |f: &FunctionId| self.functions.get(f).map_or_else(|| format!("#{f}"), |i| i.spec.name.clone());
        let mut resident: Vec<ResidentSnapshot> = d
            .resident
            .iter()
            .map(|(f, r)| ResidentSnapshot {
                function: name(f),
                bytes: self.functions.get(f).map_or(0, |i| i.spec.bytes),
                first_page: r.extent.first,
                pages: r.extent.pages,
            })
            .collect();
        resident.sort_by_key(|r| r.first_page);
        let used = d.pool.used_pages() as u64 * d.pool.page_bytes();
        DeviceSnapshot {
            capacity_bytes: d.pool.capacity_bytes(),
            used_bytes: used,
            free_bytes: d.pool.capacity_bytes() - used,
            page_bytes: d.pool.page_bytes(),
            busy: d.job.is_some(),
            healthy: d.healthy,
            executing: d.job.as_ref().map(|j| name(&j.function)),
            resident,
        }
    }
}

/// A device's memory map, for the devices API.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSnapshot {
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub page_bytes: u64,
    pub busy: bool,
    pub healthy: bool,
    pub executing: Option<String>,
    pub resident: Vec<ResidentSnapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResidentSnapshot {
    pub function: String,
    pub bytes: u64,
    pub first_page: usize,
    pub pages: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ModelClass;

    const PAGE: u64 = 1 << 20;

    fn spec(name: &str, pages: u64, exec_ms: f64, class: ModelClass) -> FunctionSpec {
        FunctionSpec {
            name: name.into(),
            bytes: pages * PAGE,
            exec_ms,
            class,
            deadline_ms: 100.0,
            percentile: 0.98,
            max_batch: 1,
        }
    }

    /// `n` devices of `pages` pages; host links of 1 GB/s per device, pairs (0, 1), (2, 3)...
    /// sharing one; peer links `peer(i, j)`.
    fn cluster(policy: PolicyKind, n: usize, pages: u64, peer: impl Fn(usize, usize) -> Option<f64>) -> Cluster {
        let devices = (0..n)
            .map(|i| DeviceSpec {
                pool: PagePool::new(pages * PAGE, PAGE),
                host_link: Some(1e9),
                peers: (0..n).map(|j| if i == j { None } else { peer(i, j) }).collect(),
                host_group: i / 2,
            })
            .collect();
        Cluster::new(ClusterConfig { policy, seed: 1, ..ClusterConfig::default() }, devices)
    }

    #[track_caller]
    fn run(c: &mut Cluster, now: f64) -> Dispatch {
        match c.next_dispatch(now) {
            Some(Decision::Run(d)) => d,
            other => panic!("expected a dispatch, got {other:?}"),
        }
    }

    #[track_caller]
    fn queue(c: &mut Cluster, r: RequestId, f: FunctionId, now: f64) {
        assert_eq!(c.enqueue(r, f, now, None), Admission::Queued);
    }

    #[test]
    fn a_copy_on_a_failed_device_is_dropped_once_its_last_reader_is_done() {
        let mut c = cluster(PolicyKind::Torpor, 3, 4, |_, _| Some(1e12));
        c.add_function(1, spec("a", 2, 1.0, ModelClass::Light)).unwrap();
        c.add_function(2, spec("b", 2, 1.0, ModelClass::Light)).unwrap();
        queue(&mut c, 1, 1, 0.0);
        let first = run(&mut c, 0.0);
        c.complete(first.device);
        let holder = first.device;
        // b runs on the device that holds a, then a is needed again: a peer copy from there.
        queue(&mut c, 2, 2, 1.0);
        let b_job = run(&mut c, 1.0);
        assert_eq!(b_job.device, holder, "b is placed beside a (the test needs that)");
        queue(&mut c, 3, 1, 2.0);
        let reader = run(&mut c, 2.0);
        assert_eq!(reader.swap, Some(SwapSource::Peer(holder)));
        // b's job fails there: the device is unhealthy; a's copy is being read, so it stays...
        c.fail(holder);
        assert!(c.set_health(holder, false).is_empty(), "a is pinned by the reader");
        // ...until the reader is done, and then it goes: a failed device is no copy source.
        c.complete(reader.device);
        assert_eq!(c.residency(1), vec![reader.device]);
        c.check_accounting().unwrap();
    }

    #[test]
    fn an_unhealthy_device_gets_no_work_and_loses_its_copies_until_it_is_healthy() {
        for policy in [PolicyKind::SimpleSwap, PolicyKind::Torpor, PolicyKind::Faaswap] {
            let mut c = cluster(policy, 2, 4, |_, _| Some(1e12));
            c.add_function(1, spec("a", 2, 1.0, ModelClass::Light)).unwrap();
            c.add_function(2, spec("b", 2, 1.0, ModelClass::Light)).unwrap();
            queue(&mut c, 1, 1, 0.0);
            let d = run(&mut c, 0.0);
            c.complete(d.device);
            let (sick, well) = (d.device, 1 - d.device);
            assert_eq!(c.set_health(sick, false), vec![1], "{policy}: its copy is dropped");
            assert!(c.residency(1).is_empty() && c.memory(sick).0 == 0, "{policy}");
            c.check_accounting().unwrap();
            for r in 2..6 {
                queue(&mut c, r, 1 + r % 2, r as f64);
                let d = run(&mut c, r as f64);
                assert_eq!(d.device, well, "{policy}: request {r} avoids the unhealthy device");
                assert_ne!(d.swap, Some(SwapSource::Peer(sick)), "{policy}: never a copy source");
                c.complete(d.device);
            }
            // Only the unhealthy device would be idle: nothing starts.
            queue(&mut c, 9, 1, 10.0);
            let d = run(&mut c, 10.0);
            queue(&mut c, 10, 2, 10.0);
            assert_eq!(c.next_dispatch(10.0), None, "{policy}");
            c.complete(d.device);
            assert!(c.set_health(sick, true).is_empty());
            assert!(c.healthy(sick));
            let d = run(&mut c, 11.0);
            assert_eq!(d.requests, vec![10], "{policy}");
            c.complete(d.device);
            c.check_accounting().unwrap();
        }
    }

    #[test]
    fn refuses_functions_that_fit_no_device() {
        let mut c = cluster(PolicyKind::Faaswap, 2, 4, |_, _| None);
        assert!(c.add_function(1, spec("a", 4, 1.0, ModelClass::Light)).is_ok());
        assert!(c.add_function(2, spec("b", 5, 1.0, ModelClass::Light)).is_err());
        assert_eq!(c.enqueue(1, 9, 0.0, None), Admission::Unknown);
    }

    #[test]
    fn simpleswap_is_fifo_with_lru_eviction_and_seeded_random_devices() {
        let mut c = cluster(PolicyKind::SimpleSwap, 1, 4, |_, _| None);
        for f in 1..=3 {
            c.add_function(f, spec(&format!("f{f}"), 2, 1.0, ModelClass::Light)).unwrap();
        }
        for (r, f) in [(1, 1), (2, 2), (3, 1)] {
            queue(&mut c, r, f, r as f64);
            let d = run(&mut c, r as f64);
            assert_eq!(d.requests, vec![r], "FIFO");
            c.complete(0);
        }
        // f2 was used less recently than f1: it goes.
        queue(&mut c, 4, 3, 4.0);
        let d = run(&mut c, 4.0);
        assert_eq!(d.evicted, vec![(2, EvictReason::Lru)]);
        assert_eq!(d.swap, Some(SwapSource::Host));
        // Random among idle devices, but the same for the same seed.
        let picks = |seed: u64| {
            let mut c = cluster(PolicyKind::SimpleSwap, 4, 8, |_, _| Some(1e12));
            c.cfg.seed = seed;
            c.rng = ChaCha8Rng::seed_from_u64(seed);
            c.add_function(1, spec("a", 1, 1.0, ModelClass::Light)).unwrap();
            (0..8)
                .map(|r| {
                    queue(&mut c, r, 1, 0.0);
                    let d = run(&mut c, 0.0);
                    assert_eq!(d.swap.is_some(), !c.ready_on(d.device, 1), "simpleswap never copies from a peer");
                    c.complete(d.device);
                    d.device
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(5), picks(5));
        assert!(picks(5).iter().any(|&d| d != picks(5)[0]), "not always the same device");
    }

    #[test]
    fn the_executing_model_and_copy_sources_are_never_evicted() {
        let mut c = cluster(PolicyKind::Faaswap, 2, 4, |_, _| Some(1e12));
        c.devices[1].group = 1; // own host links: no copy slows the other's
        c.add_function(1, spec("a", 2, 1.0, ModelClass::Light)).unwrap();
        c.add_function(2, spec("b", 2, 1.0, ModelClass::Light)).unwrap();
        c.add_function(3, spec("c", 4, 1.0, ModelClass::Light)).unwrap();
        queue(&mut c, 1, 1, 0.0);
        let x = run(&mut c, 0.0).device;
        queue(&mut c, 2, 2, 0.0);
        let y = run(&mut c, 0.0).device;
        assert_ne!(x, y, "the second model goes to the idle device");
        queue(&mut c, 3, 3, 0.0);
        assert_eq!(c.next_dispatch(0.0), None, "both busy: wait, evict nothing");
        c.remove_function(3);
        c.complete(x);
        c.complete(y);
        queue(&mut c, 3, 1, 1.0);
        assert_eq!(
            run(&mut c, 1.0),
            Dispatch {
                requests: vec![3],
                function: 1,
                device: x,
                extent: Extent { first: 0, pages: 2 },
                swap: None,
                evicted: vec![],
                predicted_ms: 1.0
            }
        );
        // Device x is busy: a copy from it over the fast peer link beats waiting.
        queue(&mut c, 4, 1, 1.0);
        let d = run(&mut c, 1.0);
        assert_eq!((d.device, d.swap), (y, Some(SwapSource::Peer(x))));
        c.complete(x);
        // While y copies from it, x's copy of `a` cannot go, so `c` fits nowhere now.
        c.add_function(3, spec("c", 4, 1.0, ModelClass::Light)).unwrap();
        queue(&mut c, 5, 3, 2.0);
        assert_eq!(c.next_dispatch(2.0), None);
        c.complete(y);
        let d = run(&mut c, 3.0);
        assert!(!d.evicted.is_empty());
        let used: u64 = (0..2).map(|i| c.snapshot(i).used_bytes).sum();
        let resident: u64 = (1..=3).map(|f| c.residency(f).len() as u64 * c.functions[&f].spec.bytes).sum();
        assert_eq!(used, resident, "pages accounted exactly");
    }

    #[test]
    fn an_incomplete_or_failed_copy_is_never_reused() {
        let mut c = cluster(PolicyKind::Torpor, 3, 2, |_, _| Some(48e9));
        c.add_function(1, spec("a", 1, 1.0, ModelClass::Light)).unwrap();
        queue(&mut c, 1, 1, 0.0);
        assert_eq!(run(&mut c, 0.0).swap, Some(SwapSource::Host));
        c.cfg.policy = PolicyKind::SimpleSwap; // torpor allows one request in flight per function
        queue(&mut c, 2, 1, 0.0);
        let second = run(&mut c, 0.0);
        assert_eq!(second.swap, Some(SwapSource::Host), "device 0's copy is not complete yet");
        assert!(c.fail(0), "the failed job's copy is dropped");
        assert_eq!(c.residency(1), vec![second.device], "a failed copy is dropped");
    }

    #[test]
    fn torpor_placement_order() {
        // Fast peer links 0–3 and 2–3, slow 0–1; PCIe pairs (0, 1) and (2, 3).
        let links = |i: usize, j: usize| match (i.min(j), i.max(j)) {
            (0, 3) | (2, 3) => Some(48e9),
            (0, 1) => Some(24e9),
            _ => None,
        };
        let mut c = cluster(PolicyKind::Torpor, 4, 8, links);
        for f in 1..=4 {
            c.add_function(f, spec(&format!("f{f}"), 1, 1.0, ModelClass::Heavy)).unwrap();
        }
        // A host copy to the first idle device whose PCIe neighbour is not copying.
        queue(&mut c, 1, 1, 0.0);
        assert_eq!(run(&mut c, 0.0).device, 0);
        c.complete(0);
        // (1) an idle device that holds the model, no copy.
        queue(&mut c, 2, 1, 1.0);
        assert_eq!(run(&mut c, 1.0).swap, None);
        queue(&mut c, 3, 1, 1.0);
        assert_eq!(c.next_dispatch(1.0), None, "one request in flight per function");
        c.complete(0);
        // Device 0 takes f2 (copying from the host until about 2.001) and runs it...
        queue(&mut c, 4, 2, 2.0);
        c.enqueue(5, 3, 2.0, None);
        let d = run(&mut c, 2.0);
        assert_eq!(d.requests, vec![3], "FIFO within the low group");
        c.complete(0);
        let d = run(&mut c, 2.0);
        assert_eq!((d.requests[0], d.device, d.swap), (4, 0, Some(SwapSource::Host)));
        // (2) ... so f1 is copied to the idle device with the fastest peer link from device 0.
        queue(&mut c, 6, 1, 2.0);
        let d = run(&mut c, 2.0);
        assert_eq!(d.requests, vec![5], "f3 was queued first");
        assert_eq!((d.device, d.swap), (2, Some(SwapSource::Host)), "(3) device 1's neighbour 0 is copying");
        let d = run(&mut c, 2.0);
        assert_eq!((d.device, d.swap), (3, Some(SwapSource::Peer(0))));
        // (4/5) only device 1 is idle, its neighbour still copying: it loads anyway.
        queue(&mut c, 7, 4, 2.0);
        let d = run(&mut c, 2.0);
        assert_eq!((d.device, d.swap), (1, Some(SwapSource::Host)));
    }

    #[test]
    fn torpor_evicts_replicas_then_light_then_medium_then_heavy() {
        let mut c = cluster(PolicyKind::Torpor, 1, 4, |_, _| None);
        let classes = [ModelClass::Heavy, ModelClass::Medium, ModelClass::Light, ModelClass::Light];
        for (k, class) in classes.into_iter().enumerate() {
            c.add_function(k as u64 + 1, spec(&format!("f{k}"), 1, 1.0, class)).unwrap();
            queue(&mut c, k as u64, k as u64 + 1, k as f64);
            run(&mut c, k as f64);
            c.complete(0);
        }
        let mut order = Vec::new();
        for n in 0..3u64 {
            c.add_function(10 + n, spec("new", 1, 1.0, ModelClass::Heavy)).unwrap();
            queue(&mut c, 100 + n, 10 + n, 10.0 + n as f64);
            let d = run(&mut c, 10.0 + n as f64);
            order.extend(d.evicted.iter().map(|e| e.0));
            c.complete(0);
        }
        // Light f3 (older) before light f4, then the medium f2; the heavy f1 is next.
        assert_eq!(order, vec![3, 4, 2]);
        assert_eq!(c.residency(1), vec![0]);
    }

    #[test]
    fn torpor_serves_the_high_priority_group_first() {
        let mut c = cluster(PolicyKind::Torpor, 1, 8, |_, _| None);
        c.add_function(1, spec("ok", 1, 1.0, ModelClass::Light)).unwrap();
        c.add_function(2, spec("late", 1, 1.0, ModelClass::Light)).unwrap();
        for _ in 0..50 {
            c.record(1, 10.0);
            c.record(2, 500.0);
        }
        c.next_dispatch(0.0); // the first update computes the groups
        assert_eq!(c.torpor_groups().1, 1, "only the late function needs requests: the high group");
        queue(&mut c, 1, 1, 1.0);
        queue(&mut c, 2, 2, 2.0);
        assert_eq!(run(&mut c, 2.5).requests, vec![2], "the high group first, though it arrived later");
    }

    #[test]
    fn faaswap_waits_for_the_holder_when_a_swap_would_be_slower() {
        // Host link 1 GB/s: a 100-page model takes ~105 ms to copy; it runs 10 ms.
        let mut c = cluster(PolicyKind::Faaswap, 2, 200, |_, _| None);
        c.add_function(1, spec("big", 100, 10.0, ModelClass::Heavy)).unwrap();
        queue(&mut c, 1, 1, 0.0);
        let d = run(&mut c, 0.0);
        c.complete(d.device);
        queue(&mut c, 2, 1, 200.0);
        let d = run(&mut c, 200.0);
        assert_eq!(d.swap, None);
        queue(&mut c, 3, 1, 201.0);
        assert_eq!(c.next_dispatch(201.0), None, "waiting 9 ms for the holder beats a 105 ms copy");
        c.complete(d.device);
        assert_eq!(run(&mut c, 210.0).swap, None);
    }

    #[test]
    fn faaswap_batches_orders_by_deadline_and_sheds() {
        let mut c = cluster(PolicyKind::Faaswap, 1, 8, |_, _| None);
        c.add_function(1, FunctionSpec { max_batch: 3, ..spec("a", 1, 10.0, ModelClass::Light) }).unwrap();
        c.add_function(2, FunctionSpec { deadline_ms: 20.0, ..spec("b", 1, 10.0, ModelClass::Light) }).unwrap();
        queue(&mut c, 0, 2, 0.0);
        run(&mut c, 0.0);
        c.complete(0);
        queue(&mut c, 1, 1, 0.0); // deadline 100
        let first = run(&mut c, 0.0);
        for r in 2..=5 {
            queue(&mut c, r, 1, 1.0);
        }
        queue(&mut c, 6, 2, 2.0); // deadline 22: runs first
        c.complete(first.device);
        assert_eq!(run(&mut c, 3.0).requests, vec![6], "earliest deadline first");
        c.complete(0);
        let d = run(&mut c, 15.0);
        assert_eq!(d.requests, vec![2, 3, 4], "a batch of up to max_batch of one function");
        assert!((d.predicted_ms - estimate::batched_exec_ms(10.0, 3)).abs() < 1e-9);
        c.complete(0);
        assert_eq!(run(&mut c, 30.0).requests, vec![5]);
        // Shedding: a request that cannot finish before its deadline anywhere is dropped.
        c.cfg.shed = true;
        c.complete(0);
        assert_eq!(c.enqueue(7, 2, 40.0, Some(5.0)), Admission::Queued);
        match c.next_dispatch(41.0) {
            Some(Decision::Drop { requests, reason: DropReason::Unmeetable, .. }) => assert_eq!(requests, vec![7]),
            other => panic!("expected a drop, got {other:?}"),
        }
    }

    #[test]
    fn a_clients_shorter_deadline_never_spends_the_functions_miss_budget() {
        let mut c = cluster(PolicyKind::Faaswap, 1, 8, |_, _| None);
        c.cfg.shed = true;
        c.add_function(1, spec("f", 1, 10.0, ModelClass::Light)).unwrap();
        c.add_function(2, spec("slower than its deadline", 1, 500.0, ModelClass::Light)).unwrap();
        // A client asking for a millionth of a millisecond, 300 times: each is shed, none is the
        // function's miss.
        for r in 0..300 {
            assert_eq!(c.enqueue(r, 1, r as f64, Some(1e-6)), Admission::Queued);
            assert!(matches!(c.next_dispatch(r as f64), Some(Decision::Drop { reason: DropReason::Unmeetable, .. })));
        }
        assert_eq!(c.functions[&1].stats.counts(), (0, 0));
        assert!(!c.lost(1));
        // A request with the function's own deadline that cannot make it is shed too, and that
        // one is the function's miss.
        queue(&mut c, 300, 2, 300.0);
        assert!(matches!(c.next_dispatch(300.0), Some(Decision::Drop { .. })));
        assert_eq!(c.functions[&2].stats.counts(), (1, 0));
    }

    #[test]
    fn shedding_is_never_permanent_for_a_function() {
        let mut c = cluster(PolicyKind::Faaswap, 1, 8, |_, _| None);
        c.cfg.shed = true;
        c.add_function(1, spec("f", 1, 10.0, ModelClass::Light)).unwrap();
        // Out of its miss budget, it is not copied in from the host while shedding...
        for _ in 0..300 {
            c.record(1, f64::INFINITY);
        }
        assert!(c.lost(1));
        // One request a second: its SLO window (250 requests) spans about 250 s. Refused until
        // then; once all its requests have been refused for longer than that, the next one runs
        // (and its window starts afresh: it is judged by what it does from now on).
        let mut r = 0;
        let d = loop {
            let now = r as f64 * 1000.0;
            queue(&mut c, r, 1, now);
            match c.next_dispatch(now) {
                Some(Decision::Drop { .. }) => r += 1,
                Some(Decision::Run(d)) => break d,
                None => panic!("nothing decided at {now}"),
            }
        };
        assert!((250..300).contains(&r), "refused for {r} s");
        assert_eq!((d.requests, d.swap), (vec![r], Some(SwapSource::Host)));
        assert!(!c.lost(1));
        c.complete(0);
        c.record(1, 20.0);
        assert_eq!(c.functions[&1].stats.counts(), (1, 1));
        // On probation: its next miss spends its budget again.
        c.record(1, f64::INFINITY);
        assert!(c.lost(1));
    }

    #[test]
    fn host_copies_on_one_link_share_it_and_slow_each_other() {
        // Devices 0 and 1 share a 1 GB/s host link; 1 MiB pages.
        let mut c = cluster(PolicyKind::Faaswap, 2, 200, |_, _| None);
        let loose = |name, pages| FunctionSpec { deadline_ms: 1000.0, ..spec(name, pages, 1.0, ModelClass::Light) };
        c.add_function(1, loose("a", 100)).unwrap();
        c.add_function(2, loose("b", 20)).unwrap();
        let ms = |pages: u64| estimate::transfer_ms(pages * PAGE, 1e9);
        let chunk = estimate::transfer_ms(FIRST_CHUNK_BYTES, 1e9);
        queue(&mut c, 1, 1, 0.0);
        let a = run(&mut c, 0.0);
        assert!((a.predicted_ms - (ms(100) + chunk)).abs() < 1e-6, "alone on the link: {}", a.predicted_ms);
        queue(&mut c, 2, 2, 0.0);
        let b = run(&mut c, 0.0);
        assert_eq!((b.device, b.swap), (1, Some(SwapSource::Host)));
        // Processor sharing: b's 20 pages and as much of a's go at the link's rate together.
        assert!((b.predicted_ms - (2.0 * ms(20) + chunk)).abs() < 1e-6, "shared: {}", b.predicted_ms);
        let a_now = c.devices[0].job.as_ref().unwrap();
        assert!((a_now.host_copy_until.unwrap() - (ms(100) + ms(20))).abs() < 1e-6, "a is delayed by b's bytes");
        assert!((a_now.ends_at - (ms(100) + ms(20))).abs() < 1e-6);
    }

    #[test]
    fn faaswap_keeps_a_copy_off_a_link_where_it_would_make_another_job_late() {
        for (a_deadline, waits) in [(120.0, true), (1000.0, false)] {
            let mut c = cluster(PolicyKind::Faaswap, 2, 200, |_, _| None);
            c.add_function(1, FunctionSpec { deadline_ms: a_deadline, ..spec("a", 100, 1.0, ModelClass::Heavy) })
                .unwrap();
            c.add_function(2, FunctionSpec { deadline_ms: 1000.0, ..spec("b", 20, 10.0, ModelClass::Light) }).unwrap();
            queue(&mut c, 1, 1, 0.0);
            assert_eq!(run(&mut c, 0.0).device, 0); // ~107 ms: within 120 alone, not with b beside it
            queue(&mut c, 2, 2, 1.0);
            match c.next_dispatch(1.0) {
                None => assert!(waits, "b waits for device 0 although device 1 is idle"),
                Some(Decision::Run(d)) => {
                    assert!(!waits, "b ran on device {} and made a late", d.device);
                    assert_eq!(d.device, 1);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn faaswap_evicts_to_meet_a_deadline_when_waiting_would_miss_it() {
        // Device 0 is full with `v`, which reloads too slowly for its own 10 ms deadline (each
        // eviction of it costs a likely miss later); device 1 has room but runs a 500 ms job.
        let mut c = cluster(PolicyKind::Faaswap, 2, 10, |_, _| None);
        c.add_function(1, FunctionSpec { deadline_ms: 10.0, ..spec("v", 10, 1.0, ModelClass::Light) }).unwrap();
        c.add_function(2, FunctionSpec { deadline_ms: 1000.0, ..spec("w", 2, 500.0, ModelClass::Light) }).unwrap();
        c.add_function(3, spec("f", 5, 1.0, ModelClass::Light)).unwrap();
        queue(&mut c, 1, 1, 0.0);
        assert_eq!(run(&mut c, 0.0).device, 0);
        c.complete(0);
        // Established (loaded two minutes ago) and asked for about once every ten seconds.
        let t = 121_000.0;
        for k in 0..6u64 {
            queue(&mut c, 10 + k, 1, t + k as f64);
            assert_eq!(run(&mut c, t + k as f64).swap, None);
            c.complete(0);
        }
        queue(&mut c, 20, 2, t + 10.0);
        assert_eq!(run(&mut c, t + 10.0).device, 1);
        // Waiting ~500 ms for device 1 misses f's 100 ms deadline for sure; evicting v risks
        // about one of v's later requests: f evicts v.
        queue(&mut c, 21, 3, t + 20.0);
        let d = run(&mut c, t + 20.0);
        assert_eq!((d.device, d.evicted.iter().map(|e| e.0).collect::<Vec<_>>()), (0, vec![1]));
    }

    #[test]
    fn faaswap_serves_strictly_by_deadline_even_past_resident_models() {
        let mut c = cluster(PolicyKind::Faaswap, 1, 20, |_, _| None);
        c.add_function(1, spec("resident", 1, 5.0, ModelClass::Light)).unwrap();
        c.add_function(2, FunctionSpec { deadline_ms: 20.0, ..spec("cold", 5, 1.0, ModelClass::Light) }).unwrap();
        queue(&mut c, 1, 1, 0.0);
        run(&mut c, 0.0);
        c.complete(0);
        queue(&mut c, 2, 1, 1.0); // deadline 101, resident
        queue(&mut c, 3, 2, 2.0); // deadline 22, needs a copy
        let d = run(&mut c, 2.0);
        assert_eq!((d.requests, d.swap), (vec![3], Some(SwapSource::Host)), "the earlier deadline first");
    }

    #[test]
    fn faaswap_evicts_by_reload_cost_and_keeps_one_replica_when_memory_is_tight() {
        // One 40-page device: a heavy model (copy ≫ run) and light ones (copy hides under the run).
        let mut c = cluster(PolicyKind::Faaswap, 1, 40, |_, _| None);
        let heavy = FunctionSpec { deadline_ms: 60.0, ..spec("heavy", 30, 5.0, ModelClass::Heavy) };
        c.add_function(1, heavy).unwrap();
        c.add_function(2, spec("light-a", 5, 50.0, ModelClass::Light)).unwrap();
        c.add_function(3, spec("light-b", 5, 50.0, ModelClass::Light)).unwrap();
        c.add_function(4, spec("light-c", 5, 50.0, ModelClass::Light)).unwrap();
        let mut t = 0.0;
        for (r, f) in [(1, 1), (2, 2), (3, 3), (4, 1), (5, 2), (6, 3)] {
            queue(&mut c, r, f, t);
            run(&mut c, t);
            c.complete(0);
            t += 100.0;
        }
        queue(&mut c, 7, 4, t);
        let d = run(&mut c, t);
        assert_eq!(d.evicted.len(), 1);
        assert_ne!(d.evicted[0].0, 1, "the heavy model's reload would miss its deadline: a light one goes");
        assert_eq!(d.evicted[0].1, EvictReason::ReloadCost);
        // Two devices, the second full: no second copy of a model is made by evicting.
        let mut c = cluster(PolicyKind::Faaswap, 2, 10, |_, _| Some(1e12));
        c.add_function(1, spec("a", 10, 10.0, ModelClass::Light)).unwrap();
        c.add_function(2, spec("b", 10, 10.0, ModelClass::Light)).unwrap();
        for (r, f) in [(1, 1), (2, 2)] {
            queue(&mut c, r, f, 0.0);
            run(&mut c, 0.0);
        }
        c.complete(0);
        c.complete(1);
        let holder = c.residency(1)[0];
        queue(&mut c, 3, 1, 1.0);
        run(&mut c, 1.0);
        queue(&mut c, 4, 1, 1.0);
        assert_eq!(c.next_dispatch(1.0), None, "the other device would have to evict b for a replica of a");
        c.complete(holder);
    }

    #[test]
    fn native_binds_at_deploy_and_never_swaps_out() {
        let mut c = cluster(PolicyKind::Native, 2, 4, |_, _| None);
        for f in 1..=5 {
            c.add_function(f, spec(&format!("f{f}"), 2, 1.0, ModelClass::Light)).unwrap();
        }
        // Four fit (two per device), the fifth has no home.
        assert_eq!(c.enqueue(1, 5, 0.0, None), Admission::Rejected(DropReason::NotPlaced));
        queue(&mut c, 2, 1, 0.0);
        let d = run(&mut c, 0.0);
        assert_eq!(d.swap, Some(SwapSource::Host), "the first request loads it");
        assert!(d.evicted.is_empty());
        c.complete(d.device);
        queue(&mut c, 3, 1, 1.0);
        assert_eq!(run(&mut c, 1.0).swap, None);
        queue(&mut c, 4, 1, 1.0);
        assert_eq!(c.next_dispatch(1.0), None, "only its own device, busy");
        assert_eq!(c.snapshot(0).used_bytes + c.snapshot(1).used_bytes, 8 * PAGE);
    }

    #[test]
    fn removing_a_function_frees_its_pages_and_drops_its_queue() {
        let mut c = cluster(PolicyKind::Faaswap, 1, 4, |_, _| None);
        c.add_function(1, spec("a", 3, 1.0, ModelClass::Light)).unwrap();
        queue(&mut c, 1, 1, 0.0);
        run(&mut c, 0.0);
        queue(&mut c, 2, 1, 0.0);
        assert_eq!(c.remove_function(1), (vec![2], vec![]));
        assert_eq!(c.snapshot(0).used_bytes, 3 * PAGE, "still executing: freed on completion");
        c.complete(0);
        assert_eq!(c.snapshot(0).used_bytes, 0);
        assert_eq!(c.enqueue(3, 1, 1.0, None), Admission::Unknown);
    }

    #[test]
    fn the_drain_estimate_counts_the_work_ahead_of_a_full_queue() {
        let mut c = cluster(PolicyKind::Faaswap, 2, 8, |_, _| None);
        c.add_function(1, FunctionSpec { max_batch: 4, ..spec("fast", 1, 10.0, ModelClass::Light) }).unwrap();
        c.add_function(2, spec("slow", 4, 400.0, ModelClass::Light)).unwrap();
        // Both devices busy with slow jobs for 400 ms.
        for r in 0..2 {
            queue(&mut c, r, 2, 0.0);
            run(&mut c, 0.0);
        }
        for r in 2..6 {
            queue(&mut c, r, 2, 0.0);
        }
        for r in 6..14 {
            queue(&mut c, r, 1, 0.0);
        }
        // Ahead of "fast": 2 × 400 ms running, 4 slow requests (4 MB copies at 1 GB/s: 4 ms
        // once), 8 fast ones in 2 batches of 4 (1 MB copy): over 2 devices.
        let fast = 2.0 * estimate::batched_exec_ms(10.0, 4) + 1.0;
        let want = (800.0 + 4.0 * 400.0 + 4.0 + fast) / 2.0;
        let got = c.drain_estimate_ms(1, 0.0);
        assert!((got - want).abs() < 5.0, "{got} vs {want} (copies of MiB pages and first chunks aside)");
        // The fast function's own 8 requests alone would take 2 batches; the slow queue ahead
        // is what it waits for. Later, less is left of the running jobs.
        assert!(got > 1000.0 && c.drain_estimate_ms(1, 300.0) < got);
    }

    #[test]
    fn queues_are_bounded_and_deadlines_only_shorten() {
        let mut c = cluster(PolicyKind::Faaswap, 1, 8, |_, _| None);
        c.cfg.max_queue_per_function = 2;
        c.cfg.max_queue = 3;
        c.add_function(1, spec("a", 1, 10.0, ModelClass::Light)).unwrap();
        c.add_function(2, spec("b", 1, 10.0, ModelClass::Light)).unwrap();
        queue(&mut c, 1, 1, 0.0);
        queue(&mut c, 2, 1, 0.0);
        assert_eq!(c.enqueue(3, 1, 0.0, None), Admission::Rejected(DropReason::Overloaded), "a's queue is full");
        queue(&mut c, 4, 2, 0.0);
        assert_eq!(c.enqueue(5, 2, 0.0, None), Admission::Rejected(DropReason::Overloaded), "the whole queue is full");
        assert_eq!((c.queued(1), c.queued(2), c.queue_len()), (2, 1, 3));
        assert!(c.drain_estimate_ms(1, 0.0) >= 20.0);
        run(&mut c, 0.0);
        assert_eq!(c.queue_len(), 2, "the dispatch frees a place");
        // A request's own deadline may be shorter than the SLO (100 ms), never longer.
        c.complete(0);
        (c.cfg.max_queue_per_function, c.cfg.max_queue) = (10, 10);
        assert_eq!(c.enqueue(6, 2, 50.0, Some(1e9)), Admission::Queued);
        assert_eq!(c.queue.last().map(|q| q.deadline), Some(150.0));
        assert_eq!(c.enqueue(7, 2, 50.0, Some(4.0)), Admission::Queued);
        assert_eq!(c.queue.last().map(|q| (q.deadline, q.window)), Some((54.0, 4.0)));
    }
}
