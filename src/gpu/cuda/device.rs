//! One GPU: its context, a high-priority copy stream and a compute stream, a cuBLAS handle,
//! the kernels, and the weight pool and workspace reserved once at start-up. Runs device
//! programs with the swap-in pipelined underneath: chunks are copied in first-use order, an
//! event marks the end of each layer's copy, and the compute stream waits per layer only for
//! the layer it is about to read.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{result as cu, sys, DriverError};

use super::kernels::Kernels;
use super::pin;
use crate::engine::program::{Op, Program};
use crate::engine::{EngineError, Model, OutputTensor};
use crate::gpu::chunks::{self, Chunk, Cursor};
use crate::gpu::faults::FaultKind;
use crate::gpu::graph_cache::GraphCache;
use crate::gpu::schedule::{self, Step, Swap};
use crate::gpu::{Device, DeviceError, DeviceInfo, Job, JobResult};
use crate::policy::{Extent, SwapSource};
use crate::request::Generated;

mod graphs;
mod launch;
mod setup;

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
    ctx: sys::CUcontext,
    copy: sys::CUstream,
    compute: sys::CUstream,
    blas: blas_sys::cublasHandle_t,
    kernels: Kernels,
    pool: u64,
    work: u64,
    /// One per layer (grown on demand; creating an event allocates no device memory).
    layer_events: Vec<sys::CUevent>,
    /// Timing events: the job's start and the end of its copy.
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
struct SwapIn<'a> {
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
    pub fn context(&self) -> sys::CUcontext {
        self.ctx
    }

    pub fn set_peers(&mut self, peers: Arc<Vec<PeerHandle>>) {
        self.peers = peers;
    }

    pub fn set_peer_links(&mut self, links: Vec<Option<f64>>) {
        self.info.peer_links_bytes_per_s = links;
    }

    fn layer_event(&mut self, layer: usize) -> Result<sys::CUevent, DriverError> {
        while self.layer_events.len() <= layer {
            self.layer_events.push(cu::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)?);
        }
        Ok(self.layer_events[layer])
    }

    /// Issues one chunk of a swap-in on the copy stream.
    fn copy_chunk(&mut self, copy: &mut SwapIn<'_>, c: Chunk) -> Result<(), DriverError> {
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

    /// Runs `program` against the weights at `weights`, copying them in underneath when `copy`
    /// is given; a warm run may replay a CUDA graph when `graph`. Returns the output and the
    /// copy's duration in ms. On failure both streams are drained first, so no copy still reads
    /// a host buffer the caller may free.
    fn exec(
        &mut self,
        program: &Program,
        weights: u64,
        copy: Option<SwapIn<'_>>,
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
        mut copy: Option<SwapIn<'_>>,
        graph: bool,
    ) -> Result<(Vec<f32>, f64), Failure> {
        if program.work_bytes() > self.info.workspace_bytes {
            return Err(Failure::Engine(EngineError::WorkspaceTooSmall {
                needed: program.work_bytes(),
                available: self.info.workspace_bytes,
            }));
        }
        let t0 = std::time::Instant::now();
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
        self.finish(program, copy, t0, replay)
    }

    /// Reads the output back once the program (and any copy) is complete. At debug level it
    /// logs the job's phases since `t0` (enqueue, the wait for the program, the read-back),
    /// which takes one extra stream synchronisation.
    fn finish(
        &mut self,
        program: &Program,
        copy: Option<SwapIn<'_>>,
        t0: std::time::Instant,
        replay: bool,
    ) -> Result<(Vec<f32>, f64), Failure> {
        let (at, len) = program.output;
        let mut out = vec![0f32; len];
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let enqueued = t0.elapsed();
        // SAFETY: the output region lies in the workspace; the copy is ordered after the
        // program on the compute stream and complete when the stream is synchronised.
        unsafe {
            let computed = if tracing::enabled!(tracing::Level::DEBUG) {
                cu::stream::synchronize(self.compute).map_err(kernel_fault)?;
                Some(t0.elapsed())
            } else {
                None
            };
            cu::memcpy_dtoh_async(&mut out, self.work + at as u64 * 4, self.compute).map_err(kernel_fault)?;
            cu::stream::synchronize(self.compute).map_err(kernel_fault)?;
            if let Some(computed) = computed {
                tracing::debug!(
                    "{}: {} ops (replay {replay}): enqueued in {:.3} ms, program done at {:.3} ms, \
                     {} output bytes read back by {:.3} ms",
                    self.info.id,
                    program.ops.len(),
                    ms(enqueued),
                    ms(computed),
                    len * 4,
                    ms(t0.elapsed())
                );
            }
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
            Some(source) => Some(SwapIn {
                chunks: Cursor::new(chunks::plan(
                    &spec.layout.layers,
                    chunks::limit(matches!(source, Source::Pageable(_)), self.chunk_bytes),
                )),
                source,
                staged: 0,
                dst: weights,
            }),
        };
        let swapped_bytes = if copy.is_some() { bytes } else { 0 };
        let mut swap_ms = 0.0;
        let (outputs, generated): (Vec<OutputTensor>, Option<Generated>) = match &job.work.generation {
            None => {
                spec.check_request(&job.work.batch, &job.work.outputs)?;
                // Half weights: widened as they land (`f32`) or multiplied as they are (`native`).
                let program = spec.lowered(&spec.forward_program(&job.work.batch, &job.work.outputs), false);
                let (data, ms) = self.exec(&program, weights, copy.take(), true).map_err(|f| self.fault(f))?;
                swap_ms = ms;
                (spec.outputs_of(&job.work.batch, &job.work.outputs, data), None)
            }
            Some(g) => {
                let mut failure = None;
                let generated = crate::gpu::generation::stream(g, spec, |on_token| {
                    spec.generate_with(&g.prompt, &g.options, on_token, &mut |program| match self.exec(
                        &spec.lowered(program, false),
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
