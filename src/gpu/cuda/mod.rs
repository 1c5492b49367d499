//! The CUDA back end, on cudarc with run-time loading: one binary serves GPU and non-GPU
//! machines. Only this module touches cudarc. `probe` finds the libraries and the GPUs;
//! `build` creates one `CudaDevice` per GPU on the calling thread (contexts, streams, cuBLAS,
//! the kernels compiled once with NVRTC, the weight pool and workspace reserved once), then
//! discovers peer access between them and measures the links the scheduler plans with.

mod device;
mod kernels;
pub mod libs;
mod pin;

use std::sync::Arc;

use cudarc::driver::{result as cu, sys};

use super::{Device, DeviceError};
use device::CudaDevice;

/// The number of usable CUDA GPUs, or why there are none (naming the missing library and how
/// to point faaswap at it).
pub fn probe() -> Result<usize, DeviceError> {
    libs::load_all().map_err(DeviceError::Unavailable)?;
    // SAFETY: checks whether the driver library can be opened; no CUDA call yet.
    if !unsafe { sys::is_culib_present() } {
        return Err(DeviceError::Unavailable("the CUDA driver library could not be opened".into()));
    }
    cu::init().map_err(|e| {
        DeviceError::Unavailable(format!("cuInit failed ({e}): is an NVIDIA GPU present and its driver loaded?"))
    })?;
    match cu::device::get_count() {
        Ok(n) if n > 0 => Ok(n as usize),
        Ok(_) => Err(DeviceError::Unavailable("the CUDA driver found no GPU".into())),
        Err(e) => Err(DeviceError::Unavailable(format!("cannot count CUDA GPUs: {e}"))),
    }
}

/// Creates `count` GPUs with `pool_bytes` of weight pool each (0: most of the free memory).
pub fn build(
    count: usize,
    pool_bytes: u64,
    page_bytes: u64,
    work_bytes: u64,
) -> Result<Vec<Box<dyn Device>>, DeviceError> {
    probe()?;
    // Every device learns the others' contexts and pools once all exist.
    let mut handles = Vec::with_capacity(count);
    let mut made = Vec::with_capacity(count);
    for i in 0..count {
        let (d, h) = CudaDevice::new(i, pool_bytes, page_bytes, work_bytes)?;
        if i == 0 {
            pin::set_context(d.context());
        }
        handles.push(h);
        made.push(d);
    }
    let peers = Arc::new(handles);
    let links = peer_links(&mut made, &peers);
    Ok(made
        .into_iter()
        .zip(links)
        .map(|(mut d, l)| {
            d.set_peers(peers.clone());
            d.set_peer_links(l);
            Box::new(d) as Box<dyn Device>
        })
        .collect())
}

/// Enables peer access wherever the hardware has it and measures each such link; `None`
/// where a GPU cannot read another's memory directly (copies then go through the host).
fn peer_links(devices: &mut [CudaDevice], peers: &[device::PeerHandle]) -> Vec<Vec<Option<f64>>> {
    let n = devices.len();
    let mut links = vec![vec![None; n]; n];
    for i in 0..n {
        for j in (0..n).filter(|&j| j != i) {
            let mut can = 0;
            // SAFETY: both ordinals are devices the driver reported; `can` is a valid out pointer.
            let ok = unsafe { sys::cuDeviceCanAccessPeer(&mut can, i as i32, j as i32).result().is_ok() };
            if !ok || can == 0 {
                continue;
            }
            // SAFETY: enabling access from device i's context to device j's; "already enabled"
            // is not an error worth stopping for.
            let enabled = unsafe {
                cu::ctx::set_current(devices[i].context())
                    .and_then(|_| sys::cuCtxEnablePeerAccess(peers[j].ctx as sys::CUcontext, 0).result())
            };
            if let Err(e) = enabled {
                if e.0 != sys::cudaError_enum::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED {
                    tracing::warn!("cuda:{i} cannot enable peer access to cuda:{j}: {e}");
                    continue;
                }
            }
            match devices[i].measure_peer(peers[j]) {
                Ok(bw) => {
                    tracing::info!("cuda:{i} reads cuda:{j} directly at {:.1} GB/s", bw / 1e9);
                    links[i][j] = Some(bw);
                }
                Err(e) => tracing::warn!("cuda:{i} peer copy from cuda:{j} failed: {e}"),
            }
        }
    }
    links
}

/// Page-locks a deployed model's host weights when CUDA devices exist; returns whether it is
/// pinned (`None`: no CUDA device in this process).
pub fn prepare_host(model: &crate::engine::Model) -> Option<bool> {
    pin::pin(model)
}
