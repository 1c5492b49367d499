//! The queue of waiting requests: admission (bounded per function and in all), the deadline
//! each request is given, shedding, and the drain estimate behind `Retry-After`.

use super::{Cluster, Decision, DeviceId, DropReason, Func, FunctionId, Queued, RequestId, State};
use crate::policy::estimate;

/// What `enqueue` did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Queued,
    Rejected(DropReason),
    /// Not registered (e.g. undeployed while the request was on its way).
    Unknown,
}

impl Cluster {
    /// Queues a request arriving at `now` with `deadline_ms` to run (the function's SLO deadline
    /// when `None`).
    pub fn enqueue(
        &mut self,
        request: RequestId,
        function: FunctionId,
        now: f64,
        deadline_ms: Option<f64>,
    ) -> Admission {
        let (max_per_function, max_queue, queued) =
            (self.s.cfg.max_queue_per_function, self.s.cfg.max_queue, self.s.queue.len());
        let Some(f) = self.s.functions.get_mut(&function) else {
            return Admission::Unknown;
        };
        f.stats.arrived(now);
        if self.policy.refuses_unbound() && f.bound.is_none() {
            f.stats.record(f64::INFINITY, f.spec.deadline_ms);
            return Admission::Rejected(DropReason::NotPlaced);
        }
        if f.queued >= max_per_function || queued >= max_queue {
            return Admission::Rejected(DropReason::Overloaded);
        }
        f.queued += 1;
        // A request may ask for less time than its function's SLO, never more.
        let window = deadline_ms.map_or(f.spec.deadline_ms, |d| d.min(f.spec.deadline_ms));
        self.s.queue.push(Queued { request, function, deadline: now + window, window });
        Admission::Queued
    }

    pub fn queued(&self, function: FunctionId) -> usize {
        self.s.functions.get(&function).map_or(0, |f| f.queued)
    }

    pub fn queue_len(&self) -> usize {
        self.s.queue.len()
    }

    /// How long until the function's queue is likely to have drained, ms (for `Retry-After`):
    /// the work ahead — what the devices run now, and every queued request at its own
    /// function's profiled time, in batches of its `max_batch`, with a copy from the host for a
    /// function resident nowhere — spread over the healthy devices; or the function's own
    /// queue run back to back, when that is longer.
    pub fn drain_estimate_ms(&self, function: FunctionId, now: f64) -> f64 {
        let s = &self.s;
        let Some(f) = s.functions.get(&function) else { return 0.0 };
        let link = s.devices.iter().map(|d| d.host_bw).fold(0.0, f64::max);
        let work = |func: &Func, n: usize| {
            let b = func.spec.max_batch.max(1);
            let rest = if n.is_multiple_of(b) { 0.0 } else { estimate::batched_exec_ms(func.spec.exec_ms, n % b) };
            let batches = (n / b) as f64 * estimate::batched_exec_ms(func.spec.exec_ms, b) + rest;
            let copy = if func.ready_mask == 0 { estimate::transfer_ms(func.spec.bytes, link) } else { 0.0 };
            batches + copy
        };
        let running: f64 = s.devices.iter().filter_map(|d| d.job.as_ref()).map(|j| (j.ends_at - now).max(0.0)).sum();
        let queued: f64 = s.functions.values().filter(|g| g.queued > 0).map(|g| work(g, g.queued)).sum();
        let healthy = s.devices.iter().filter(|d| d.healthy).count().max(1) as f64;
        ((running + queued) / healthy).max(work(f, f.queued))
    }
}

impl State {
    /// Drops the request at queue index `qi`: no device can finish it in time.
    pub(super) fn shed(&mut self, qi: usize, now: f64) -> Decision {
        let q = self.queue.remove(qi);
        if let Some(f) = self.functions.get_mut(&q.function) {
            f.queued -= 1;
            f.refused_since.get_or_insert(now);
            // A miss of the function's SLO only when it was the request's deadline: one the
            // client shortened is the client's, or a client could spend the function's miss
            // budget for everyone.
            if q.window >= f.spec.deadline_ms {
                f.stats.record(f64::INFINITY, f.spec.deadline_ms);
            }
        }
        Decision::Drop { requests: vec![q.request], function: q.function, reason: DropReason::Unmeetable }
    }

    /// Idle devices, by index.
    pub fn idle(&self) -> impl Iterator<Item = DeviceId> + '_ {
        (0..self.devices.len()).filter(|&i| self.devices[i].idle())
    }
}
