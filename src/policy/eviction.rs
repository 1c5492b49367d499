//! Which resident models make room, per policy. Never one that is executing, being copied in,
//! or serving as the source of a peer copy (`Cluster::evictable`); `native` never evicts.

use super::cluster::{Cluster, DeviceId, EvictReason, FunctionId, LOST_HORIZON};
use super::{estimate, ModelClass, PolicyKind};

/// A lost cause (a function already out of its SLO) weighs this much of a compliant one in the
/// reload cost: keeping compliant functions resident concentrates the misses instead of
/// spreading them over every function.
pub(super) const LOST_WEIGHT: f64 = 0.05;

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
pub(super) const MISS_COST_MS: f64 = 1000.0;

/// `faaswap`'s value of keeping each evictable model of device `i` (other than `f`), per page:
/// arrivals per second × the latency its reload would add (ms) × the compliance weight; an
/// extra replica (ready elsewhere) is worth nothing.
pub(super) fn ranked(c: &Cluster, i: DeviceId, f: FunctionId, now: f64) -> Vec<(FunctionId, f64)> {
    let d = &c.devices[i];
    let running = d.job.as_ref().map(|j| j.function);
    let native = c.cfg.policy == PolicyKind::Native;
    d.resident
        .iter()
        .filter(|&(&v, r)| v != f && r.pins == 0 && running != Some(v))
        .filter_map(|(&v, r)| {
            // One lookup per model: this runs for every resident model of every candidate.
            let Some(func) = c.functions.get(&v) else {
                return Some((v, 0.0));
            };
            if native {
                return None;
            }
            if func.ready_mask & !(1 << i) != 0 {
                return Some((v, 0.0));
            }
            let s = &func.spec;
            // A reload usually shares the link: the chance it makes the request miss its
            // deadline, from its latency at half the link against the deadline, plus (small) the
            // link time it takes from everyone else's copies.
            let swap = estimate::transfer_ms(s.bytes, d.host_bw / 2.0);
            let chunk = estimate::transfer_ms(estimate::FIRST_CHUNK_BYTES.min(s.bytes), d.host_bw);
            let reloaded = estimate::job_ms(Some(swap), chunk, s.exec_ms);
            let p_miss = ((reloaded / s.deadline_ms - 0.5) * 2.0).clamp(0.0, 1.0);
            let link = LINK_WEIGHT * estimate::transfer_ms(s.bytes, d.host_bw);
            let extra = p_miss * MISS_COST_MS;
            let mut weight = if func.stats.lost(s.percentile, LOST_HORIZON) { LOST_WEIGHT } else { 1.0 };
            if now - r.loaded_at < YOUNG_MS {
                weight *= YOUNG_WEIGHT;
            }
            Some((v, func.stats.rate_per_s(now) * (extra + link) * weight / r.extent.pages as f64))
        })
        .collect()
}

/// A device's eviction candidates with their per-page values, cheapest first.
pub(super) type Ranking = Vec<(FunctionId, f64)>;

/// `ranked`, cheapest first (ties by function id: deterministic).
pub(super) fn ranked_sorted(c: &Cluster, i: DeviceId, f: FunctionId, now: f64) -> Ranking {
    let mut r = ranked(c, i, f, now);
    r.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    r
}

/// Victims, in order, whose eviction lets device `i` allocate `pages` contiguous pages for
/// `f`; `None` when even evicting every evictable model would not.
pub(super) fn plan(
    c: &Cluster,
    i: DeviceId,
    f: FunctionId,
    pages: usize,
    now: f64,
    ranking: Option<Ranking>,
) -> Option<Vec<(FunctionId, EvictReason)>> {
    let d = &c.devices[i];
    if d.pool.can_alloc(pages) {
        return Some(Vec::new());
    }
    let replica = |v: FunctionId| c.ready_elsewhere(i, v) != 0;
    let mut order: Vec<(FunctionId, EvictReason, (u8, f64))> = match c.cfg.policy {
        PolicyKind::Native => Vec::new(),
        PolicyKind::SimpleSwap => candidates(c, i, f).map(|(v, last)| (v, EvictReason::Lru, (0, last))).collect(),
        PolicyKind::Torpor => candidates(c, i, f)
            .map(|(v, last)| {
                let class = c.functions.get(&v).map_or(ModelClass::Light, |x| x.spec.class);
                match (replica(v), class) {
                    (true, _) => (v, EvictReason::Replica, (0, last)),
                    (false, ModelClass::Light) => (v, EvictReason::Class, (1, last)),
                    (false, ModelClass::Medium) => (v, EvictReason::Class, (2, last)),
                    (false, ModelClass::Heavy) => (v, EvictReason::Lru, (3, last)),
                }
            })
            .collect(),
        PolicyKind::Faaswap => ranking
            .unwrap_or_else(|| ranked(c, i, f, now))
            .into_iter()
            .map(|(v, value)| {
                let reason = if replica(v) { EvictReason::Replica } else { EvictReason::ReloadCost };
                (v, reason, (0, value))
            })
            .collect(),
    };
    order.sort_by(|a, b| a.2 .0.cmp(&b.2 .0).then(a.2 .1.total_cmp(&b.2 .1)).then(a.0.cmp(&b.0)));
    let mut pool = d.pool.clone();
    let mut victims = Vec::new();
    let mut next = order.into_iter();
    while pool.alloc(pages).is_none() {
        let (v, reason, _) = next.next()?;
        pool.free(d.resident[&v].extent);
        victims.push((v, reason));
    }
    Some(victims)
}

/// Evictable models of device `i` other than `f`, with when they were last used.
fn candidates(c: &Cluster, i: DeviceId, f: FunctionId) -> impl Iterator<Item = (FunctionId, f64)> + '_ {
    c.devices[i].resident.iter().filter(move |&(&v, r)| v != f && c.evictable(i, v, r)).map(|(&v, r)| (v, r.last_used))
}
