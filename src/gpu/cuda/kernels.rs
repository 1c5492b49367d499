//! The NVRTC-compiled kernels: compiled once per process, loaded once per GPU, launched by
//! name with arguments marshalled as 8-byte slots.

use std::ffi::{c_void, CString};
use std::sync::OnceLock;

use cudarc::driver::{result as cu, sys, DriverError};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};

pub const SOURCE: &str = include_str!("kernels.cu");

/// Kernels, in the order `Kernels::f` indexes them.
pub const NAMES: [&str; 6] = ["embed", "layer_norm", "bias_act", "softmax", "kv_append", "zero_rows"];

/// PTX for a virtual architecture every GPU CUDA 13 supports (Turing and later); the driver
/// compiles it for the card at module load.
pub const ARCH: &str = "compute_75";

/// Compiles the kernels with NVRTC (no GPU needed). Returns the PTX and the compile time.
pub fn compile() -> Result<(String, std::time::Duration), String> {
    let t0 = std::time::Instant::now();
    let opts = CompileOptions {
        arch: Some(ARCH),
        // Precise division and square roots: the CPU twin's semantics.
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ftz: Some(false),
        name: Some("faaswap_kernels.cu".into()),
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(SOURCE, opts).map_err(|e| format!("NVRTC failed to compile the kernels: {e:?}"))?;
    Ok((ptx.to_src(), t0.elapsed()))
}

/// The PTX, compiled on first use and shared by every GPU.
pub fn ptx() -> Result<&'static str, String> {
    static PTX: OnceLock<Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        let (ptx, took) = compile()?;
        tracing::info!("compiled {} CUDA kernels with NVRTC in {:.1} ms", NAMES.len(), took.as_secs_f64() * 1e3);
        Ok(ptx)
    })
    .as_ref()
    .map(String::as_str)
    .map_err(Clone::clone)
}

/// The kernels loaded into one context.
pub struct Kernels {
    module: sys::CUmodule,
    functions: Vec<sys::CUfunction>,
}

/// A kernel argument.
#[derive(Debug, Clone, Copy)]
pub enum Arg {
    /// A device pointer (0 for null).
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
}

impl Kernels {
    /// Loads the module into the current context.
    pub fn load(ptx: &str) -> Result<Self, DriverError> {
        let image = CString::new(ptx).expect("PTX has no NUL bytes");
        // SAFETY: `image` is a NUL-terminated PTX string that outlives the call; a context is
        // current (the caller made it so).
        let module = unsafe { cu::module::load_data(image.as_ptr() as *const c_void)? };
        let functions = NAMES
            .iter()
            .map(|name| {
                let cname = CString::new(*name).expect("kernel names have no NUL bytes");
                // SAFETY: `module` was just loaded and is not unloaded while `self` lives.
                unsafe { cu::module::get_function(module, cname) }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { module, functions })
    }

    /// Launches kernel `name` on `stream`.
    pub fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        stream: sys::CUstream,
        args: &[Arg],
    ) -> Result<(), DriverError> {
        let index = NAMES.iter().position(|n| *n == name).expect("a kernel of kernels.cu");
        // Each argument in its own 8-byte slot; 4-byte arguments sit in the low half, which is
        // where a little-endian read of their size finds them.
        let mut slots: Vec<u64> = args
            .iter()
            .map(|a| match *a {
                Arg::Ptr(p) => p,
                Arg::I32(v) => u64::from(v as u32),
                Arg::I64(v) => v as u64,
                Arg::F32(v) => u64::from(v.to_bits()),
            })
            .collect();
        let mut params: Vec<*mut c_void> = slots.iter_mut().map(|s| s as *mut u64 as *mut c_void).collect();
        // SAFETY: the function belongs to a loaded module; `params` points at one slot per
        // kernel parameter, in the kernel's order and of at least its size (the callers in
        // `exec` mirror the signatures in kernels.cu); the driver copies them before returning.
        unsafe { cu::launch_kernel(self.functions[index], grid, (block, 1, 1), 0, stream, &mut params) }
    }
}

impl Drop for Kernels {
    fn drop(&mut self) {
        // SAFETY: no launch can use the module after its owner (the device) is dropped.
        let _ = unsafe { cu::module::unload(self.module) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles every kernel with the real NVRTC where one can be found (the test script
    /// installs the `nvidia-cuda-nvrtc` wheel and sets `FAASWAP_REQUIRE_NVRTC=1`, making a
    /// missing compiler a failure instead of a skip).
    #[test]
    fn kernels_compile_with_nvrtc() {
        if let Err(e) = super::super::libs::load_nvrtc() {
            assert!(std::env::var_os("FAASWAP_REQUIRE_NVRTC").is_none(), "NVRTC is required here: {e}");
            eprintln!("skipped: {e}");
            return;
        }
        let (ptx, _) = compile().unwrap();
        for name in NAMES {
            assert!(ptx.contains(&format!(".entry {name}(")), "{name} is in the PTX");
        }
    }
}
