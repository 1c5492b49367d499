//! What the policies remember about each function's recent requests: SLO hits over a
//! sliding window (for compliance and the paper's required request count), mean latency, and
//! an arrival-rate estimate.

use std::collections::VecDeque;

/// Requests the window remembers (the same length as the SLO tracker's).
pub const WINDOW: usize = super::slo::WINDOW;

/// Time constant of the arrival-rate estimate, milliseconds.
const RATE_TAU_MS: f64 = 60_000.0;

#[derive(Debug, Clone, Default)]
pub struct RequestWindow {
    window: VecDeque<(bool, f64)>,
    hits: usize,
    latency_sum: f64,
    /// Exponentially decayed arrival count and when it was last updated.
    arrivals: f64,
    arrivals_at: f64,
    /// Forgiven after its requests were all refused for a long while (`forgive`).
    probation: bool,
}

impl RequestWindow {
    /// One finished (or dropped: `latency_ms` infinite) request.
    pub fn record(&mut self, latency_ms: f64, deadline_ms: f64) {
        if self.window.len() == WINDOW {
            let (hit, lat) = self.window.pop_front().expect("window is full");
            self.hits -= usize::from(hit);
            self.latency_sum -= lat;
        }
        let hit = latency_ms <= deadline_ms;
        // A miss weighs as twice the deadline in the mean, so one drop does not poison it.
        let lat = if latency_ms.is_finite() { latency_ms } else { 2.0 * deadline_ms };
        self.window.push_back((hit, lat));
        self.hits += usize::from(hit);
        self.latency_sum += lat;
    }

    /// Forgets the window of hits and misses (the arrival rate stays) and puts the function on
    /// probation: until its window is `horizon` requests long again, one miss spends its budget.
    pub fn forgive(&mut self) {
        self.window.clear();
        self.hits = 0;
        self.latency_sum = 0.0;
        self.probation = true;
    }

    pub fn arrived(&mut self, now_ms: f64) {
        self.arrivals = self.decayed(now_ms) + 1.0;
        self.arrivals_at = now_ms;
    }

    fn decayed(&self, now_ms: f64) -> f64 {
        self.arrivals * (-(now_ms - self.arrivals_at).max(0.0) / RATE_TAU_MS).exp()
    }

    /// Estimated arrivals per second.
    pub fn rate_per_s(&self, now_ms: f64) -> f64 {
        self.decayed(now_ms) / (RATE_TAU_MS / 1e3)
    }

    /// Requests in the window, and how many met the deadline.
    pub fn counts(&self) -> (usize, usize) {
        (self.window.len(), self.hits)
    }

    pub fn mean_latency_ms(&self) -> Option<f64> {
        (!self.window.is_empty()).then(|| self.latency_sum / self.window.len() as f64)
    }

    /// Whether the function has spent its miss budget: more misses than the percentile allows
    /// over a full window (at least `horizon` requests), so that misses early in its life do
    /// not count as lost before most of its requests have been seen.
    pub fn lost(&self, percentile: f64, horizon: usize) -> bool {
        let (n, m) = self.counts();
        if self.probation && n < horizon {
            return n > m;
        }
        (n - m) as f64 > ((1.0 - percentile) * n.max(horizon) as f64).floor()
    }

    /// Whether the window's nearest-rank `percentile` latency is within the deadline: at least
    /// ceil(p·n) of the n requests met it. True before any request.
    pub fn compliant(&self, percentile: f64) -> bool {
        let (n, m) = self.counts();
        m >= (percentile * n as f64).ceil() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compliance_counts_hits_against_the_percentile() {
        let mut s = RequestWindow::default();
        assert!(s.compliant(0.98));
        for _ in 0..49 {
            s.record(10.0, 80.0);
        }
        s.record(f64::INFINITY, 80.0);
        // 49 of 50 met it: ceil(0.98 * 50) = 49.
        assert!(s.compliant(0.98));
        s.record(81.0, 80.0);
        assert!(!s.compliant(0.98), "49 of 51 < ceil(49.98)");
        assert_eq!(s.counts(), (51, 49));
        let mean = s.mean_latency_ms().unwrap();
        assert!((mean - (490.0 + 160.0 + 81.0) / 51.0).abs() < 1e-9);
    }

    #[test]
    fn rate_estimate_follows_arrivals() {
        let mut s = RequestWindow::default();
        // One arrival a second for ten minutes: about 1/s.
        for i in 0..600 {
            s.arrived(i as f64 * 1000.0);
        }
        let r = s.rate_per_s(600_000.0);
        assert!((0.95..1.05).contains(&r), "{r}");
        // Ten idle minutes later it has decayed away.
        assert!(s.rate_per_s(1_200_000.0) < 0.01);
    }
}
