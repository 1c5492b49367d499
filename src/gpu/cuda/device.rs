//! One GPU: its context, a high-priority copy stream and a compute stream, a cuBLAS handle,
//! the kernels, and the weight pool and workspace reserved once at start-up. Runs device
//! programs with the swap-in pipelined underneath: chunks are copied in first-use order, an
//! event marks the end of each layer's copy, and the compute stream waits per layer only for
//! the layer it is about to read.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{result as cu, sys, DriverError};

use super::kernels::{Arg, Kernels};
use super::pin;
use crate::engine::program::{Act, Op, Program, Ptr};
use crate::engine::{EngineError, Model, OutputTensor};
use crate::gpu::chunks::{self, Chunk, Cursor};
use crate::gpu::faults::FaultKind;
use crate::gpu::graph_cache::{GraphCache, GraphKey};
use crate::gpu::schedule::{self, Step, Swap};
use crate::gpu::{Device, DeviceError, DeviceInfo, Generated, Job, JobResult};
use crate::policy::{Extent, SwapSource};

/// Pinned staging buffers for swaps from pageable memory.
const STAGING_SLOTS: usize = 4;
/// Bytes copied per chunk size in the start-up measurement.
const PROBE_BYTES: usize = 128 << 20;
/// cuBLAS's own workspace, given to it once so that it never allocates (and can be captured
/// in a graph); 32 MiB is what NVIDIA recommends for Hopper.
const BLAS_WORKSPACE: usize = 32 << 20;
/// Captured forward passes kept per GPU.
const GRAPHS: usize = 64;

/// What other GPUs need to copy from this one.
#[derive(Debug, Clone, Copy)]
pub struct PeerHandle {
    pub ctx: usize,
    pub pool: u64,
}

pub struct CudaDevice {
    info: DeviceInfo,
    ordinal: i32,
    ctx: sys::CUcontext,
    copy: sys::CUstream,
    compute: sys::CUstream,
    blas: blas_sys::cublasHandle_t,
    kernels: Kernels,
    pool: u64,
    work: u64,
    work_bytes: u64,
    /// One per layer (grown on demand; creating an event allocates no device memory).
    layer_events: Vec<sys::CUevent>,
    /// Timing events: job start, end of the copy, end of execution.
    start: sys::CUevent,
    copied: sys::CUevent,
    chunk_bytes: usize,
    staging: Vec<(*mut c_void, sys::CUevent)>,
    peers: Arc<Vec<PeerHandle>>,
    /// Warm forward passes replayed as CUDA graphs (off after a capture fails, or with
    /// `FAASWAP_CUDA_GRAPHS=0`).
    graphs: GraphCache<sys::CUgraphExec>,
    use_graphs: bool,
}

// SAFETY: the raw handles are only used from the thread that owns the device at the time (the
// GPU actor's), which makes the device's context current before every use.
unsafe impl Send for CudaDevice {}

/// Where a swap-in copies from.
enum Source<'a> {
    Pinned(&'a [u8]),
    Pageable(&'a [u8]),
    Peer { ctx: usize, ptr: u64 },
}

/// A swap-in in progress: the chunks still to enqueue.
struct Copy<'a> {
    source: Source<'a>,
    chunks: Cursor,
    /// Chunks staged so far (the staging slot to use next).
    staged: usize,
    dst: u64,
}

fn copy_fault(e: DriverError) -> Failure {
    Failure::Driver(FaultKind::CopyFail, e)
}

fn kernel_fault(e: DriverError) -> Failure {
    Failure::Driver(FaultKind::KernelFail, e)
}

/// Why a program did not complete.
enum Failure {
    Driver(FaultKind, DriverError),
    Blas(blas::CublasError),
    Engine(EngineError),
}

impl CudaDevice {
    /// Sets up GPU `ordinal` on the calling thread: reserves `pool_bytes` (0: most of the free
    /// memory) and `work_bytes`, loads the kernels, and measures the copy-throughput elbow.
    pub fn new(
        ordinal: usize,
        pool_bytes: u64,
        page_bytes: u64,
        work_bytes: u64,
        peers: Arc<Vec<PeerHandle>>,
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
        // SAFETY: a context is current; the two regions are freed only with the context (they
        // live as long as the process's devices).
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
        let image = super::kernels::image(&format!("sm_{major}{minor}")).map_err(DeviceError::Unavailable)?;
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
            ordinal: ordinal as i32,
            ctx,
            copy,
            compute,
            blas,
            kernels,
            pool,
            work,
            work_bytes,
            layer_events: Vec::new(),
            start,
            copied,
            chunk_bytes: 4 << 20,
            staging: Vec::new(),
            peers,
            graphs: GraphCache::new(GRAPHS),
            use_graphs: std::env::var("FAASWAP_CUDA_GRAPHS").map_or(true, |v| v != "0"),
        };
        let (chunk, link) = device.measure_chunk().map_err(|e| fail("copy measurement failed", &e))?;
        device.chunk_bytes = chunk;
        device.info.host_link_bytes_per_s = Some(link);
        for _ in 0..STAGING_SLOTS {
            // SAFETY: a context is current; the buffers are freed with the device.
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

    pub fn ordinal(&self) -> i32 {
        self.ordinal
    }

    pub fn context(&self) -> sys::CUcontext {
        self.ctx
    }

    pub fn set_peers(&mut self, peers: Arc<Vec<PeerHandle>>) {
        self.peers = peers;
    }

    pub fn set_peer_links(&mut self, links: Vec<Option<f64>>) {
        self.info.peer_links_bytes_per_s = links;
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

    fn layer_event(&mut self, layer: usize) -> Result<sys::CUevent, DriverError> {
        while self.layer_events.len() <= layer {
            self.layer_events.push(cu::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)?);
        }
        Ok(self.layer_events[layer])
    }

    /// Issues one chunk of a swap-in on the copy stream.
    fn copy_chunk(&mut self, copy: &mut Copy<'_>, c: Chunk) -> Result<(), DriverError> {
        let dst = copy.dst + c.offset as u64;
        // SAFETY: `dst..dst + len` lies inside the job's extent of the pool (checked in `run`);
        // the sources outlive the job (the model is held by it; a peer source is pinned against
        // eviction by the scheduler) and the job drains the copy stream before it returns; a
        // staging slot is reused only after its previous copy completed.
        unsafe {
            match &copy.source {
                // An empty layer: nothing to copy; its event follows the chunks before it.
                _ if c.len == 0 => {}
                Source::Pinned(host) => {
                    let src = host[c.offset..c.offset + c.len].as_ptr() as *const c_void;
                    sys::cuMemcpyHtoDAsync_v2(dst, src, c.len, self.copy).result()?;
                }
                Source::Pageable(host) => {
                    let (buf, ev) = self.staging[copy.staged % self.staging.len()];
                    copy.staged += 1;
                    cu::event::synchronize(ev)?;
                    std::ptr::copy_nonoverlapping(host[c.offset..].as_ptr(), buf as *mut u8, c.len);
                    sys::cuMemcpyHtoDAsync_v2(dst, buf, c.len, self.copy).result()?;
                    cu::event::record(ev, self.copy)?;
                }
                Source::Peer { ctx, ptr } => {
                    cu::memcpy_peer_async(
                        self.ctx,
                        dst,
                        *ctx as sys::CUcontext,
                        ptr + c.offset as u64,
                        c.len,
                        self.copy,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn ptr(&self, p: Ptr, weights: u64) -> u64 {
        match p {
            Ptr::W(o) => weights + o as u64 * 4,
            Ptr::A(o) => self.work + o as u64 * 4,
        }
    }

    fn a(&self, offset: usize) -> Arg {
        Arg::Ptr(self.work + offset as u64 * 4)
    }

    fn w(weights: u64, offset: usize) -> Arg {
        Arg::Ptr(weights + offset as u64 * 4)
    }

    /// Runs `program` against the weights at `weights`, copying them in underneath when `copy`
    /// is given; a warm run may replay a CUDA graph when `graph`. Returns the output and the
    /// copy's duration in ms. On failure both streams are drained first, so no copy still reads
    /// a host buffer the caller may free.
    fn exec(
        &mut self,
        program: &Program,
        weights: u64,
        copy: Option<Copy<'_>>,
        graph: bool,
    ) -> Result<(Vec<f32>, f64), Failure> {
        let result = self.exec_inner(program, weights, copy, graph);
        if result.is_err() {
            // SAFETY: the streams belong to this context; errors here add nothing to the one
            // being returned.
            unsafe {
                let _ = cu::stream::synchronize(self.copy);
                let _ = cu::stream::synchronize(self.compute);
            }
        }
        result
    }

    fn exec_inner(
        &mut self,
        program: &Program,
        weights: u64,
        mut copy: Option<Copy<'_>>,
        graph: bool,
    ) -> Result<(Vec<f32>, f64), Failure> {
        if program.work_bytes() > self.work_bytes {
            return Err(Failure::Engine(EngineError::WorkspaceTooSmall {
                needed: program.work_bytes(),
                available: self.work_bytes,
            }));
        }
        let replay = copy.is_none() && graph && self.use_graphs;
        let swap =
            copy.as_mut().map(|c| Swap { eager: !matches!(c.source, Source::Pageable(_)), chunks: &mut c.chunks });
        let wait = sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT;
        for step in schedule::steps(program, swap, replay) {
            // The events and streams below belong to this context, which `run` made current.
            match step {
                // SAFETY: events and streams of this context.
                Step::Start => unsafe {
                    cu::event::record(self.start, self.compute).map_err(kernel_fault)?;
                    cu::stream::wait_event(self.copy, self.start, wait).map_err(copy_fault)?;
                },
                Step::Upload(i) => {
                    let (at, words) = &program.inputs[i];
                    // SAFETY: the input region lies inside the workspace (checked above); a copy
                    // from pageable memory returns once its source is staged.
                    unsafe { cu::memcpy_htod_async(self.work + *at as u64 * 4, words, self.compute) }
                        .map_err(kernel_fault)?;
                }
                Step::Copy(c) => {
                    let copy = copy.as_mut().expect("copy steps come with a swap");
                    self.copy_chunk(copy, c).map_err(copy_fault)?;
                }
                Step::LayerCopied(l) => {
                    let ev = self.layer_event(l).map_err(copy_fault)?;
                    // SAFETY: an event and a stream of this context.
                    unsafe { cu::event::record(ev, self.copy) }.map_err(copy_fault)?;
                }
                // SAFETY: an event and a stream of this context.
                Step::AllCopied => unsafe { cu::event::record(self.copied, self.copy) }.map_err(copy_fault)?,
                Step::Await(l) => {
                    let ev = self.layer_event(l).map_err(kernel_fault)?;
                    // SAFETY: an event of this context, recorded by an earlier step (the schedule
                    // guarantees it), and a stream of this context.
                    unsafe { cu::stream::wait_event(self.compute, ev, wait) }.map_err(kernel_fault)?;
                }
                Step::Launch(op) => self.launch(op, weights)?,
                Step::Replay => {
                    if !self.replay(program, weights)? {
                        for op in program.ops.iter().filter(|o| !matches!(o, Op::WaitLayer(_))) {
                            self.launch(op, weights)?;
                        }
                    }
                }
                Step::Finish => break,
            }
        }
        self.finish(program, copy)
    }

    /// Runs `program`'s launches as a CUDA graph: replays a captured one, or captures and keeps
    /// a new one. Returns false (and turns graphs off for this GPU) when capture fails, in which
    /// case nothing was launched and the caller runs the program eagerly.
    fn replay(&mut self, program: &Program, weights: u64) -> Result<bool, Failure> {
        if let Some(&exec) = self.graphs.get(weights, &program.ops) {
            // SAFETY: `exec` was instantiated in this context and is destroyed only on eviction.
            unsafe { cu::graph::launch(exec, self.compute) }.map_err(kernel_fault)?;
            return Ok(true);
        }
        let captured = self.capture(program, weights);
        match captured {
            Ok(exec) => {
                if let Some(old) = self.graphs.insert(GraphKey { weights, ops: program.ops.clone() }, exec) {
                    // SAFETY: no launch of `old` is pending: each job synchronises its stream.
                    let _ = unsafe { cu::graph::exec_destroy(old) };
                }
                // SAFETY: as above.
                unsafe { cu::graph::launch(exec, self.compute) }.map_err(kernel_fault)?;
                Ok(true)
            }
            Err(why) => {
                tracing::warn!("{}: CUDA graph capture failed ({why}); running programs eagerly", self.info.id);
                self.use_graphs = false;
                Ok(false)
            }
        }
    }

    fn capture(&mut self, program: &Program, weights: u64) -> Result<sys::CUgraphExec, String> {
        // SAFETY: the compute stream belongs to this context and nothing else uses it meanwhile;
        // a capture that fails part-way is ended, which returns the stream to normal.
        unsafe {
            cu::stream::begin_capture(self.compute, sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                .map_err(|e| e.to_string())?;
            let launched = program.ops.iter().try_for_each(|op| self.launch(op, weights));
            let graph = cu::stream::end_capture(self.compute);
            if let Err(f) = launched {
                if let Ok(g) = graph {
                    let _ = cu::graph::destroy(g);
                }
                return Err(match f {
                    Failure::Driver(_, e) => e.to_string(),
                    Failure::Blas(e) => e.to_string(),
                    Failure::Engine(e) => e.to_string(),
                });
            }
            let graph = graph.map_err(|e| e.to_string())?;
            let exec = cu::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0));
            let _ = cu::graph::destroy(graph);
            exec.map_err(|e| e.to_string())
        }
    }

    /// Reads the output back once the program (and any copy) is complete.
    fn finish(&mut self, program: &Program, copy: Option<Copy<'_>>) -> Result<(Vec<f32>, f64), Failure> {
        let (at, len) = program.output;
        let mut out = vec![0f32; len];
        // SAFETY: the output region lies in the workspace; the copy is ordered after the
        // program on the compute stream and complete when the stream is synchronised.
        unsafe {
            cu::memcpy_dtoh_async(&mut out, self.work + at as u64 * 4, self.compute).map_err(kernel_fault)?;
            cu::stream::synchronize(self.compute).map_err(kernel_fault)?;
        }
        let swap_ms = match copy {
            None => 0.0,
            // SAFETY: both events were recorded in this context; the copy stream is drained.
            Some(_) => unsafe {
                cu::stream::synchronize(self.copy).map_err(copy_fault)?;
                f64::from(cu::event::elapsed(self.start, self.copied).map_err(copy_fault)?)
            },
        };
        Ok((out, swap_ms))
    }

    fn launch(&self, op: &Op, weights: u64) -> Result<(), Failure> {
        let k = &self.kernels;
        let s = self.compute;
        let opt_a = |o: Option<usize>| o.map_or(Arg::Ptr(0), |o| self.a(o));
        let opt_w = |o: Option<usize>| o.map_or(Arg::Ptr(0), |o| Self::w(weights, o));
        let block = |width: usize| (width.div_ceil(32) * 32).clamp(32, 256) as u32;
        let grid = |total: usize| (total.div_ceil(256).clamp(1, 1 << 16) as u32, 1, 1);
        let i = |v: usize| Arg::I32(v as i32);
        match *op {
            Op::WaitLayer(_) => Ok(()),
            Op::Embed { ids, types, word, pos, token_type, rows, t, start, width, out } => k
                .launch(
                    "embed",
                    (rows as u32, 1, 1),
                    block(width),
                    s,
                    &[
                        self.a(ids),
                        opt_a(types),
                        Self::w(weights, word),
                        Self::w(weights, pos),
                        opt_w(token_type),
                        i(t),
                        i(start),
                        i(width),
                        self.a(out),
                    ],
                )
                .map_err(kernel_fault),
            Op::LayerNorm { x, bias, residual, gamma, beta, rows, width, eps, out } => k
                .launch(
                    "layer_norm",
                    (rows as u32, 1, 1),
                    block(width),
                    s,
                    &[
                        self.a(x),
                        opt_w(bias),
                        opt_a(residual),
                        Self::w(weights, gamma),
                        Self::w(weights, beta),
                        i(width),
                        Arg::F32(eps),
                        self.a(out),
                    ],
                )
                .map_err(kernel_fault),
            Op::BiasAct { x, bias, rows, width, act, residual, out } => {
                let act = match act {
                    Act::None => 0,
                    Act::GeluErf => 1,
                    Act::GeluTanh => 2,
                    Act::Relu => 3,
                };
                k.launch(
                    "bias_act",
                    grid(rows * width),
                    256,
                    s,
                    &[
                        self.a(x),
                        Self::w(weights, bias),
                        opt_a(residual),
                        Arg::I64((rows * width) as i64),
                        i(width),
                        Arg::I32(act),
                        self.a(out),
                    ],
                )
                .map_err(kernel_fault)
            }
            Op::Softmax { scores, heads, q_len, kv_len, mask, causal } => k
                .launch(
                    "softmax",
                    (q_len as u32, heads as u32, 1),
                    block(kv_len),
                    s,
                    &[self.a(scores), i(q_len), i(kv_len), opt_a(mask), Arg::I32(i32::from(causal))],
                )
                .map_err(kernel_fault),
            Op::KvAppend { qkv, k: kc, v, batch, t, heads, head_dim, capacity, start } => k
                .launch(
                    "kv_append",
                    grid(batch * t * heads * head_dim),
                    256,
                    s,
                    &[self.a(qkv), self.a(kc), self.a(v), i(batch), i(t), i(heads), i(head_dim), i(capacity), i(start)],
                )
                .map_err(kernel_fault),
            Op::ZeroRows { x, mask, rows, width } => k
                .launch(
                    "zero_rows",
                    grid(rows * width),
                    256,
                    s,
                    &[self.a(x), self.a(mask), Arg::I64((rows * width) as i64), i(width)],
                )
                .map_err(kernel_fault),
            Op::Gemm(g) => {
                let op = |t: bool| {
                    if t {
                        blas_sys::cublasOperation_t::CUBLAS_OP_T
                    } else {
                        blas_sys::cublasOperation_t::CUBLAS_OP_N
                    }
                };
                let (alpha, beta) = (g.alpha, g.beta);
                // SAFETY: every operand lies in the weights or the workspace (the programs are
                // checked against the CPU twin, which bounds-checks each access); α and β are
                // host scalars read before the call returns.
                unsafe {
                    blas::sgemm_strided_batched(
                        self.blas,
                        op(g.trans_a),
                        op(g.trans_b),
                        g.m as i32,
                        g.n as i32,
                        g.k as i32,
                        &alpha,
                        self.ptr(g.a, weights) as *const f32,
                        g.lda as i32,
                        g.stride_a as i64,
                        self.ptr(g.b, weights) as *const f32,
                        g.ldb as i32,
                        g.stride_b as i64,
                        &beta,
                        (self.work + g.c as u64 * 4) as *mut f32,
                        g.ldc as i32,
                        g.stride_c as i64,
                        g.batch as i32,
                    )
                }
                .map_err(Failure::Blas)
            }
        }
    }

    fn fault(&self, failure: Failure) -> DeviceError {
        match failure {
            Failure::Engine(e) => DeviceError::Engine(e),
            Failure::Driver(kind, e) => {
                let kind =
                    if e.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY { FaultKind::OutOfMemory } else { kind };
                tracing::error!("{}: CUDA error: {e}", self.info.id);
                DeviceError::Fault { device: self.info.id.clone(), kind }
            }
            Failure::Blas(e) => {
                tracing::error!("{}: cuBLAS error: {e}", self.info.id);
                DeviceError::Fault { device: self.info.id.clone(), kind: FaultKind::KernelFail }
            }
        }
    }

    fn source<'m>(&self, model: &'m Model, job: &Job) -> Result<Source<'m>, DeviceError> {
        let host = model.weights();
        // SAFETY: reinterpreting initialised `f32`s as bytes.
        let bytes = unsafe { std::slice::from_raw_parts(host.as_ptr() as *const u8, std::mem::size_of_val(host)) };
        match job.swap {
            Some(SwapSource::Peer(j)) => {
                let extent = job
                    .source_extent
                    .ok_or_else(|| DeviceError::BadSpec("a peer copy needs the source's extent".into()))?;
                let peer = self.peers.get(j).ok_or_else(|| DeviceError::BadSpec(format!("no CUDA device {j}")))?;
                Ok(Source::Peer { ctx: peer.ctx, ptr: peer.pool + extent.first as u64 * self.info.page_bytes })
            }
            _ => Ok(if pin::pin(model).unwrap_or(false) { Source::Pinned(bytes) } else { Source::Pageable(bytes) }),
        }
    }

    fn base(&self, extent: Extent) -> u64 {
        self.pool + extent.first as u64 * self.info.page_bytes
    }
}

impl Device for CudaDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn run(&mut self, job: &Job) -> Result<JobResult, DeviceError> {
        let model = job.model()?;
        let spec = &model.spec;
        let bytes = model.weights().len() as u64 * 4;
        assert!(
            bytes <= job.extent.pages as u64 * self.info.page_bytes,
            "the scheduler gave an extent smaller than the model"
        );
        let t0 = std::time::Instant::now();
        let source = match job.swap {
            None => None,
            Some(_) => Some(self.source(model, job)?),
        };
        // SAFETY: the context was retained at creation.
        unsafe { cu::ctx::set_current(self.ctx) }.map_err(|e| self.fault(kernel_fault(e)))?;
        let weights = self.base(job.extent);
        let mut copy = match source {
            None => None,
            Some(source) => Some(Copy {
                source,
                chunks: Cursor::new(chunks::plan(&spec.layout.layers, self.chunk_bytes)),
                staged: 0,
                dst: weights,
            }),
        };
        let swapped_bytes = if copy.is_some() { bytes } else { 0 };
        let mut swap_ms = 0.0;
        let (outputs, generated): (Vec<OutputTensor>, Option<Generated>) = match &job.generation {
            None => {
                spec.check_request(&job.batch, &job.outputs)?;
                let program = spec.forward_program(&job.batch);
                let (data, ms) = self.exec(&program, weights, copy.take(), true).map_err(|f| self.fault(f))?;
                swap_ms = ms;
                (spec.outputs_of(&job.batch, &job.outputs, data), None)
            }
            Some(g) => {
                let mut failure = None;
                let generated = g.run(spec, |on_token| {
                    spec.generate_with(&g.prompt, &g.options, on_token, &mut |program| match self.exec(
                        program,
                        weights,
                        copy.take(),
                        false,
                    ) {
                        Ok((data, ms)) => {
                            swap_ms += ms;
                            Ok(data)
                        }
                        Err(Failure::Engine(e)) => Err(e),
                        Err(f) => {
                            failure = Some(f);
                            Err(EngineError::BadInput("the device failed".into()))
                        }
                    })
                });
                if let Some(f) = failure {
                    return Err(self.fault(f));
                }
                (Vec::new(), Some(generated?))
            }
        };
        Ok(JobResult {
            outputs,
            generated,
            swap_ms,
            exec_ms: t0.elapsed().as_secs_f64() * 1e3,
            swapped_bytes,
            simulated: false,
        })
    }

    fn raw_copy_ms(&mut self, model: &Model, extent: Extent) -> Result<Option<f64>, DeviceError> {
        let host = model.weights();
        let bytes = std::mem::size_of_val(host);
        assert!(bytes as u64 <= extent.pages as u64 * self.info.page_bytes, "the extent holds the model");
        let _ = pin::pin(model);
        // SAFETY: the destination lies in the pool (checked above); the source lives while
        // `model` does and the copy completes before this returns.
        let ms = unsafe {
            cu::ctx::set_current(self.ctx)
                .and_then(|_| cu::event::record(self.start, self.copy))
                .and_then(|_| {
                    sys::cuMemcpyHtoDAsync_v2(self.base(extent), host.as_ptr() as *const c_void, bytes, self.copy)
                        .result()
                })
                .and_then(|_| cu::event::record(self.copied, self.copy))
                .and_then(|_| cu::event::synchronize(self.copied))
                .and_then(|_| cu::event::elapsed(self.start, self.copied))
        }
        .map_err(|e| self.fault(copy_fault(e)))?;
        Ok(Some(f64::from(ms)))
    }

    fn health_check(&mut self) -> Result<(), DeviceError> {
        // SAFETY: the context was retained at creation.
        let result = unsafe { cu::ctx::set_current(self.ctx) }.and_then(|_| cu::ctx::synchronize());
        result.map_err(|e| self.fault(Failure::Driver(FaultKind::DeviceLost, e)))
    }
}
