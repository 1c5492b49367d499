//! The GPU actor: owns one device on its own arbiter thread (device calls block), runs the
//! batches the scheduler sends it, one request after another, and accounts each finished batch
//! through the scheduler's handle on this thread. After a failure it checks the device's health
//! on its own timers until the device works again.
//!
//! Must not know: the policies, the store, HTTP.

use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler};

use super::messages::{DeviceFault, ExecItem, Execute, InjectFault, JobDone};
use super::scheduler::Scheduler;
use crate::events::{Event, EventBus};
use crate::gpu::{Device, DeviceError, JobResult};
use crate::metrics as m;
use crate::policy::{health, DeviceId, SwapSource};
use crate::request::{Completed, FinishReason, RuntimeError};

pub struct GpuActor {
    index: DeviceId,
    device: Box<dyn Device>,
    /// Where a finished batch is accounted, on this thread.
    scheduler: Scheduler,
    events: EventBus,
    /// Every device's id, by index (to name a peer a copy came from).
    device_ids: Vec<String>,
}

impl GpuActor {
    pub fn new(
        index: DeviceId,
        device: Box<dyn Device>,
        scheduler: Scheduler,
        events: EventBus,
        device_ids: Vec<String>,
    ) -> Self {
        Self { index, device, scheduler, events, device_ids }
    }

    /// Checks the device `attempt` checks after its failure, once the back-off has passed; until
    /// one passes, the scheduler gives it no work.
    fn check_health_later(attempt: u32, ctx: &mut Context<Self>) {
        let wait = Duration::from_millis(health::check_delay_ms(attempt));
        ctx.run_later(wait, move |act, ctx| {
            let device = &mut act.device;
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| device.health_check()))
                .is_ok_and(|r| r.is_ok());
            if ok {
                act.scheduler.device_healthy(act.index);
            } else {
                Self::check_health_later(attempt + 1, ctx);
            }
        });
    }

    /// Runs one request. A panic is a bug met on this request (its data reached a case the
    /// engine did not handle), not a failure of the device: it becomes `DeviceError::Internal`,
    /// and so does an output that is not finite (a response never carries NaN or infinity).
    fn run(&mut self, item: &ExecItem) -> Result<JobResult, DeviceError> {
        let device = &mut self.device;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| device.run(&item.job))).unwrap_or_else(
            |panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Err(DeviceError::Internal(what))
            },
        )?;
        if let Some(t) = result.outputs.iter().find(|t| t.data.iter().any(|x| !x.is_finite())) {
            return Err(DeviceError::Internal(format!("output {} holds values that are not finite", t.name)));
        }
        Ok(result)
    }
}

impl Actor for GpuActor {
    type Context = Context<Self>;
}

impl Handler<Execute> for GpuActor {
    type Result = ();

    fn handle(&mut self, msg: Execute, ctx: &mut Context<Self>) {
        let Execute { function, name, items, dispatched } = msg;
        let mut done = JobDone {
            device: self.index,
            function,
            latencies_ms: Vec::with_capacity(items.len()),
            exec_ms: 0.0,
            batch: 0,
            fault: None,
            aborted: None,
        };
        let mut items = items.into_iter();
        while let Some(item) = items.next() {
            if item.job.swap.is_none() && item.job.work.generation.as_ref().is_some_and(|g| g.cancelled()) {
                // The client left while its generation waited: nothing to run, nothing to copy.
                let _ = item.reply.send(Err(RuntimeError::Cancelled));
                continue;
            }
            let reply = match self.run(&item) {
                Ok(r) => Ok(self.finished(&name, &item, r, dispatched, &mut done)),
                // An input error leaves the copy complete; a device failure does not, and ends
                // the batch: this request and the ones not yet run go back to be retried.
                Err(e @ (DeviceError::Unavailable(_) | DeviceError::Fault { .. })) => {
                    let kind = match &e {
                        DeviceError::Fault { kind, .. } => kind.label(),
                        _ => "device_error",
                    };
                    let mut retry = vec![item];
                    retry.extend(items.by_ref());
                    done.fault = Some(DeviceFault { kind, error: e.to_string(), retry });
                    break;
                }
                Err(DeviceError::Engine(e)) => Err(RuntimeError::Engine(e)),
                // A bug met on this request: it alone fails (500) and the device stays in
                // service. The copy this job made is dropped (it may be incomplete), so the rest
                // of the batch, which would run from it, is queued again.
                Err(DeviceError::Internal(e)) => {
                    let id = self.device.info().id.clone();
                    tracing::error!("{name} on {id}: {e}");
                    let _ = item.reply.send(Err(RuntimeError::Internal { device: id }));
                    done.aborted = Some(items.by_ref().collect());
                    break;
                }
                Err(other) => Err(RuntimeError::Device { device: self.device.info().id.clone(), source: other }),
            };
            // The client may have gone away; its result is then dropped.
            let _ = item.reply.send(reply);
        }
        if done.batch > 0 {
            self.events.emit(|| Event::Execute {
                device: self.device.info().id.clone(),
                function: name.clone(),
                batch: done.batch,
                ms: done.exec_ms,
                tokens: None,
                cancelled: false,
            });
        }
        // Accounted here, and the device's next batch dispatched, without waking the
        // scheduler's thread; a fault too, at once, so that no later request is placed on (or
        // copies from) the failed device.
        if self.scheduler.job_done(done) {
            Self::check_health_later(0, ctx);
        }
    }
}

impl GpuActor {
    /// A request that ran: its metrics and events, its share of the batch's accounting in
    /// `done`, and its answer.
    fn finished(
        &self,
        name: &str,
        item: &ExecItem,
        r: JobResult,
        dispatched: Instant,
        done: &mut JobDone,
    ) -> Completed {
        let id = &self.device.info().id;
        let total_ms = item.received.elapsed().as_secs_f64() * 1e3;
        if r.swapped_bytes > 0 {
            let (source, from) = match item.job.swap {
                Some(SwapSource::Peer(j)) => ("peer", self.device_ids.get(j).cloned()),
                _ => ("host", None),
            };
            m::swap(name, source, r.swapped_bytes, r.swap_ms);
            self.events.emit(|| Event::SwapIn {
                device: id.clone(),
                function: name.to_string(),
                bytes: r.swapped_bytes,
                source,
                from,
                ms: r.swap_ms,
            });
        }
        m::executed(name, r.exec_ms);
        match &r.generated {
            // A generation is judged by its first token; its length says nothing about the
            // function's forward-pass time.
            Some(g) => {
                done.latencies_ms.push(g.first_token_ms);
                m::generated(name, g.token_ids.len());
                self.events.emit(|| Event::Execute {
                    device: id.clone(),
                    function: name.to_string(),
                    batch: 1,
                    ms: r.exec_ms,
                    tokens: Some(g.token_ids.len()),
                    cancelled: g.finish_reason == FinishReason::Cancelled,
                });
            }
            None => {
                done.exec_ms += r.exec_ms;
                done.batch += 1;
                done.latencies_ms.push(total_ms);
            }
        }
        Completed {
            outputs: r.outputs,
            device: id.clone(),
            simulated: r.simulated,
            swap_source: item.job.swap.map(|s| match s {
                SwapSource::Host => "host".to_string(),
                SwapSource::Peer(j) => format!("peer:{j}"),
            }),
            swapped_bytes: r.swapped_bytes,
            queue_ms: (dispatched - item.received).as_secs_f64() * 1e3,
            swap_ms: r.swap_ms,
            exec_ms: r.exec_ms,
            total_ms,
            generated: r.generated,
        }
    }
}

impl Handler<InjectFault> for GpuActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: InjectFault, _: &mut Context<Self>) -> Self::Result {
        self.device.inject(&msg.fault).map_err(|e| e.to_string())
    }
}
