//! The host store in page-locked memory: each function's packed weight buffer is registered
//! with the driver (`cuMemHostRegister`, portable to every context) when it is deployed, so a
//! swap-in copies straight from it at full link speed. Registering costs about 56 ms per GiB (CUDA-NOTES.md, H200),
//! which is why it happens at deploy time and never on the request path. When registration
//! fails (a locked-memory limit), the buffer stays pageable and swaps go through the device's
//! pinned staging ring instead; `faaswap_host_pinned_bytes` and the log say which is in use.

use std::ffi::c_void;
use std::sync::OnceLock;

use cudarc::driver::{sys, DriverError};

use crate::engine::Model;

/// A registration, undone when the model is dropped (before its buffer is freed).
pub struct HostPin {
    ptr: usize,
    ctx: usize,
    bytes: usize,
    pub pinned: bool,
}

impl Drop for HostPin {
    fn drop(&mut self) {
        if self.pinned {
            // SAFETY: `ptr` was registered in `pin` and is still allocated: the model drops this
            // guard before its weights; `ctx` is a primary context retained for the process.
            unsafe {
                let _ = with_context(self.ctx, || sys::cuMemHostUnregister(self.ptr as *mut c_void).result());
            }
            crate::metrics::host_pinned(-(self.bytes as f64));
        }
    }
}

// SAFETY: the guard holds plain addresses; registration and unregistration are thread-safe
// driver calls.
unsafe impl Send for HostPin {}
// SAFETY: as above; the guard has no interior mutability.
unsafe impl Sync for HostPin {}

static CONTEXT: OnceLock<usize> = OnceLock::new();

/// Makes `ctx` the context registrations are made in (the first GPU's primary context; the
/// registration is portable, so every GPU can copy from it).
pub fn set_context(ctx: sys::CUcontext) {
    let _ = CONTEXT.set(ctx as usize);
}

/// Runs `f` with `ctx` current on this thread, then restores what was current before (the
/// caller may be a GPU actor's thread, whose own context must stay current).
///
/// # Safety
/// `ctx` is a live context.
unsafe fn with_context<T>(ctx: usize, f: impl FnOnce() -> Result<T, DriverError>) -> Result<T, DriverError> {
    sys::cuCtxPushCurrent_v2(ctx as sys::CUcontext).result()?;
    let result = f();
    let mut popped = std::ptr::null_mut();
    let _ = sys::cuCtxPopCurrent_v2(&mut popped);
    result
}

/// Page-locks `model`'s weights once; `None` when no CUDA device exists in this process.
/// Returns whether the buffer is pinned.
pub fn pin(model: &Model) -> Option<bool> {
    let ctx = *CONTEXT.get()?;
    let state = model.host_pin(|weights| {
        let bytes = std::mem::size_of_val(weights);
        if std::env::var("FAASWAP_CUDA_PIN").is_ok_and(|v| v == "0") {
            tracing::debug!("FAASWAP_CUDA_PIN=0: {bytes} bytes of host weights stay pageable");
            return Box::new(HostPin { ptr: weights.as_ptr() as usize, ctx, bytes, pinned: false });
        }
        let t0 = std::time::Instant::now();
        // SAFETY: the buffer lives as long as the model, which unregisters it (through this
        // guard) before freeing it; the driver only reads it.
        let result = unsafe {
            with_context(ctx, || {
                sys::cuMemHostRegister_v2(weights.as_ptr() as *mut c_void, bytes, sys::CU_MEMHOSTREGISTER_PORTABLE)
                    .result()
            })
        };
        let pinned = match result {
            Ok(()) => {
                tracing::debug!("pinned {bytes} bytes of host weights in {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
                crate::metrics::host_pinned(bytes as f64);
                true
            }
            Err(e) => {
                tracing::warn!(
                    "could not page-lock {bytes} bytes of host weights ({e}); this function swaps in from \
                     pageable memory through the pinned staging ring (raise `ulimit -l` to avoid this)"
                );
                false
            }
        };
        Box::new(HostPin { ptr: weights.as_ptr() as usize, ctx, bytes, pinned })
    });
    Some(state.downcast_ref::<HostPin>().is_some_and(|p| p.pinned))
}
