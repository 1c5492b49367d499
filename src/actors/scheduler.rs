//! The scheduler actor: owns the global view (a `policy::Cluster`) and the requests waiting
//! for a device; places each request and sends the execute order to that device's GPU actor.
//! It never blocks and never touches a device.

use std::collections::HashMap;
use std::time::Instant;

use actix::{Actor, Addr, Context, Handler};

use super::gpu::GpuActor;
use super::messages::{
    AttachGpus, Execute, GetDevices, GetQueued, JobDone, RegisterFunction, Reply, Submit, UnregisterFunction, Work,
};
use super::RuntimeError;
use crate::gpu::Job;
use crate::metrics as m;
use crate::policy::cluster::DeviceSnapshot;
use crate::policy::{Cluster, RequestId};

struct Pending {
    name: String,
    work: Work,
    received: Instant,
    reply: Reply,
}

pub struct SchedulerActor {
    cluster: Cluster,
    gpus: Vec<Addr<GpuActor>>,
    device_ids: Vec<String>,
    pending: HashMap<RequestId, Pending>,
    next_request: RequestId,
}

impl SchedulerActor {
    pub fn new(cluster: Cluster, device_ids: Vec<String>) -> Self {
        Self { cluster, gpus: Vec::new(), device_ids, pending: HashMap::new(), next_request: 0 }
    }

    fn dispatch(&mut self) {
        if self.gpus.is_empty() {
            return;
        }
        let mut moved = false;
        while let Some(d) = self.cluster.next_dispatch() {
            moved |= d.swap.is_some();
            let Some(p) = self.pending.remove(&d.request) else {
                // Queue and pending move together, so this does not happen; if it did, the copy
                // was never made and must not be reused.
                self.cluster.complete(d.device, false);
                continue;
            };
            for _ in &d.evicted {
                m::eviction("lru");
            }
            self.gpus[d.device].do_send(Execute {
                job: Job {
                    model: p.work.model,
                    extent: d.extent,
                    swap: d.swap,
                    batch: p.work.batch,
                    outputs: p.work.outputs,
                },
                function: p.name,
                received: p.received,
                dispatched: Instant::now(),
                reply: p.reply,
            });
        }
        if moved {
            self.publish_memory();
        }
    }

    fn publish_memory(&self) {
        for (i, id) in self.device_ids.iter().enumerate() {
            let s = self.cluster.snapshot(i);
            m::device_memory(id, s.used_bytes, s.capacity_bytes);
        }
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;
}

impl Handler<AttachGpus> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: AttachGpus, _: &mut Context<Self>) {
        self.gpus = msg.gpus;
        self.dispatch();
    }
}

impl Handler<RegisterFunction> for SchedulerActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: RegisterFunction, _: &mut Context<Self>) -> Self::Result {
        self.cluster.add_function(msg.id, &msg.name, msg.bytes)
    }
}

impl Handler<UnregisterFunction> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: UnregisterFunction, _: &mut Context<Self>) {
        let (dropped, evicted) = self.cluster.remove_function(msg.id);
        for _ in 0..evicted {
            m::eviction("undeploy");
        }
        for r in dropped {
            if let Some(p) = self.pending.remove(&r) {
                let _ = p.reply.send(Err(RuntimeError::FunctionGone(p.name)));
            }
        }
        self.publish_memory();
    }
}

impl Handler<Submit> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: Submit, _: &mut Context<Self>) {
        let id = self.next_request;
        self.next_request += 1;
        if !self.cluster.enqueue(id, msg.function) {
            let _ = msg.reply.send(Err(RuntimeError::FunctionGone(msg.name)));
            return;
        }
        self.pending.insert(id, Pending { name: msg.name, work: msg.work, received: msg.received, reply: msg.reply });
        self.dispatch();
    }
}

impl Handler<JobDone> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: JobDone, _: &mut Context<Self>) {
        self.cluster.complete(msg.device, msg.keep);
        if !msg.keep {
            self.publish_memory();
        }
        self.dispatch();
    }
}

impl Handler<GetDevices> for SchedulerActor {
    type Result = Vec<DeviceSnapshot>;

    fn handle(&mut self, _: GetDevices, _: &mut Context<Self>) -> Self::Result {
        (0..self.cluster.device_count()).map(|i| self.cluster.snapshot(i)).collect()
    }
}

impl Handler<GetQueued> for SchedulerActor {
    type Result = usize;

    fn handle(&mut self, msg: GetQueued, _: &mut Context<Self>) -> usize {
        self.cluster.queued(msg.function)
    }
}
