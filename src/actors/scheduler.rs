//! The scheduler: the global view (a `policy::Cluster`, the same code the simulator runs) and
//! the requests waiting for a device; applies each decision — an execute order to a GPU actor,
//! or an error for a dropped request. It never blocks and never touches a device.
//!
//! `Scheduler` is a cloneable handle over state behind a private lock, so that the two hot
//! events are applied on the thread where they happen, without a hand-off to another thread: a
//! request is queued and placed on the HTTP worker that decoded it (`submit`), and a finished
//! batch is accounted (and the device's next batch dispatched) on the device's own thread
//! (`job_done`). Each hand-off is a wake-up of a sleeping thread, the largest cost of a short
//! job (BENCHMARKS.md). `SchedulerActor` takes what is not per-request — a function registered,
//! its SLO changed, the function retired — as messages from the function actors.
//!
//! Must not know: HTTP, the store, how a device computes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::{Actor, Addr, Context, Handler};

use super::gpu::GpuActor;
use super::messages::{
    DeviceFault, ExecItem, Execute, JobDone, RegisterFunction, Submit, UnregisterFunction, UpdateSlo,
};
use crate::engine::Model;
use crate::events::{Event, EventBus};
use crate::gpu::Job;
use crate::metrics as m;
use crate::policy::cluster::{Admission, DeviceSnapshot, EvictReason};
use crate::policy::{Cluster, Decision, DeviceId, DropReason, FunctionId, RequestId, SwapSource};
use crate::request::{Reply, RuntimeError, Work};

struct Pending {
    name: String,
    work: Work,
    received: Instant,
    reply: Reply,
    retried: bool,
}

/// The scheduler's state, shared by the HTTP workers, the GPU actors and the scheduler actor.
#[derive(Clone)]
pub struct Scheduler {
    core: Arc<Mutex<Core>>,
}

impl Scheduler {
    /// `gpus` are the devices' actors in device order (their mailboxes exist before they run).
    pub fn new(cluster: Cluster, device_ids: Vec<String>, events: EventBus, gpus: Vec<Addr<GpuActor>>) -> Self {
        let core = Core {
            cluster,
            gpus,
            device_ids,
            pending: HashMap::new(),
            next_request: 0,
            epoch: Instant::now(),
            events,
            retired: Vec::new(),
            outbox: Vec::new(),
        };
        Self { core: Arc::new(Mutex::new(core)) }
    }

    /// Runs `f` under the lock, then, after letting go, sends the batches it dispatched and
    /// drops the models of the requests it refused: a send wakes the device's thread (a system
    /// call), and the last reference to a model frees its host weights (and unregisters them
    /// from CUDA); neither may stall everyone waiting for the lock. Sending late cannot reorder
    /// a device's batches: a device gets its next batch only once it has finished the one
    /// before.
    ///
    /// A panic while the lock was held is a bug and may have left a decision half applied; the
    /// state is taken over anyway, because refusing it would fail every later request of every
    /// function, where the damage of a half-applied decision is usually one device or one
    /// request.
    fn with<R>(&self, f: impl FnOnce(&mut Core) -> R) -> R {
        let (result, outbox, retired) = {
            let mut s = self.core.lock().unwrap_or_else(|e| e.into_inner());
            let result = f(&mut s);
            (result, std::mem::take(&mut s.outbox), std::mem::take(&mut s.retired))
        };
        for (gpu, batch) in outbox {
            gpu.do_send(batch);
        }
        drop(retired);
        result
    }

    /// Queues a new request and dispatches (on the caller's thread).
    pub fn submit(&self, msg: Submit) {
        self.with(|core| core.submit(msg));
    }

    /// Accounts a finished batch and dispatches (on the device's thread). True when the batch's
    /// device has just failed: its actor schedules the health checks.
    pub fn job_done(&self, msg: JobDone) -> bool {
        self.with(|core| core.job_done(msg))
    }

    /// A failed device passed its health check: back in service.
    pub fn device_healthy(&self, device: DeviceId) {
        self.with(|core| {
            core.cluster.set_health(device, true);
            let id = core.device_ids[device].clone();
            tracing::info!("{id} passed its health check: back in service");
            core.events.emit(|| Event::DeviceHealthy { device: id });
            core.dispatch();
        });
    }

    /// Residency and memory map of every device.
    pub fn devices(&self) -> Vec<DeviceSnapshot> {
        self.with(|core| (0..core.cluster.device_count()).map(|i| core.cluster.snapshot(i)).collect())
    }

    /// Requests waiting for a device, for one function.
    pub fn queued(&self, function: FunctionId) -> usize {
        self.with(|core| core.cluster.queued(function))
    }
}

struct Core {
    cluster: Cluster,
    gpus: Vec<Addr<GpuActor>>,
    device_ids: Vec<String>,
    pending: HashMap<RequestId, Pending>,
    next_request: RequestId,
    /// The cluster's clock starts here.
    epoch: Instant,
    events: EventBus,
    /// Models of requests answered without running, dropped once the lock is released (`with`).
    retired: Vec<Arc<Model>>,
    /// Batches dispatched under the lock, sent once it is released (`with`).
    outbox: Vec<(Addr<GpuActor>, Execute)>,
}

impl Core {
    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * 1e3
    }

    /// Answers a request that will not run; its model is released after the lock (`with`).
    fn reject(&mut self, model: Option<Arc<Model>>, reply: Reply, error: RuntimeError) {
        self.retired.extend(model);
        let _ = reply.send(Err(error));
    }

    fn refuse(&mut self, p: Pending, function: FunctionId, reason: DropReason) {
        m::dropped(&p.name, reason_label(reason));
        self.events.emit(|| Event::Dropped { function: p.name.clone(), reason: reason_label(reason), count: 1 });
        let name = p.name.clone();
        let error = match reason {
            DropReason::NotPlaced => RuntimeError::NotPlaced(name),
            DropReason::Unmeetable => RuntimeError::DeadlineUnmeetable(name),
            DropReason::Overloaded => RuntimeError::Overloaded {
                function: name,
                retry_after_s: (self.cluster.drain_estimate_ms(function, self.now()) / 1e3).ceil().max(1.0) as u64,
            },
        };
        self.reject(p.work.model, p.reply, error);
    }

    fn dispatch(&mut self) {
        let mut moved = false;
        while let Some(decision) = self.cluster.next_dispatch(self.now()) {
            let d = match decision {
                Decision::Run(d) => d,
                // The cluster has counted the misses (those that are the function's).
                Decision::Drop { requests, function, reason } => {
                    for r in requests {
                        if let Some(p) = self.pending.remove(&r) {
                            self.refuse(p, function, reason);
                        }
                    }
                    continue;
                }
            };
            moved |= d.swap.is_some();
            for &(f, reason) in &d.evicted {
                self.evicted(d.device, self.cluster.function_name(f).unwrap_or_default(), reason);
            }
            let source_extent = match d.swap {
                Some(SwapSource::Peer(j)) => self.cluster.extent_of(j, d.function),
                _ => None,
            };
            let mut items = Vec::with_capacity(d.requests.len());
            let mut name = String::new();
            for (k, r) in d.requests.iter().enumerate() {
                // Queue and pending move together, so a request is always found.
                let Some(p) = self.pending.remove(r) else { continue };
                name = p.name;
                items.push(ExecItem {
                    // Only the first of a batch copies the model in.
                    job: Job {
                        work: p.work,
                        extent: d.extent,
                        swap: if k == 0 { d.swap } else { None },
                        source_extent,
                    },
                    received: p.received,
                    reply: p.reply,
                    retried: p.retried,
                });
            }
            if items.is_empty() {
                // The copy was never made and must not be reused.
                let _ = self.cluster.fail(d.device);
                continue;
            }
            let batch = Execute { function: d.function, name, items, dispatched: Instant::now() };
            self.outbox.push((self.gpus[d.device].clone(), batch));
        }
        if moved {
            self.publish_memory();
        }
    }

    fn publish_memory(&self) {
        for (i, id) in self.device_ids.iter().enumerate() {
            let (used, capacity) = self.cluster.memory(i);
            m::device_memory(id, used, capacity);
        }
    }

    /// Queues a new request and dispatches (on the caller's thread).
    fn submit(&mut self, msg: Submit) {
        let waited = msg.received.elapsed().as_secs_f64() * 1e3;
        let deadline = msg.deadline_ms.map(|d| d - waited);
        let p = Pending { name: msg.name, work: msg.work, received: msg.received, reply: msg.reply, retried: false };
        self.admit(p, msg.function, deadline);
    }

    /// Queues a request (new, or retried after a device failure) and dispatches.
    fn admit(&mut self, p: Pending, function: FunctionId, deadline: Option<f64>) {
        let id = self.next_request;
        self.next_request += 1;
        match self.cluster.enqueue(id, function, self.now(), deadline) {
            Admission::Queued => {
                self.pending.insert(id, p);
                self.dispatch();
            }
            // An overloaded queue is back-pressure, not a miss of the function's SLO; the cluster
            // counted the misses that are.
            Admission::Rejected(reason) => self.refuse(p, function, reason),
            Admission::Unknown => {
                let error = RuntimeError::FunctionGone(p.name.clone());
                self.reject(p.work.model, p.reply, error);
            }
        }
    }

    /// Accounts a finished batch and dispatches; true when its device has just failed.
    fn job_done(&mut self, msg: JobDone) -> bool {
        // Without a fault or an abort the copy is complete; with one it went with the job.
        let dropped_copy = if msg.fault.is_none() && msg.aborted.is_none() {
            self.cluster.complete(msg.device);
            if msg.exec_ms > 0.0 {
                self.cluster.observe_exec(msg.function, msg.batch, msg.exec_ms);
            }
            false
        } else {
            let dropped = self.cluster.fail(msg.device);
            self.publish_memory();
            dropped
        };
        for l in msg.latencies_ms {
            self.cluster.record(msg.function, l);
        }
        let name = self.cluster.function_name(msg.function).unwrap_or_default().to_string();
        let mut failed = false;
        if let Some(fault) = msg.fault {
            // The failed job's copy went with it: the feed hears of it as an eviction.
            if dropped_copy {
                self.evicted(msg.device, &name, EvictReason::DeviceFault);
            }
            failed = self.device_failed(msg.device, msg.function, fault);
        } else if let Some(rest) = msg.aborted {
            if dropped_copy {
                self.evicted(msg.device, &name, EvictReason::FailedJob);
            }
            // Not run yet: queued again as they were (a device fault's retry budget untouched).
            for item in rest {
                let p = Pending {
                    name: name.clone(),
                    work: item.job.work,
                    received: item.received,
                    reply: item.reply,
                    retried: item.retried,
                };
                self.admit(p, msg.function, None);
            }
        }
        self.dispatch();
        failed
    }

    /// A device failed: it gets no work (and its copies are dropped) until a health check
    /// passes; the batch's unfinished requests are retried once elsewhere. True when it was
    /// healthy until now (its health checks are to be scheduled).
    fn device_failed(&mut self, device: DeviceId, function: FunctionId, fault: DeviceFault) -> bool {
        let id = self.device_ids[device].clone();
        tracing::warn!("{}; retrying {} request(s) on other devices", fault.error, fault.retry.len());
        m::device_fault(&id, fault.kind);
        self.events.emit(|| Event::DeviceFault { device: id.clone(), fault: fault.kind, error: fault.error.clone() });
        let newly_failed = self.cluster.healthy(device);
        if newly_failed {
            for f in self.cluster.set_health(device, false) {
                self.evicted(device, self.cluster.function_name(f).unwrap_or_default(), EvictReason::DeviceFault);
            }
            self.publish_memory();
        }
        let name = self.cluster.function_name(function).unwrap_or_default().to_string();
        for item in fault.retry {
            if item.retried {
                self.cluster.record(function, f64::INFINITY);
                let error = RuntimeError::Device {
                    device: id.clone(),
                    source: crate::gpu::DeviceError::Unavailable(fault.error.clone()),
                };
                self.reject(item.job.work.model, item.reply, error);
                continue;
            }
            let p = Pending {
                name: name.clone(),
                work: item.job.work,
                received: item.received,
                reply: item.reply,
                retried: true,
            };
            self.admit(p, function, None);
        }
        newly_failed
    }

    /// A copy left a device: counted, and told to the event feed.
    fn evicted(&self, device: DeviceId, function: &str, reason: EvictReason) {
        m::eviction(reason.label());
        self.events.emit(|| Event::Evict {
            device: self.device_ids[device].clone(),
            function: function.to_string(),
            reason: reason.label(),
        });
    }
}

fn reason_label(r: DropReason) -> &'static str {
    match r {
        DropReason::NotPlaced => "not_placed",
        DropReason::Unmeetable => "deadline_unmeetable",
        DropReason::Overloaded => "overloaded",
    }
}

/// Takes the function actors' messages, applied under the scheduler's lock.
pub struct SchedulerActor {
    scheduler: Scheduler,
}

impl SchedulerActor {
    pub fn new(scheduler: Scheduler) -> Self {
        Self { scheduler }
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;
}

impl Handler<RegisterFunction> for SchedulerActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: RegisterFunction, _: &mut Context<Self>) -> Self::Result {
        self.scheduler.with(|core| {
            core.cluster.add_function(msg.id, msg.spec)?;
            core.publish_memory();
            Ok(())
        })
    }
}

impl Handler<UpdateSlo> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: UpdateSlo, _: &mut Context<Self>) {
        self.scheduler.with(|core| core.cluster.set_slo(msg.id, msg.deadline_ms, msg.percentile, msg.max_batch));
    }
}

impl Handler<UnregisterFunction> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: UnregisterFunction, _: &mut Context<Self>) {
        self.scheduler.with(|core| {
            let name = core.cluster.function_name(msg.id).unwrap_or_default().to_string();
            let (dropped, evicted) = core.cluster.remove_function(msg.id);
            for device in evicted {
                core.evicted(device, &name, EvictReason::Undeploy);
            }
            for r in dropped {
                if let Some(p) = core.pending.remove(&r) {
                    let error = RuntimeError::FunctionGone(p.name.clone());
                    core.reject(p.work.model, p.reply, error);
                }
            }
            core.publish_memory();
        });
    }
}
