//! `torpor`: the FaaSwap/Torpor paper's policy. Queue order: each function's "required request
//! count" — how many consecutive requests must meet the deadline for it to reach its SLO
//! percentile — weighted by its mean latency, split into a high and a low priority group at an
//! adaptive threshold, recomputed every 2 s. Placement: an idle device holding the model, else
//! the fastest peer copy, else a host copy to a device whose PCIe neighbours are not copying,
//! else any idle device with room. Eviction: extra replicas, then light, medium, heavy models
//! (least recently used within each). One job of a function at a time.

use std::collections::BTreeSet;

use super::{candidates, sorted, Choice};
use crate::policy::cluster::{DeviceId, EvictReason, Func, FunctionId, State};
use crate::policy::{ModelClass, SwapSource};

/// Seconds between recomputations of the groups.
pub const UPDATE_MS: f64 = 2000.0;
/// Updates between threshold adaptations.
pub const ADAPT_EVERY: usize = 20;

/// RRC = (p·n − m)/(1 − p): with n requests of which m met the deadline, the number x of
/// further hits that make (m + x)/(n + x) reach p. Never negative.
pub fn rrc(p: f64, n: usize, m: usize) -> f64 {
    if p >= 1.0 {
        return if m < n { f64::INFINITY } else { 0.0 };
    }
    ((p * n as f64 - m as f64) / (1.0 - p)).max(0.0)
}

/// The adaptive threshold between the two groups, on scores normalised to [0, 1].
#[derive(Debug, Clone)]
pub struct Threshold {
    pub value: f64,
    updates: usize,
    /// Compliance at the last adaptation.
    reference: Option<f64>,
}

impl Default for Threshold {
    fn default() -> Self {
        Self { value: 0.5, updates: 0, reference: None }
    }
}

impl Threshold {
    /// One update with the fraction of functions now compliant; every `ADAPT_EVERY` updates the
    /// threshold doubles when compliance rose by 4 points or more, halves when it fell by more
    /// than 4, else grows by 1%, and never exceeds 1.
    pub fn update(&mut self, compliance: f64) {
        self.updates += 1;
        if !self.updates.is_multiple_of(ADAPT_EVERY) {
            return;
        }
        let factor = match self.reference {
            Some(before) if compliance - before >= 0.04 => 2.0,
            Some(before) if before - compliance > 0.04 => 0.5,
            _ => 1.01,
        };
        self.value = (self.value * factor).min(1.0);
        self.reference = Some(compliance);
    }
}

#[derive(Debug, Default)]
pub struct Torpor {
    threshold: Threshold,
    /// Functions in the high-priority group.
    high: BTreeSet<FunctionId>,
    last_update: Option<f64>,
}

impl Torpor {
    pub fn forget(&mut self, id: FunctionId) {
        self.high.remove(&id);
    }

    /// The threshold and the high-priority group's size.
    pub fn groups(&self) -> (f64, usize) {
        (self.threshold.value, self.high.len())
    }

    /// Every 2 s, recompute the groups and adapt the threshold.
    pub fn update_groups(&mut self, s: &State, now: f64) {
        if self.last_update.is_some_and(|t| now - t < UPDATE_MS) {
            return;
        }
        self.last_update = Some(now);
        let seen: Vec<&Func> = s.functions.values().filter(|f| f.stats.counts().0 > 0).collect();
        let compliance = if seen.is_empty() {
            1.0
        } else {
            seen.iter().filter(|f| f.stats.compliant(f.spec.percentile)).count() as f64 / seen.len() as f64
        };
        self.threshold.update(compliance);
        let scores: Vec<(FunctionId, f64)> = s
            .functions
            .iter()
            .map(|(&id, f)| {
                let (n, m) = f.stats.counts();
                (id, rrc(f.spec.percentile, n, m) * f.stats.mean_latency_ms().unwrap_or(0.0))
            })
            .collect();
        let max = scores.iter().map(|s| s.1).fold(0.0, f64::max);
        self.high =
            scores.into_iter().filter(|&(_, s)| s > 0.0 && s / max >= self.threshold.value).map(|(id, _)| id).collect();
    }

    /// The high-priority group first, each group in arrival order.
    pub fn order(&self, s: &State) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..s.queue.len()).collect();
        idx.sort_by_key(|&i| !self.high.contains(&s.queue[i].function));
        idx
    }

    /// The paper's order: an idle device holding the model; else the idle device with the
    /// fastest peer link from one holding it; else a host copy to an idle device whose PCIe
    /// neighbours are not copying from the host; else (light models first, then any) any idle
    /// device with room.
    pub fn choose(&self, s: &State, f: FunctionId, now: f64) -> Choice {
        if let Some(d) = s.idle().find(|&i| s.ready_on(i, f)) {
            return Choice::Run { device: d, swap: None, ranking: None };
        }
        let fits: Vec<DeviceId> = s.idle().filter(|&i| s.can_fit(i, f)).collect();
        let holders: Vec<DeviceId> = (0..s.devices.len()).filter(|&j| s.ready_on(j, f)).collect();
        let mut best: Option<(f64, DeviceId, DeviceId)> = None;
        for &i in &fits {
            for &j in &holders {
                if let Some(bw) = s.devices[i].peers.get(j).copied().flatten() {
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
            let group = s.devices[i].group;
            s.devices.iter().enumerate().all(|(j, d)| {
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
}

/// Replicas first, then light, medium and heavy models, each least recently used first.
pub fn victims(s: &State, i: DeviceId, f: FunctionId) -> Vec<(FunctionId, EvictReason)> {
    let order = candidates(s, i, f)
        .map(|(v, last)| {
            let class = s.functions.get(&v).map_or(ModelClass::Light, |x| x.spec.class);
            match (s.ready_elsewhere(i, v) != 0, class) {
                (true, _) => (v, EvictReason::Replica, (0, last)),
                (false, ModelClass::Light) => (v, EvictReason::Class, (1, last)),
                (false, ModelClass::Medium) => (v, EvictReason::Class, (2, last)),
                (false, ModelClass::Heavy) => (v, EvictReason::Lru, (3, last)),
            }
        })
        .collect();
    sorted(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrc_arithmetic() {
        // p98 with 100 requests, 95 hits: (98 − 95)/0.02 = 150 more hits needed.
        assert!((rrc(0.98, 100, 95) - 150.0).abs() < 1e-9);
        assert_eq!(rrc(0.98, 100, 100), 0.0, "already compliant");
        assert_eq!(rrc(0.98, 0, 0), 0.0);
        // The definition: after those 150 hits, (95 + 150)/(100 + 150) = 0.98, nothing more needed.
        assert!(rrc(0.98, 250, 245).abs() < 1e-9);
        assert_eq!(rrc(1.0, 3, 2), f64::INFINITY);
    }

    /// One adaptation period at `compliance`.
    fn period(t: &mut Threshold, compliance: f64) {
        for _ in 0..ADAPT_EVERY {
            t.update(compliance);
        }
    }

    #[test]
    fn threshold_adapts_every_twenty_updates() {
        let mut t = Threshold::default();
        for _ in 0..19 {
            t.update(0.5);
        }
        assert_eq!(t.value, 0.5, "no adaptation before the 20th update");
        t.update(0.5);
        assert!((t.value - 0.505).abs() < 1e-12, "first adaptation has no reference: ×1.01");
        period(&mut t, 0.56);
        assert!((t.value - 1.0).abs() < 1e-12, "rose 6 points: ×2, capped at 1");
        period(&mut t, 0.50);
        assert!((t.value - 0.5).abs() < 1e-12, "fell 6 points: ÷2");
        period(&mut t, 0.47);
        assert!((t.value - 0.505).abs() < 1e-12, "fell 3 points: ×1.01");
        period(&mut t, 0.51);
        assert_eq!(t.value, 1.0, "rose 4 points: ×2, capped at 1");
    }
}
