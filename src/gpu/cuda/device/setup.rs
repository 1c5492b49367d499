//! Creating a GPU's device: context, streams, cuBLAS, kernels, the reservations, and the
//! start-up measurements of the copy-throughput elbow and the peer links.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{result as cu, sys, DriverError};

use super::{CudaDevice, PeerHandle, BLAS_WORKSPACE, GRAPHS, PROBE_BYTES, STAGING_SLOTS};
use crate::gpu::chunks;
use crate::gpu::cuda::kernels::Kernels;
use crate::gpu::graph_cache::GraphCache;
use crate::gpu::{DeviceError, DeviceInfo};

impl CudaDevice {
    /// Sets up GPU `ordinal` on the calling thread: reserves `pool_bytes` (0: most of the free
    /// memory) and `work_bytes`, loads the kernels, and measures the copy-throughput elbow.
    pub fn new(
        ordinal: usize,
        pool_bytes: u64,
        page_bytes: u64,
        work_bytes: u64,
    ) -> Result<(Self, PeerHandle), DeviceError> {
        let id = format!("cuda:{ordinal}");
        let fail = |what: &str, e: &dyn std::fmt::Display| DeviceError::Unavailable(format!("{id}: {what}: {e}"));
        let dev = cu::device::get(ordinal as i32).map_err(|e| fail("no such device", &e))?;
        // SAFETY: `dev` came from `device::get`; the primary context stays retained for the life
        // of the process (devices are created once).
        let ctx = unsafe { cu::primary_ctx::retain(dev) }.map_err(|e| fail("cannot create a context", &e))?;
        // SAFETY: `ctx` was just retained.
        unsafe { cu::ctx::set_current(ctx) }.map_err(|e| fail("cannot use its context", &e))?;
        let name = cu::device::get_name(dev).unwrap_or_else(|_| "unknown GPU".into());
        let mut bus = [0 as std::ffi::c_char; 32];
        // SAFETY: `bus` holds 32 bytes, as the length says; the driver NUL-terminates it.
        let pci = unsafe { sys::cuDeviceGetPCIBusId(bus.as_mut_ptr(), bus.len() as i32, dev) }
            .result()
            .map(|_| {
                // SAFETY: NUL-terminated by the driver within the buffer.
                unsafe { std::ffi::CStr::from_ptr(bus.as_ptr()) }.to_string_lossy().into_owned()
            })
            .unwrap_or_else(|_| "unknown".into());
        let (free, total) = cu::mem_get_info().map_err(|e| fail("cannot read its memory", &e))?;
        let pool_bytes = if pool_bytes == 0 {
            // Leave room for cuBLAS, the module and the driver.
            let spare = (free as u64).saturating_sub(work_bytes).saturating_sub(2 << 30);
            spare / page_bytes * page_bytes
        } else {
            pool_bytes / page_bytes * page_bytes
        };
        if pool_bytes == 0 || pool_bytes + work_bytes > free as u64 {
            return Err(DeviceError::Unavailable(format!(
                "{id} ({name}): a weight pool of {pool_bytes} bytes and a workspace of {work_bytes} bytes do not fit \
                 its {free} free bytes; lower --device-memory or --workspace"
            )));
        }
        // SAFETY: a context is current; the two regions are kept for the life of the process (the
        // devices are).
        let (pool, work, blas_work) = unsafe {
            let pool = cu::malloc_sync(pool_bytes as usize).map_err(|e| fail("cannot reserve the weight pool", &e))?;
            let work = cu::malloc_sync(work_bytes as usize).map_err(|e| fail("cannot reserve the workspace", &e))?;
            let blas_work =
                cu::malloc_sync(BLAS_WORKSPACE).map_err(|e| fail("cannot reserve cuBLAS's workspace", &e))?;
            (pool, work, blas_work)
        };
        let (_, greatest) = cu::stream::get_priority_range().unwrap_or((0, 0));
        let copy = cu::stream::create_with_priority(cu::stream::StreamKind::NonBlocking, greatest)
            .map_err(|e| fail("cannot create the copy stream", &e))?;
        let compute = cu::stream::create(cu::stream::StreamKind::NonBlocking)
            .map_err(|e| fail("cannot create the compute stream", &e))?;
        let blas = blas::create_handle().map_err(|e| fail("cannot create a cuBLAS handle", &e))?;
        let tf32 = std::env::var("FAASWAP_CUDA_TF32").is_ok_and(|v| v == "1");
        // SAFETY: `blas` and `compute` were just created in this context.
        unsafe {
            blas::set_stream(blas, compute as blas_sys::cudaStream_t).map_err(|e| fail("cuBLAS stream", &e))?;
            let mode = if tf32 {
                blas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
            } else {
                blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH
            };
            blas_sys::cublasSetMathMode(blas, mode).result().map_err(|e| fail("cuBLAS math mode", &e))?;
            blas_sys::cublasSetWorkspace_v2(blas, blas_work as *mut c_void, BLAS_WORKSPACE)
                .result()
                .map_err(|e| fail("cuBLAS workspace", &e))?;
        }
        let attr = |a| {
            let mut v = 0;
            // SAFETY: `dev` is a valid device and `v` a valid out pointer.
            unsafe { sys::cuDeviceGetAttribute(&mut v, a, dev) }.result().map(|_| v)
        };
        let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
            .map_err(|e| fail("cannot read its compute capability", &e))?;
        let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
            .map_err(|e| fail("cannot read its compute capability", &e))?;
        let image =
            crate::gpu::cuda::kernels::image(&format!("sm_{major}{minor}")).map_err(DeviceError::Unavailable)?;
        let kernels = Kernels::load(&image).map_err(|e| fail("cannot load the kernels", &e))?;
        let timing = |f| cu::event::create(f).map_err(|e| fail("cannot create an event", &e));
        let start = timing(sys::CUevent_flags::CU_EVENT_DEFAULT)?;
        let copied = timing(sys::CUevent_flags::CU_EVENT_DEFAULT)?;
        let mut device = Self {
            info: DeviceInfo {
                id: id.clone(),
                kind: crate::gpu::DeviceKind::Cuda,
                pool_bytes,
                page_bytes,
                workspace_bytes: work_bytes,
                host_link_bytes_per_s: None,
                peer_links_bytes_per_s: Vec::new(),
                host_group: ordinal,
                pci_bus_id: Some(pci.clone()),
            },
            ctx,
            copy,
            compute,
            blas,
            kernels,
            pool,
            work,
            layer_events: Vec::new(),
            start,
            copied,
            chunk_bytes: 4 << 20,
            staging: Vec::new(),
            peers: Arc::default(),
            graphs: GraphCache::new(GRAPHS),
            use_graphs: std::env::var("FAASWAP_CUDA_GRAPHS").map_or(true, |v| v != "0"),
        };
        let (chunk, link) = device.measure_chunk().map_err(|e| fail("copy measurement failed", &e))?;
        device.chunk_bytes = chunk;
        device.info.host_link_bytes_per_s = Some(link);
        for _ in 0..STAGING_SLOTS {
            // SAFETY: a context is current; the buffers are kept for the life of the process.
            let buf = unsafe { cu::malloc_host(chunk, sys::CU_MEMHOSTALLOC_PORTABLE) }
                .map_err(|e| fail("cannot allocate pinned staging memory", &e))?;
            device.staging.push((buf, timing(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)?));
        }
        tracing::info!(
            "{id}: {name} (PCI {pci}), {total} bytes, weight pool {pool_bytes} bytes, workspace {work_bytes} bytes, host link \
             {:.1} GB/s pinned, swap chunks of {} MiB{}",
            link / 1e9,
            chunk >> 20,
            if tf32 { ", TF32 GEMMs (about 1e-3 relative error)" } else { ", FP32 GEMMs" }
        );
        let handle = PeerHandle { ctx: ctx as usize, pool };
        Ok((device, handle))
    }

    /// Copies `PROBE_BYTES` from pinned host memory in each candidate chunk size and returns the
    /// elbow and the best throughput.
    fn measure_chunk(&mut self) -> Result<(usize, f64), DriverError> {
        let bytes = PROBE_BYTES.min(self.info.pool_bytes as usize);
        // SAFETY: a context is current; the buffer is freed below, after the copies completed.
        let host = unsafe { cu::malloc_host(bytes, sys::CU_MEMHOSTALLOC_PORTABLE)? };
        // SAFETY: `host` holds `bytes` writable bytes.
        unsafe { std::ptr::write_bytes(host as *mut u8, 0, bytes) };
        let mut samples = Vec::new();
        let run = |chunk: usize| -> Result<f64, DriverError> {
            // SAFETY: source and destination hold `bytes`; the events and stream belong to this
            // context; the copies complete before `event::synchronize` returns.
            unsafe {
                cu::event::record(self.start, self.copy)?;
                let mut at = 0;
                while at < bytes {
                    let len = chunk.min(bytes - at);
                    sys::cuMemcpyHtoDAsync_v2(
                        self.pool + at as u64,
                        (host as *const u8).add(at) as *const c_void,
                        len,
                        self.copy,
                    )
                    .result()?;
                    at += len;
                }
                cu::event::record(self.copied, self.copy)?;
                cu::event::synchronize(self.copied)?;
                let ms = cu::event::elapsed(self.start, self.copied)?;
                Ok(bytes as f64 / (f64::from(ms) / 1e3))
            }
        };
        let result = (|| {
            run(chunks::CANDIDATES[chunks::CANDIDATES.len() - 1])?; // warm-up
            for chunk in chunks::CANDIDATES {
                samples.push((chunk, run(chunk)?));
            }
            Ok(())
        })();
        // SAFETY: no copy from `host` is pending (each run synchronised).
        unsafe { cu::free_host(host)? };
        result?;
        let best = samples.iter().map(|s| s.1).fold(0.0, f64::max);
        tracing::debug!("{}: copy throughput by chunk size: {samples:?}", self.info.id);
        Ok((chunks::choose(&samples).unwrap_or(4 << 20), best))
    }

    /// Times a 64 MiB copy from `peer` into this GPU's pool (for the scheduler's peer links).
    pub fn measure_peer(&mut self, peer: PeerHandle) -> Result<f64, DriverError> {
        let bytes = (64usize << 20).min(self.info.pool_bytes as usize);
        // SAFETY: both pools hold at least `bytes`; nothing else runs during start-up.
        unsafe {
            cu::ctx::set_current(self.ctx)?;
            cu::event::record(self.start, self.copy)?;
            cu::memcpy_peer_async(self.ctx, self.pool, peer.ctx as sys::CUcontext, peer.pool, bytes, self.copy)?;
            cu::event::record(self.copied, self.copy)?;
            cu::event::synchronize(self.copied)?;
            let ms = cu::event::elapsed(self.start, self.copied)?;
            Ok(bytes as f64 / (f64::from(ms) / 1e3))
        }
    }
}
