//! The device abstraction: one `Device` trait with three back ends, all compiled in every
//! build — `cpu` (real computation on the host, weight pool in host memory), `sim` (a
//! modelled GPU that computes no tensors) and `cuda` (NVIDIA GPUs through cudarc, libraries
//! loaded at run time; `auto` falls back to `cpu` where they or a GPU are missing). A device
//! runs one job at a time on its GPU actor's own thread; its calls block.

pub mod chunks;
pub mod cpu;
pub mod cuda;
pub mod faults;
pub mod generation;
pub mod graph_cache;
pub mod schedule;
pub mod sim;
mod sizes;
pub mod topology;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

pub use sizes::{parse_bandwidth, parse_bytes};
pub use topology::{Topology, TopologySpec};

use crate::engine::{EngineError, Model, OutputTensor};
use crate::policy::{Extent, SwapSource};
use crate::request::{Generated, Work};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Sim,
    Cuda,
}

/// What the rest of the runtime knows about a device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    /// `cpu:0`, `sim:3`, ...
    pub id: String,
    pub kind: DeviceKind,
    pub pool_bytes: u64,
    pub page_bytes: u64,
    /// Activation workspace reserved at start-up (0 where the device computes nothing).
    pub workspace_bytes: u64,
    /// Host→device copy rate, bytes per second (`None`: as fast as memory copies go).
    pub host_link_bytes_per_s: Option<f64>,
    /// Copy rate from each other device, by device index (`None`: no peer access).
    pub peer_links_bytes_per_s: Vec<Option<f64>>,
    /// Devices with the same group share one host link (a PCIe switch).
    pub host_group: usize,
    /// Where the hardware sits (`cuda`: the PCI bus id, such as `0000:19:00.0`).
    pub pci_bus_id: Option<String>,
}

/// Errors of the device layer.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{0}")]
    Unavailable(String),
    #[error("invalid device specification: {0}")]
    BadSpec(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An injected fault (sim devices) or a failure of the device itself.
    #[error("{device}: {} fault", kind.label())]
    Fault { device: String, kind: faults::FaultKind },
    /// A bug met while running a job (a panic caught on the device's thread): the job's own
    /// failure, not the device's.
    #[error("internal error: {0}")]
    Internal(String),
}

/// One order for a device: run `work`, whose model's weights sit (or are to be copied) at
/// `extent` of the device's weight pool. A function deployed from a profile alone has no model
/// (only `sim` devices run it): the work's `bytes` and `exec_ms` say what the job costs.
pub struct Job {
    pub work: Work,
    pub extent: Extent,
    pub swap: Option<SwapSource>,
    /// Where the model sits on the source device of a peer copy.
    pub source_extent: Option<Extent>,
}

impl Job {
    /// The model to run; a function deployed from a profile alone has none, and only `sim`
    /// devices run it.
    pub fn model(&self) -> Result<&Arc<Model>, DeviceError> {
        self.work.model.as_ref().ok_or_else(|| {
            DeviceError::BadSpec("a function deployed from a profile alone runs only on sim devices".into())
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct JobResult {
    pub outputs: Vec<OutputTensor>,
    pub swap_ms: f64,
    pub exec_ms: f64,
    pub swapped_bytes: u64,
    pub simulated: bool,
    /// What a generation produced.
    pub generated: Option<Generated>,
}

pub trait Device: Send {
    fn info(&self) -> &DeviceInfo;
    /// Copies the model in when the job says so (pipelined with execution), then runs it.
    fn run(&mut self, job: &Job) -> Result<JobResult, DeviceError>;
    /// Whether the device works (after a failure, before it gets work again).
    fn health_check(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }
    /// Times one plain copy of `model`'s host weights into `extent` of the pool, from the same
    /// host memory a swap-in reads: the baseline swap-in is measured against. `None` where the
    /// device moves no bytes.
    fn raw_copy_ms(&mut self, model: &crate::engine::Model, extent: Extent) -> Result<Option<f64>, DeviceError> {
        let _ = (model, extent);
        Ok(None)
    }

    /// Arms a fault for testing (only `sim` devices take them).
    fn inject(&mut self, fault: &faults::FaultSpec) -> Result<(), DeviceError> {
        let _ = fault;
        Err(DeviceError::BadSpec(format!("{}: faults can be injected into sim devices only", self.info().id)))
    }
}

/// Makes a deployed model's host weights ready for fast swaps on this process's devices
/// (page-locks them when CUDA devices exist). Called at deploy time, off the request path.
pub fn prepare_host(model: &crate::engine::Model) {
    let _ = cuda::prepare_host(model);
}

/// How to create devices (from the serve configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOptions {
    pub page_bytes: u64,
    /// Overrides the topology's host link.
    pub host_link: Option<f64>,
    pub sim_time_scale: f64,
    /// Activation workspace of each `cpu` and `cuda` device.
    pub workspace_bytes: u64,
}

/// Which devices to create, parsed from `--devices` and `--device-memory`.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePlan {
    pub kind: DeviceKind,
    pub count: usize,
    pub pool_bytes: u64,
    pub topology: Topology,
}

/// Default activation workspace of each `cpu` and `cuda` device (`--workspace`).
pub const DEFAULT_WORKSPACE: u64 = 1 << 30;

/// Default weight pool of a `cpu` device.
pub const DEFAULT_CPU_POOL: u64 = 2 << 30;
/// Default weight pool of a `sim` device when the spec gives none.
pub const DEFAULT_SIM_POOL: u64 = 16 << 30;

impl DevicePlan {
    /// `auto` (CUDA GPUs when the back end exists, else one `cpu`), `cpu`, `cpu:N`, `cuda`,
    /// `sim:N`, `sim:NxSIZE` (e.g. `sim:4x16GiB`), `sim:paper-node`, or a topology file for
    /// simulated devices (`*.json`, see `topology`).
    pub fn parse(spec: &str, device_memory: Option<u64>) -> Result<Self, DeviceError> {
        let bad = |why: &str| DeviceError::BadSpec(format!("{spec:?}: {why}"));
        let simulated = |(count, memory, topology): (usize, u64, Topology)| Self {
            kind: DeviceKind::Sim,
            count,
            pool_bytes: device_memory.unwrap_or(memory),
            topology,
        };
        let cuda = |count| Self {
            kind: DeviceKind::Cuda,
            count,
            // 0: most of each GPU's free memory, decided when the device is created.
            pool_bytes: device_memory.unwrap_or(0),
            topology: Topology::default(),
        };
        if spec.ends_with(".json") {
            return topology::load(Path::new(spec)).map(simulated);
        }
        if let Some(preset) = spec.strip_prefix("sim:").and_then(topology::preset) {
            return preset.map(simulated);
        }
        let count = |n: &str| -> Result<usize, DeviceError> {
            match n.parse::<usize>() {
                Ok(n) if (1..=64).contains(&n) => Ok(n),
                _ => Err(bad("the device count must be 1 to 64")),
            }
        };
        let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
        match kind {
            "auto" if rest.is_empty() => match cuda::probe() {
                Ok(n) => Ok(cuda(n)),
                Err(e) => {
                    tracing::info!("devices auto: using the CPU ({e})");
                    Ok(Self {
                        kind: DeviceKind::Cpu,
                        count: 1,
                        pool_bytes: device_memory.unwrap_or(DEFAULT_CPU_POOL),
                        topology: Topology::default(),
                    })
                }
            },
            "cpu" => Ok(Self {
                kind: DeviceKind::Cpu,
                count: if rest.is_empty() { 1 } else { count(rest)? },
                pool_bytes: device_memory.unwrap_or(DEFAULT_CPU_POOL),
                topology: Topology::default(),
            }),
            "cuda" if rest.is_empty() => cuda::probe().map(cuda),
            "sim" => {
                let (n, size) = rest.split_once('x').unwrap_or((rest, ""));
                let pool_bytes = if size.is_empty() {
                    device_memory.unwrap_or(DEFAULT_SIM_POOL)
                } else {
                    parse_bytes(size).map_err(|e| bad(&e))?
                };
                Ok(Self { kind: DeviceKind::Sim, count: count(n)?, pool_bytes, topology: Topology::default() })
            }
            _ => {
                Err(bad("expected auto, cpu, cpu:N, cuda, sim:N, sim:NxSIZE, sim:paper-node or a topology .json file"))
            }
        }
    }

    /// Creates the devices, reserving each weight pool (and, for `cpu`, its workspace).
    pub fn build(&self, opts: &BuildOptions) -> Result<Vec<Box<dyn Device>>, DeviceError> {
        if self.kind == DeviceKind::Cuda {
            return cuda::build(self.count, self.pool_bytes, opts.page_bytes, opts.workspace_bytes);
        }
        let groups = (0..self.count).map(|i| self.topology.host_group(i) + 1).max().unwrap_or(0);
        let copies: std::sync::Arc<Vec<std::sync::atomic::AtomicUsize>> =
            std::sync::Arc::new((0..groups).map(|_| std::sync::atomic::AtomicUsize::new(0)).collect());
        (0..self.count)
            .map(|i| -> Result<Box<dyn Device>, DeviceError> {
                let info = |kind: DeviceKind, name: &str, link, workspace_bytes| DeviceInfo {
                    id: format!("{name}:{i}"),
                    kind,
                    pool_bytes: self.pool_bytes,
                    page_bytes: opts.page_bytes,
                    workspace_bytes,
                    host_link_bytes_per_s: link,
                    peer_links_bytes_per_s: self
                        .topology
                        .peers
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| vec![None; self.count]),
                    host_group: self.topology.host_group(i),
                    pci_bus_id: None,
                };
                // A --host-link flag overrides the topology's host link.
                let host_link = opts.host_link.or(self.topology.host_link);
                match self.kind {
                    DeviceKind::Cpu => Ok(Box::new(cpu::CpuDevice::new(info(
                        DeviceKind::Cpu,
                        "cpu",
                        host_link,
                        opts.workspace_bytes,
                    ))?)),
                    DeviceKind::Sim => Ok(Box::new(sim::SimDevice::new(
                        info(DeviceKind::Sim, "sim", Some(host_link.unwrap_or(sim::DEFAULT_HOST_LINK)), 0),
                        opts.sim_time_scale,
                        copies.clone(),
                    ))),
                    DeviceKind::Cuda => unreachable!("CUDA devices are built together, above"),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_specs() {
        let p = DevicePlan::parse("sim:4x16GiB", None).unwrap();
        assert_eq!((p.kind, p.count, p.pool_bytes), (DeviceKind::Sim, 4, 16 << 30));
        let p = DevicePlan::parse("cpu:2", Some(64 << 20)).unwrap();
        assert_eq!((p.kind, p.count, p.pool_bytes), (DeviceKind::Cpu, 2, 64 << 20));
        let p = DevicePlan::parse("auto", None).unwrap();
        assert_eq!((p.kind, p.count), (DeviceKind::Cpu, 1), "no CUDA back end: auto falls back to cpu");
        for bad in ["gpu", "cpu:0", "sim:2xlots", "cpu:x", "sim:999"] {
            assert!(DevicePlan::parse(bad, None).is_err(), "{bad}");
        }
        let p = DevicePlan::parse("sim:paper-node", None).unwrap();
        assert_eq!((p.kind, p.count, p.pool_bytes), (DeviceKind::Sim, 4, 25_000_000_000));
        let opts = BuildOptions { page_bytes: 2 << 20, host_link: None, sim_time_scale: 0.0, workspace_bytes: 0 };
        let devices = p.build(&opts).unwrap();
        assert_eq!(devices[3].info().peer_links_bytes_per_s[0], Some(48e9));
        assert_eq!(devices[3].info().host_link_bytes_per_s, Some(12e9));
        let err = DevicePlan::parse("cuda", None).unwrap_err().to_string();
        assert!(err.contains("CUDA"), "{err}");
    }
}
