//! The GPU actor: owns one device on its own arbiter thread (device calls block) and runs the
//! batches the scheduler sends it, one request after another.

use std::time::Instant;

use actix::{Actor, Addr, Context, Handler};

use super::messages::{Completed, ExecItem, Execute, JobDone};
use super::scheduler::SchedulerActor;
use super::RuntimeError;
use crate::gpu::{Device, DeviceError, JobResult};
use crate::metrics as m;
use crate::policy::{DeviceId, SwapSource};

pub struct GpuActor {
    index: DeviceId,
    device: Box<dyn Device>,
    scheduler: Addr<SchedulerActor>,
}

impl GpuActor {
    pub fn new(index: DeviceId, device: Box<dyn Device>, scheduler: Addr<SchedulerActor>) -> Self {
        Self { index, device, scheduler }
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
        let (mut keep, mut exec_ms) = (true, 0.0);
        let mut latencies_ms = Vec::with_capacity(msg.items.len());
        let batch = msg.items.len();
        for item in msg.items {
            let result = self.run(&item);
            // An input error leaves the copy complete; a device error does not.
            let device_failed = matches!(result, Err(DeviceError::Unavailable(_)));
            keep &= !device_failed;
            let done = Instant::now();
            let total_ms = (done - item.received).as_secs_f64() * 1e3;
            if device_failed {
                latencies_ms.push(f64::INFINITY);
            }
            let reply = result
                .map(|r| {
                    if r.swapped_bytes > 0 {
                        let source = match item.job.swap {
                            Some(SwapSource::Peer(_)) => "peer",
                            _ => "host",
                        };
                        m::swap(&msg.name, source, r.swapped_bytes, r.swap_ms);
                    }
                    m::executed(&msg.name, r.exec_ms);
                    exec_ms += r.exec_ms;
                    latencies_ms.push(total_ms);
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
                    }
                })
                .map_err(|e| match e {
                    DeviceError::Engine(e) => RuntimeError::Engine(e),
                    other => RuntimeError::Device { device: id.clone(), source: other },
                });
            // The client may have gone away; its result is then dropped.
            let _ = item.reply.send(reply);
        }
        self.scheduler.do_send(JobDone {
            device: self.index,
            keep,
            function: msg.function,
            latencies_ms,
            exec_ms,
            batch,
        });
    }
}
