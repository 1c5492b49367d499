//! The `sim` device: a modelled GPU for scale experiments. It holds no weights and computes
//! no tensors; a job takes the time the model says and its result says `simulated`. Times
//! follow the simulator's model (`policy::estimate`): a copy moves the weights over the host
//! link — split evenly among the devices of its PCIe group copying when it starts — or a peer
//! link, and a swapped job runs pipelined, ending max(transfer, execution) plus the first
//! chunk after it starts. Execution is the function's profiled time, or for a model package a
//! memory-bound estimate from its size.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::faults::{FaultPlan, FaultSpec, Hit, Point};
use super::{Device, DeviceError, DeviceInfo, Job, JobResult};
use crate::policy::{estimate, SwapSource};

/// Host link of a simulated device when none is configured: PCIe 4.0 x16 class, pinned.
pub const DEFAULT_HOST_LINK: f64 = 24e9;
/// Bytes per second a simulated device streams weights at while executing (HBM class); with
/// a fixed launch overhead this stands in for a profile when a package has none.
const EXEC_BYTES_PER_S: f64 = 1.5e12;
const EXEC_OVERHEAD_MS: f64 = 0.2;

pub struct SimDevice {
    info: DeviceInfo,
    /// Multiplies every modelled time (0: jobs take no time).
    time_scale: f64,
    /// Host copies in flight per PCIe group, shared by all simulated devices.
    copies: Arc<Vec<AtomicUsize>>,
    faults: FaultPlan,
}

impl SimDevice {
    pub fn new(info: DeviceInfo, time_scale: f64, copies: Arc<Vec<AtomicUsize>>) -> Self {
        Self { info, time_scale, copies, faults: FaultPlan::default() }
    }

    /// The modelled copy and execution times of a job (ms, unscaled), given how many host
    /// copies share its link.
    pub fn times(&self, job: &Job, sharing: usize) -> (Option<f64>, f64) {
        let host = self.info.host_link_bytes_per_s.unwrap_or(DEFAULT_HOST_LINK);
        let swap = match job.swap {
            None => None,
            Some(SwapSource::Host) => Some(estimate::transfer_ms(job.work.bytes, host / sharing.max(1) as f64)),
            Some(SwapSource::Peer(j)) => {
                let peer = self.info.peer_links_bytes_per_s.get(j).copied().flatten().unwrap_or(host);
                Some(estimate::transfer_ms(job.work.bytes, peer))
            }
        };
        let single = job
            .work
            .exec_ms
            .unwrap_or_else(|| EXEC_OVERHEAD_MS + estimate::transfer_ms(job.work.bytes, EXEC_BYTES_PER_S));
        (swap, estimate::batched_exec_ms(single, job.work.batch.batch))
    }
}

impl Device for SimDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn health_check(&mut self) -> Result<(), DeviceError> {
        if self.faults.lost(std::time::Instant::now()) {
            return Err(DeviceError::Fault {
                device: self.info.id.clone(),
                kind: super::faults::FaultKind::DeviceLost,
            });
        }
        Ok(())
    }

    fn inject(&mut self, fault: &FaultSpec) -> Result<(), DeviceError> {
        fault.validate().map_err(DeviceError::BadSpec)?;
        self.faults.inject(fault, std::time::Instant::now());
        Ok(())
    }

    #[allow(clippy::disallowed_methods)] // the device thread stands in for a busy GPU
    fn run(&mut self, job: &Job) -> Result<JobResult, DeviceError> {
        if job.work.generation.is_some() {
            return Err(DeviceError::Engine(crate::engine::EngineError::BadInput(
                "simulated devices compute no tokens: generation needs cpu or cuda devices".into(),
            )));
        }
        let group = self.copies.get(self.info.host_group);
        let host_copy = matches!(job.swap, Some(SwapSource::Host));
        let sharing = match (host_copy, group) {
            (true, Some(g)) => g.fetch_add(1, Ordering::AcqRel) + 1,
            _ => 1,
        };
        let (mut swap, exec) = self.times(job, sharing);
        let now = std::time::Instant::now();
        let copy_hit = self.faults.hit(Point::Copy, job.swap.is_some(), now);
        let kernel_hit = match copy_hit {
            Hit::Fail(_) => Hit::None,
            _ => self.faults.hit(Point::Kernel, job.swap.is_some(), now),
        };
        if let Hit::Slow(factor) = copy_hit {
            swap = swap.map(|s| s * factor);
        }
        if let (Hit::Fail(kind), _) | (_, Hit::Fail(kind)) = (copy_hit, kernel_hit) {
            if let (true, Some(g)) = (host_copy, group) {
                g.fetch_sub(1, Ordering::AcqRel);
            }
            if kind == super::faults::FaultKind::Panic {
                panic!("injected panic: a bug met on this request's data");
            }
            return Err(DeviceError::Fault { device: self.info.id.clone(), kind });
        }
        let chunk = estimate::transfer_ms(
            estimate::FIRST_CHUNK_BYTES.min(job.work.bytes),
            self.info.host_link_bytes_per_s.unwrap_or(DEFAULT_HOST_LINK),
        );
        let total = estimate::job_ms(swap, chunk, exec) * self.time_scale;
        if total > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(total / 1e3));
        }
        if let (true, Some(g)) = (host_copy, group) {
            g.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(JobResult {
            outputs: Vec::new(),
            swap_ms: swap.unwrap_or(0.0) * self.time_scale,
            exec_ms: exec * self.time_scale,
            swapped_bytes: if job.swap.is_some() { job.work.bytes } else { 0 },
            simulated: true,
            generated: None,
        })
    }
}
