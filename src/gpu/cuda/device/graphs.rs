//! Warm forward passes as CUDA graphs: captured once per weights base and program, then
//! replayed.

use cudarc::driver::{result as cu, sys};

use super::{kernel_fault, CudaDevice, Failure};
use crate::engine::program::Program;
use crate::gpu::graph_cache::GraphKey;

impl CudaDevice {
    /// Runs `program`'s launches as a CUDA graph: replays a captured one, or captures and keeps
    /// a new one. Returns false (and turns graphs off for this GPU) when capture fails, in which
    /// case nothing was launched and the caller runs the program eagerly.
    pub(super) fn replay(&mut self, program: &Program, weights: u64) -> Result<bool, Failure> {
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
                for old in self.graphs.drain() {
                    // SAFETY: graphs are off from here on, and every earlier launch has completed
                    // (each job synchronises its stream).
                    let _ = unsafe { cu::graph::exec_destroy(old) };
                }
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
}
