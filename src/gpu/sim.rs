//! The `sim` device: a modelled GPU for scale experiments. It holds no weights and computes
//! no tensors; a job takes the time the model says (swap: bytes over the link; execution: a
//! memory-bound estimate from the model's size) and its result says `simulated`.

use std::time::Duration;

use super::{Device, DeviceError, DeviceInfo, Job, JobResult};
use crate::policy::SwapSource;

/// Host link of a simulated device when none is configured: PCIe 4.0 x16 class, pinned.
pub const DEFAULT_HOST_LINK: f64 = 24e9;
/// Bytes per second a simulated device streams weights at while executing (HBM class); with
/// a fixed launch overhead this stands in for a profile until profiles are measured.
const EXEC_BYTES_PER_S: f64 = 1.5e12;
const EXEC_OVERHEAD: Duration = Duration::from_micros(200);

pub struct SimDevice {
    info: DeviceInfo,
    /// Multiplies every modelled time (0: jobs take no time).
    time_scale: f64,
}

impl SimDevice {
    pub fn new(info: DeviceInfo, time_scale: f64) -> Self {
        Self { info, time_scale }
    }

    /// The modelled swap and execution times of a job.
    pub fn times(&self, job: &Job) -> (Duration, Duration) {
        let bytes = job.model.spec.layout.total_bytes() as f64;
        let host = self.info.host_link_bytes_per_s.unwrap_or(DEFAULT_HOST_LINK);
        let swap = match job.swap {
            None => Duration::ZERO,
            Some(SwapSource::Host) => Duration::from_secs_f64(bytes / host),
            Some(SwapSource::Peer(j)) => {
                let peer = self.info.peer_links_bytes_per_s.get(j).copied().flatten().unwrap_or(host);
                Duration::from_secs_f64(bytes / peer)
            }
        };
        let tokens = job.batch.batch as f64;
        let exec = EXEC_OVERHEAD + Duration::from_secs_f64(bytes / EXEC_BYTES_PER_S * tokens.sqrt());
        (swap.mul_f64(self.time_scale), exec.mul_f64(self.time_scale))
    }
}

impl Device for SimDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    #[allow(clippy::disallowed_methods)] // the device thread stands in for a busy GPU
    fn run(&mut self, job: &Job) -> Result<JobResult, DeviceError> {
        let (swap, exec) = self.times(job);
        if !(swap + exec).is_zero() {
            std::thread::sleep(swap + exec);
        }
        Ok(JobResult {
            outputs: Vec::new(),
            swap_ms: swap.as_secs_f64() * 1e3,
            exec_ms: exec.as_secs_f64() * 1e3,
            swapped_bytes: if job.swap.is_some() { job.model.spec.layout.total_bytes() as u64 } else { 0 },
            simulated: true,
        })
    }
}
