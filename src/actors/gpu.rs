//! The GPU actor: owns one device on its own arbiter thread (device calls block) and runs the
//! jobs the scheduler sends it, one at a time.

use std::time::Instant;

use actix::{Actor, Addr, Context, Handler};

use super::messages::{Completed, Execute, JobDone};
use super::scheduler::SchedulerActor;
use super::RuntimeError;
use crate::gpu::{Device, DeviceError};
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
}

impl Actor for GpuActor {
    type Context = Context<Self>;
}

impl Handler<Execute> for GpuActor {
    type Result = ();

    fn handle(&mut self, msg: Execute, _: &mut Context<Self>) {
        let id = self.device.info().id.clone();
        // A panic inside a device must not leave it marked busy forever: it becomes an error
        // for this request and the copy is not kept.
        let device = &mut self.device;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| device.run(&msg.job)))
            .unwrap_or_else(|_| Err(DeviceError::Unavailable("the device failed while running the job".into())));
        // An input error leaves the copy complete; a device error does not.
        let keep = !matches!(result, Err(DeviceError::Unavailable(_)));
        let done = Instant::now();
        let reply = result
            .map(|r| {
                if r.swapped_bytes > 0 {
                    let source = match msg.job.swap {
                        Some(SwapSource::Peer(_)) => "peer",
                        _ => "host",
                    };
                    m::swap(&msg.function, source, r.swapped_bytes, r.swap_ms);
                }
                m::executed(&msg.function, r.exec_ms);
                Completed {
                    outputs: r.outputs,
                    device: id.clone(),
                    simulated: r.simulated,
                    swap_source: msg.job.swap.map(|s| match s {
                        SwapSource::Host => "host".to_string(),
                        SwapSource::Peer(j) => format!("peer:{j}"),
                    }),
                    swapped_bytes: r.swapped_bytes,
                    queue_ms: (msg.dispatched - msg.received).as_secs_f64() * 1e3,
                    swap_ms: r.swap_ms,
                    exec_ms: r.exec_ms,
                    total_ms: (done - msg.received).as_secs_f64() * 1e3,
                }
            })
            .map_err(|e| match e {
                DeviceError::Engine(e) => RuntimeError::Engine(e),
                other => RuntimeError::Device { device: id, source: other },
            });
        // The client may have gone away; its result is then dropped.
        let _ = msg.reply.send(reply);
        self.scheduler.do_send(JobDone { device: self.index, keep });
    }
}
