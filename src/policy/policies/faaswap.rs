//! `faaswap`: ours. Requests strictly by deadline (functions past their miss budget last). A
//! request runs where it is predicted to finish first — wait until the device is free, plus the
//! copy (from the host, sharing the link with the copies on it, or from the fastest peer), plus
//! the profiled execution, pipelined — with penalties for what the choice costs others: the
//! expected reload cost of what it would evict, the delay its copy adds to the copies on its
//! link (more when that makes their jobs late), and a miss when it would end past its own
//! deadline. Requests of one function batch (up to `max_batch`). Victims go by expected reload
//! cost per page. With shedding, requests predicted late are refused, and a function past its
//! miss budget is not copied in from the host — until all its requests have been refused for
//! longer than its SLO window, so that no function is refused for good.

use super::{sorted, Choice, Ranking};
use crate::policy::cluster::{DeviceId, EvictReason, FunctionId, State};
use crate::policy::{estimate, SwapSource};

/// Requests over which a function's miss budget is counted before its window is that long.
pub(in crate::policy) const LOST_HORIZON: usize = 250;

/// The longest a function's requests are all refused before one runs however late (`starved`).
const MAX_REFUSED_MS: f64 = 600_000.0;

/// How far ahead, in seconds, an eviction's expected reload cost is counted against a device.
const EVICTION_HORIZON_S: f64 = 10.0;

/// Milliseconds of predicted completion a device's recent load (0–1) is worth.
const LOAD_WEIGHT_MS: f64 = 20.0;

/// How far past its deadline (as a fraction of the SLO) a compliant function's request must be
/// predicted to finish before it is shed: the prediction is an estimate.
const SHED_MARGIN: f64 = 0.25;

/// Milliseconds of predicted completion it costs to push a job on the same link past its
/// deadline.
const PUSHED_LATE_MS: f64 = 100.0;

/// A lost cause (a function already out of its SLO) weighs this much of a compliant one in the
/// reload cost: keeping compliant functions resident concentrates the misses instead of
/// spreading them over every function.
const LOST_WEIGHT: f64 = 0.05;

/// A copy made less than this long ago (ms) is worth `YOUNG_WEIGHT` of an established one: when
/// memory cannot hold every heavy model, the one just copied in for a request goes again before
/// a long-resident one, so the models that rotate through the spare room are few and the rest
/// stay resident (and compliant).
const YOUNG_MS: f64 = 120_000.0;
const YOUNG_WEIGHT: f64 = 0.1;

/// How much of a reload's link time counts against keeping a model off the device: the copy
/// slows every other copy on the link while it runs.
const LINK_WEIGHT: f64 = 0.1;

/// What a missed deadline costs, in the same unit as link time (ms).
const MISS_COST_MS: f64 = 1000.0;

#[derive(Debug)]
pub struct Faaswap;

impl Faaswap {
    /// Strictly by deadline, functions past their miss budget last (ties by arrival).
    pub fn order(&self, s: &State) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..s.queue.len()).collect();
        idx.sort_by(|&a, &b| {
            let key = |i: usize| {
                let q = &s.queue[i];
                (lost(s, q.function), q.deadline)
            };
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(a.cmp(&b))
        });
        idx
    }

    /// A request of `f` runs: a starved function is forgiven.
    pub fn dispatching(&self, s: &mut State, f: FunctionId, now: f64) {
        if starved(s, f, now) {
            s.functions.get_mut(&f).expect("queued functions are registered").stats.forgive();
        }
    }

    /// `deadline` is the request's (absolute), `window` the time it was given.
    pub fn choose(&self, s: &State, f: FunctionId, now: f64, deadline: f64, window: f64) -> Choice {
        let spec = &s.functions[&f].spec;
        let lost = lost(s, f);
        // Missing this request's deadline costs what the eviction penalties count a reload's miss.
        let miss_weight = if lost { LOST_WEIGHT } else { 1.0 };
        let own_miss = |end: f64| if end > deadline { MISS_COST_MS * miss_weight } else { 0.0 };
        // Every device's score without the eviction penalty (the costly part), then penalties
        // only for devices that can still win, best first: penalties are never negative.
        let mut candidates: Vec<(f64, f64, DeviceId, Option<SwapSource>, bool)> = Vec::with_capacity(s.devices.len());
        for i in 0..s.devices.len() {
            let d = &s.devices[i];
            if !d.healthy {
                continue;
            }
            let start = d.job.as_ref().map_or(now, |j| j.ends_at.max(now));
            let loading_here = d.job.as_ref().is_some_and(|j| j.function == f);
            let load = LOAD_WEIGHT_MS * d.recent_load(now);
            if s.ready_on(i, f) || (loading_here && d.resident.contains_key(&f)) {
                let end = start + spec.exec_ms;
                candidates.push((end + load + own_miss(end), end, i, None, false));
                continue;
            }
            if !s.can_fit(i, f) {
                continue;
            }
            // At most one replica of a model when memory is tight: a second copy only into free
            // pages.
            let holders = s.ready_elsewhere(i, f);
            let free = d.pool.free_pages() >= d.pool.pages_for(spec.bytes);
            if holders != 0 && !free {
                continue;
            }
            let (host_ms, delays) = s.host_copy(i, start, spec.bytes);
            let mut swap = (host_ms, SwapSource::Host, d.host_bw);
            for j in 0..s.devices.len() {
                if holders & (1 << j) != 0 {
                    if let Some(bw) = d.peers.get(j).copied().flatten() {
                        let t = estimate::transfer_ms(spec.bytes, bw);
                        if t < swap.0 {
                            swap = (t, SwapSource::Peer(j), bw);
                        }
                    }
                }
            }
            let chunk = estimate::transfer_ms(estimate::FIRST_CHUNK_BYTES.min(spec.bytes), swap.2);
            let end = start + estimate::job_ms(Some(swap.0), chunk, spec.exec_ms);
            let mut penalty = load;
            if swap.1 == SwapSource::Host {
                penalty += link_harm(s, &delays);
            }
            candidates.push((end + penalty + own_miss(end), end, i, Some(swap.1), d.job.is_none() && !free));
        }
        candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.2.cmp(&b.2)));
        let mut best: Option<(f64, f64, DeviceId, Option<SwapSource>)> = None;
        let mut best_ranking = None;
        for (base, end, i, swap, evicts) in candidates {
            if best.is_some_and(|(s, ..)| base >= s) {
                break;
            }
            let (penalty, ranking) = if evicts { eviction_penalty(s, i, f, now) } else { (0.0, None) };
            if best.is_none_or(|(s, ..)| base + penalty < s) {
                best = Some((base + penalty, end, i, swap));
                best_ranking = ranking;
            }
        }
        let shed = s.cfg.shed;
        match best {
            None => Choice::Wait,
            // Shed what is predicted late: any late request of a function that has spent its
            // miss budget, and clearly late ones (by a quarter of the time they were given) of
            // the others.
            Some((_, end, _, _)) if shed && end > deadline && (lost || end > deadline + SHED_MARGIN * window) => {
                Choice::Shed
            }
            // A function that has spent its miss budget is not copied in from the host while
            // shedding: its misses cost nothing more, the copy would slow everyone on the link —
            // unless all its requests have been refused for longer than its SLO window: then one
            // that can make its deadline runs (and the function is judged afresh), so that no
            // function is refused for good.
            Some((_, _, _, Some(SwapSource::Host))) if shed && lost && !starved(s, f, now) => Choice::Shed,
            Some((_, _, device, _)) if s.devices[device].job.is_some() => Choice::Wait,
            Some((_, _, device, swap)) => Choice::Run { device, swap, ranking: best_ranking },
        }
    }
}

/// Whether the function has spent its miss budget (it is then served last and evicted first,
/// concentrating misses instead of spreading them).
fn lost(s: &State, function: FunctionId) -> bool {
    s.functions.get(&function).is_some_and(|f| f.stats.lost(f.spec.percentile, LOST_HORIZON))
}

/// Whether every request of the function has been refused for longer than its SLO window in
/// time — the time its last `LOST_HORIZON` requests take at its arrival rate, at least
/// `max(1 s, its deadline)` and at most `MAX_REFUSED_MS`. A request of it that can make its
/// deadline then runs although the function is lost, and that one's dispatch forgives it (its
/// window, made of refusals by then, starts afresh, on probation: one miss and it is lost
/// again), so that refusing is never permanent.
fn starved(s: &State, function: FunctionId, now: f64) -> bool {
    s.functions.get(&function).is_some_and(|f| {
        let window = (LOST_HORIZON as f64 / f.stats.rate_per_s(now).max(1e-9) * 1e3)
            .clamp(f.spec.deadline_ms.max(1000.0), MAX_REFUSED_MS);
        f.refused_since.is_some_and(|t| now - t > window)
    })
}

/// What a host copy costs the copies already on its link: the delay it adds to each, and
/// `PUSHED_LATE_MS` for each job it would push past its deadline.
fn link_harm(s: &State, delays: &[(DeviceId, f64)]) -> f64 {
    delays
        .iter()
        .map(|&(j, delay)| {
            let late =
                s.devices[j].job.as_ref().is_some_and(|r| r.ends_at <= r.deadline && r.ends_at + delay > r.deadline);
            delay + if late { PUSHED_LATE_MS } else { 0.0 }
        })
        .sum()
}

/// Expected extra latency, over the eviction horizon, caused by what device `i` would evict to
/// take `f`, with the device's eviction candidates cheapest first (for the eviction plan).
fn eviction_penalty(s: &State, i: DeviceId, f: FunctionId, now: f64) -> (f64, Option<Ranking>) {
    let d = &s.devices[i];
    let need = d.pool.pages_for(s.functions[&f].spec.bytes);
    let free = d.pool.free_pages();
    if free >= need {
        return (0.0, None);
    }
    let victims = ranked_sorted(s, i, f, now);
    let (mut have, mut cost) = (free, 0.0);
    for &(v, per_page) in &victims {
        if have >= need {
            break;
        }
        let pages = d.resident[&v].extent.pages;
        have += pages;
        cost += per_page * pages as f64;
    }
    (cost * EVICTION_HORIZON_S, Some(victims))
}

/// The value of keeping each evictable model of device `i` (other than `f`), per page:
/// arrivals per second × the latency its reload would add (ms) × the compliance weight; an
/// extra replica (ready elsewhere) is worth nothing.
fn ranked(s: &State, i: DeviceId, f: FunctionId, now: f64) -> Vec<(FunctionId, f64)> {
    let d = &s.devices[i];
    let running = d.job.as_ref().map(|j| j.function);
    d.resident
        .iter()
        .filter(|&(&v, r)| v != f && r.pins == 0 && running != Some(v))
        .map(|(&v, r)| {
            // One lookup per model: this runs for every resident model of every candidate.
            let Some(func) = s.functions.get(&v) else {
                return (v, 0.0);
            };
            if func.ready_mask & !(1 << i) != 0 {
                return (v, 0.0);
            }
            let spec = &func.spec;
            // A reload usually shares the link: the chance it makes the request miss its
            // deadline, from its latency at half the link against the deadline, plus (small) the
            // link time it takes from everyone else's copies.
            let swap = estimate::transfer_ms(spec.bytes, d.host_bw / 2.0);
            let chunk = estimate::transfer_ms(estimate::FIRST_CHUNK_BYTES.min(spec.bytes), d.host_bw);
            let reloaded = estimate::job_ms(Some(swap), chunk, spec.exec_ms);
            let p_miss = ((reloaded / spec.deadline_ms - 0.5) * 2.0).clamp(0.0, 1.0);
            let link = LINK_WEIGHT * estimate::transfer_ms(spec.bytes, d.host_bw);
            let extra = p_miss * MISS_COST_MS;
            let mut weight = if func.stats.lost(spec.percentile, LOST_HORIZON) { LOST_WEIGHT } else { 1.0 };
            if now - r.loaded_at < YOUNG_MS {
                weight *= YOUNG_WEIGHT;
            }
            (v, func.stats.rate_per_s(now) * (extra + link) * weight / r.extent.pages as f64)
        })
        .collect()
}

/// `ranked`, cheapest first (ties by function id: deterministic).
fn ranked_sorted(s: &State, i: DeviceId, f: FunctionId, now: f64) -> Ranking {
    let mut r = ranked(s, i, f, now);
    r.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    r
}

/// Cheapest reload cost first; an extra replica is a `replica` eviction.
pub fn victims(
    s: &State,
    i: DeviceId,
    f: FunctionId,
    now: f64,
    ranking: Option<Ranking>,
) -> Vec<(FunctionId, EvictReason)> {
    let order = ranking
        .unwrap_or_else(|| ranked(s, i, f, now))
        .into_iter()
        .map(|(v, value)| {
            let reason = if s.ready_elsewhere(i, v) != 0 { EvictReason::Replica } else { EvictReason::ReloadCost };
            (v, reason, (0, value))
        })
        .collect();
    sorted(order)
}
