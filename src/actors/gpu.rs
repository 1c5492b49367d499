//! The GPU actor: owns one device on its own arbiter thread (device calls block) and runs the
//! batches the scheduler sends it, one request after another.

use std::time::Instant;

use actix::{Actor, Addr, Context, Handler};

use super::messages::{Completed, DeviceFault, ExecItem, Execute, HealthCheck, HealthResult, InjectFault, JobDone};
use super::scheduler::SchedulerActor;
use super::RuntimeError;
use crate::events::{Event, EventBus};
use crate::gpu::{Device, DeviceError, JobResult};
use crate::metrics as m;
use crate::policy::{DeviceId, SwapSource};

pub struct GpuActor {
    index: DeviceId,
    device: Box<dyn Device>,
    scheduler: Addr<SchedulerActor>,
    events: EventBus,
    /// Every device's id, by index (to name a peer a copy came from).
    device_ids: Vec<String>,
}

impl GpuActor {
    pub fn new(
        index: DeviceId,
        device: Box<dyn Device>,
        scheduler: Addr<SchedulerActor>,
        events: EventBus,
        device_ids: Vec<String>,
    ) -> Self {
        Self { index, device, scheduler, events, device_ids }
    }

    /// Runs one request; a panic inside the device becomes a device error for it.
    fn run(&mut self, item: &ExecItem) -> Result<JobResult, DeviceError> {
        let device = &mut self.device;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| device.run(&item.job)))
            .unwrap_or_else(|_| Err(DeviceError::Unavailable("the device failed while running the job".into())))
    }
}

impl Actor for GpuActor {
    type Context = Context<Self>;
}

impl Handler<Execute> for GpuActor {
    type Result = ();

    fn handle(&mut self, msg: Execute, _: &mut Context<Self>) {
        let id = self.device.info().id.clone();
        let (mut keep, mut exec_ms, mut forwards) = (true, 0.0, 0);
        let mut latencies_ms = Vec::with_capacity(msg.items.len());
        let mut fault = None;
        let mut items = msg.items.into_iter();
        while let Some(item) = items.next() {
            let cancelled = item.job.generation.as_ref().is_some_and(|g| g.cancelled());
            if cancelled && item.job.swap.is_none() {
                // The client left while its generation waited: nothing to run, nothing to copy.
                let _ = item.reply.send(Err(RuntimeError::Cancelled));
                continue;
            }
            let result = self.run(&item);
            // An input error leaves the copy complete; a device failure does not, and ends the
            // batch: this request and the ones not yet run go back to be retried elsewhere.
            if let Err(e @ (DeviceError::Unavailable(_) | DeviceError::Fault { .. })) = &result {
                let kind = match e {
                    DeviceError::Fault { kind, .. } => kind.label(),
                    _ => "device_error",
                };
                let error = e.to_string();
                let mut retry = vec![item];
                retry.extend(items.by_ref());
                fault = Some(DeviceFault { kind, error, retry });
                keep = false;
                break;
            }
            let done = Instant::now();
            let total_ms = (done - item.received).as_secs_f64() * 1e3;
            let reply = result
                .map(|r| {
                    if r.swapped_bytes > 0 {
                        let (source, from) = match item.job.swap {
                            Some(SwapSource::Peer(j)) => ("peer", self.device_ids.get(j).cloned()),
                            _ => ("host", None),
                        };
                        m::swap(&msg.name, source, r.swapped_bytes, r.swap_ms);
                        self.events.emit(|| Event::SwapIn {
                            device: id.clone(),
                            function: msg.name.clone(),
                            bytes: r.swapped_bytes,
                            source,
                            from,
                            ms: r.swap_ms,
                        });
                    }
                    m::executed(&msg.name, r.exec_ms);
                    match &r.generated {
                        // A generation is judged by its first token; its length says nothing
                        // about the function's forward-pass time.
                        Some(g) => {
                            latencies_ms.push(g.first_token_ms);
                            m::generated(&msg.name, g.token_ids.len());
                            self.events.emit(|| Event::Execute {
                                device: id.clone(),
                                function: msg.name.clone(),
                                batch: 1,
                                ms: r.exec_ms,
                                tokens: Some(g.token_ids.len()),
                                cancelled: g.finish_reason == crate::gpu::FinishReason::Cancelled,
                            });
                        }
                        None => {
                            exec_ms += r.exec_ms;
                            forwards += 1;
                            latencies_ms.push(total_ms);
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
                        queue_ms: (msg.dispatched - item.received).as_secs_f64() * 1e3,
                        swap_ms: r.swap_ms,
                        exec_ms: r.exec_ms,
                        total_ms,
                        generated: r.generated,
                    }
                })
                .map_err(|e| match e {
                    DeviceError::Engine(e) => RuntimeError::Engine(e),
                    other => RuntimeError::Device { device: id.clone(), source: other },
                });
            // The client may have gone away; its result is then dropped.
            let _ = item.reply.send(reply);
        }
        if forwards > 0 {
            self.events.emit(|| Event::Execute {
                device: id.clone(),
                function: msg.name.clone(),
                batch: forwards,
                ms: exec_ms,
                tokens: None,
                cancelled: false,
            });
        }
        self.scheduler.do_send(JobDone {
            device: self.index,
            keep,
            function: msg.function,
            latencies_ms,
            exec_ms,
            batch: forwards,
            fault,
        });
    }
}

impl Handler<HealthCheck> for GpuActor {
    type Result = ();

    fn handle(&mut self, msg: HealthCheck, _: &mut Context<Self>) {
        let device = &mut self.device;
        let ok =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| device.health_check())).is_ok_and(|r| r.is_ok());
        self.scheduler.do_send(HealthResult { device: self.index, ok, attempt: msg.attempt });
    }
}

impl Handler<InjectFault> for GpuActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: InjectFault, _: &mut Context<Self>) -> Self::Result {
        self.device.inject(&msg.fault).map_err(|e| e.to_string())
    }
}
