//! Which device runs a request and where its model comes from, per policy.

use super::cluster::{Cluster, DeviceId, FunctionId};
use super::eviction::{self, Ranking};
use super::{estimate, PolicyKind, SwapSource};
use rand::Rng;

pub(super) enum Choice {
    /// Start now on `device` (copying first when `swap` says so); `ranking` is the device's
    /// eviction candidates, cheapest first, when the decision already computed them.
    Run { device: DeviceId, swap: Option<SwapSource>, ranking: Option<Ranking> },
    /// Not now: the right device is busy, or none has room.
    Wait,
    /// It cannot meet its deadline anywhere (faaswap with shedding on).
    Shed,
}

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

/// `deadline` is the request's (absolute), `window` the time it was given.
pub(super) fn choose(c: &mut Cluster, f: FunctionId, now: f64, deadline: f64, window: f64) -> Choice {
    match c.cfg.policy {
        PolicyKind::Native => native(c, f),
        PolicyKind::SimpleSwap => simpleswap(c, f),
        PolicyKind::Torpor => torpor(c, f, now),
        PolicyKind::Faaswap => faaswap(c, f, now, deadline, window),
    }
}

fn idle(c: &Cluster) -> impl Iterator<Item = DeviceId> + '_ {
    (0..c.devices.len()).filter(|&i| c.devices[i].idle())
}

fn run_on(c: &Cluster, device: DeviceId, f: FunctionId, source: SwapSource) -> Choice {
    let swap = (!c.ready_on(device, f)).then_some(source);
    Choice::Run { device, swap, ranking: None }
}

/// Early binding: the function's own device or nothing.
fn native(c: &Cluster, f: FunctionId) -> Choice {
    match c.functions[&f].home {
        Some(d) if c.devices[d].idle() => run_on(c, d, f, SwapSource::Host),
        _ => Choice::Wait,
    }
}

/// A random idle device with room; copies come from the host.
fn simpleswap(c: &mut Cluster, f: FunctionId) -> Choice {
    let fits: Vec<DeviceId> = idle(c).filter(|&i| c.can_fit(i, f)).collect();
    if fits.is_empty() {
        return Choice::Wait;
    }
    let device = fits[c.rng.random_range(0..fits.len())];
    run_on(c, device, f, SwapSource::Host)
}

/// The paper's order: an idle device holding the model; else the idle device with the fastest
/// peer link from one holding it; else a host copy to an idle device whose PCIe neighbours are
/// not copying from the host; else (light models first, then any) any idle device with room.
fn torpor(c: &Cluster, f: FunctionId, now: f64) -> Choice {
    if let Some(d) = idle(c).find(|&i| c.ready_on(i, f)) {
        return Choice::Run { device: d, swap: None, ranking: None };
    }
    let fits: Vec<DeviceId> = idle(c).filter(|&i| c.can_fit(i, f)).collect();
    let holders: Vec<DeviceId> = (0..c.devices.len()).filter(|&j| c.ready_on(j, f)).collect();
    let mut best: Option<(f64, DeviceId, DeviceId)> = None;
    for &i in &fits {
        for &j in &holders {
            if let Some(bw) = c.devices[i].peers.get(j).copied().flatten() {
                if best.is_none_or(|(b, _, _)| bw > b) {
                    best = Some((bw, i, j));
                }
            }
        }
    }
    if let Some((_, device, source)) = best {
        return Choice::Run { device, swap: Some(SwapSource::Peer(source)), ranking: None };
    }
    let quiet_neighbours = |i: DeviceId| {
        let group = c.devices[i].group;
        c.devices.iter().enumerate().all(|(j, d)| {
            j == i || d.group != group || d.job.as_ref().and_then(|r| r.host_copy_until).is_none_or(|t| t <= now)
        })
    };
    if let Some(&device) = fits.iter().find(|&&i| quiet_neighbours(i)) {
        return Choice::Run { device, swap: Some(SwapSource::Host), ranking: None };
    }
    // The paper's last two steps, "else load a light model, else any", pick the same device
    // here: the first idle one with room (a light model first only matters across requests,
    // which the queue order decides).
    match fits.first() {
        Some(&device) => Choice::Run { device, swap: Some(SwapSource::Host), ranking: None },
        None => Choice::Wait,
    }
}

/// Ours: the device where the request is predicted to finish first — wait until the device is
/// free, plus the copy (from the host, sharing the link with the copies already on it, or from
/// the fastest peer holding the model), plus execution, pipelined — with penalties added: the
/// expected reload cost of what it would evict, the delay its copy adds to the copies on its
/// link (more when that makes their jobs late), and a miss when it would end past its own
/// deadline. Waits when the best device is busy.
fn faaswap(c: &Cluster, f: FunctionId, now: f64, deadline: f64, window: f64) -> Choice {
    let spec = &c.functions[&f].spec;
    // Missing this request's deadline costs what the eviction penalties count a reload's miss.
    let miss_weight = if c.lost(f) { eviction::LOST_WEIGHT } else { 1.0 };
    let own_miss = |end: f64| if end > deadline { eviction::MISS_COST_MS * miss_weight } else { 0.0 };
    // Every device's score without the eviction penalty (the costly part), then penalties only
    // for devices that can still win, best first: penalties are never negative.
    let mut candidates: Vec<(f64, f64, DeviceId, Option<SwapSource>, bool)> = Vec::with_capacity(c.devices.len());
    for i in 0..c.devices.len() {
        let d = &c.devices[i];
        if !d.healthy {
            continue;
        }
        let start = d.job.as_ref().map_or(now, |j| j.ends_at.max(now));
        let loading_here = d.job.as_ref().is_some_and(|j| j.function == f);
        let load = LOAD_WEIGHT_MS * d.recent_load(now);
        if c.ready_on(i, f) || (loading_here && d.resident.contains_key(&f)) {
            let end = start + spec.exec_ms;
            candidates.push((end + load + own_miss(end), end, i, None, false));
            continue;
        }
        if !c.can_fit(i, f) {
            continue;
        }
        // At most one replica of a model when memory is tight: a second copy only into free
        // pages.
        let holders = c.ready_elsewhere(i, f);
        let free = d.pool.free_pages() >= d.pool.pages_for(spec.bytes);
        if holders != 0 && !free {
            continue;
        }
        let (host_ms, delays) = c.host_copy(i, start, spec.bytes);
        let mut swap = (host_ms, SwapSource::Host, d.host_bw);
        for j in 0..c.devices.len() {
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
            penalty += link_harm(c, &delays);
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
        let (penalty, ranking) = if evicts { eviction_penalty(c, i, f, now) } else { (0.0, None) };
        if best.is_none_or(|(s, ..)| base + penalty < s) {
            best = Some((base + penalty, end, i, swap));
            best_ranking = ranking;
        }
    }
    match best {
        None => Choice::Wait,
        // Shed what is predicted late: any late request of a function that has spent its miss
        // budget, and clearly late ones (by a quarter of the time they were given) of the others.
        Some((_, end, _, _))
            if c.cfg.shed && end > deadline && (c.lost(f) || end > deadline + SHED_MARGIN * window) =>
        {
            Choice::Shed
        }
        // A function that has spent its miss budget is not copied in from the host while
        // shedding: its misses cost nothing more, the copy would slow everyone on the link —
        // unless all its requests have been refused for longer than its SLO window: then one
        // that can make its deadline runs (and the function is judged afresh), so that no
        // function is refused for good.
        Some((_, _, _, Some(SwapSource::Host))) if c.cfg.shed && c.lost(f) && !c.starved(f, now) => Choice::Shed,
        Some((_, _, device, _)) if c.devices[device].job.is_some() => Choice::Wait,
        Some((_, _, device, swap)) => Choice::Run { device, swap, ranking: best_ranking },
    }
}

/// What a host copy costs the copies already on its link: the delay it adds to each, and
/// `PUSHED_LATE_MS` for each job it would push past its deadline.
fn link_harm(c: &Cluster, delays: &[(DeviceId, f64)]) -> f64 {
    delays
        .iter()
        .map(|&(j, delay)| {
            let late =
                c.devices[j].job.as_ref().is_some_and(|r| r.ends_at <= r.deadline && r.ends_at + delay > r.deadline);
            delay + if late { PUSHED_LATE_MS } else { 0.0 }
        })
        .sum()
}

/// Expected extra latency, over the eviction horizon, caused by what device `i` would evict to
/// take `f`, with the device's eviction candidates cheapest first (for the eviction plan).
fn eviction_penalty(c: &Cluster, i: DeviceId, f: FunctionId, now: f64) -> (f64, Option<Ranking>) {
    let d = &c.devices[i];
    let need = d.pool.pages_for(c.functions[&f].spec.bytes);
    let free = d.pool.free_pages();
    if free >= need {
        return (0.0, None);
    }
    let victims = eviction::ranked_sorted(c, i, f, now);
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
