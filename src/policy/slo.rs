//! SLO compliance of one function: the observed latency at the SLO's percentile over a
//! sliding window of recent requests, against the deadline.

use std::collections::VecDeque;

use serde::Serialize;

/// Requests the window remembers.
pub const WINDOW: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct SloTracker {
    window: VecDeque<f64>,
}

/// What the tracker says about a function now.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SloStatus {
    pub deadline_ms: f64,
    pub percentile: f64,
    /// Latency at `percentile` over the window (`None` before any request).
    pub observed_ms: Option<f64>,
    pub compliant: bool,
    pub window: usize,
}

impl SloTracker {
    /// Records one request's latency; a request that failed on the server's side (not for bad
    /// input) counts as infinitely late.
    pub fn record(&mut self, latency_ms: f64) {
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(latency_ms);
    }

    /// Nearest-rank percentile of the window.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        if self.window.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = self.window.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        Some(v[rank - 1])
    }

    pub fn status(&self, deadline_ms: f64, percentile: f64) -> SloStatus {
        let observed_ms = self.percentile(percentile);
        SloStatus {
            deadline_ms,
            percentile,
            observed_ms: observed_ms.filter(|x| x.is_finite()),
            compliant: observed_ms.is_none_or(|x| x <= deadline_ms),
            window: self.window.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compliance_follows_the_percentile() {
        let mut t = SloTracker::default();
        assert!(t.status(100.0, 0.98).compliant, "no requests yet: nothing violated");
        for _ in 0..98 {
            t.record(10.0);
        }
        t.record(500.0);
        t.record(500.0);
        // 98 of 100 under the deadline: p98 is 10 ms.
        assert_eq!(t.percentile(0.98), Some(10.0));
        assert!(t.status(100.0, 0.98).compliant);
        t.record(f64::INFINITY);
        let s = t.status(100.0, 0.98);
        assert!(!s.compliant);
        assert_eq!(s.observed_ms, Some(500.0));
        assert!(t.status(100.0, 0.5).compliant);
    }

    #[test]
    fn the_window_forgets_old_requests() {
        let mut t = SloTracker::default();
        for _ in 0..WINDOW {
            t.record(1000.0);
        }
        for _ in 0..WINDOW {
            t.record(1.0);
        }
        assert_eq!(t.percentile(0.99), Some(1.0));
        assert_eq!(t.status(5.0, 0.99).window, WINDOW);
    }
}
