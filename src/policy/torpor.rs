//! The paper's queue order: each function's "required request count" — how many consecutive
//! requests must meet the deadline for it to reach its SLO percentile — weighted by its mean
//! latency, split into a high and a low priority group at an adaptive threshold.

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
