//! The NVRTC-compiled kernels: compiled once per process, loaded once per GPU, launched by
//! name with arguments marshalled as 8-byte slots.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CString};
use std::sync::{Mutex, OnceLock};

use cudarc::driver::{result as cu, sys, DriverError};
use cudarc::nvrtc::{result as rtc, sys as rtc_sys};

pub const SOURCE: &str = include_str!("kernels.cu");

/// The kernels, in the order `Kernels::launch` looks them up by name.
pub const NAMES: [&str; 12] = [
    "embed",
    "embed_half",
    "widen_half",
    "narrow_half",
    "layer_norm",
    "bias_act",
    "softmax",
    "kv_append",
    "zero_rows",
    "rms_norm",
    "rope",
    "silu_mul",
];

/// Compiles the kernels with NVRTC (no GPU needed) into a CUBIN for `arch` (`sm_90`). A CUBIN,
/// unlike PTX, loads on any driver of the same major CUDA version, even when this NVRTC is a
/// newer minor release than the driver (PTX would need the driver to JIT a newer ISA).
/// Returns the image and the compile time.
pub fn compile(arch: &str) -> Result<(Vec<u8>, std::time::Duration), String> {
    let t0 = std::time::Instant::now();
    let source = CString::new(SOURCE).expect("the kernel source has no NUL bytes");
    let name = CString::new("faaswap_kernels.cu").expect("no NUL bytes");
    let prog = rtc::create_program(&source, Some(&name)).map_err(|e| format!("NVRTC: {e:?}"))?;
    let options = [
        format!("--gpu-architecture={arch}"),
        // The CPU executor's semantics: IEEE division and square roots, denormals kept.
        "--prec-div=true".into(),
        "--prec-sqrt=true".into(),
        "--ftz=false".into(),
    ];
    // SAFETY: `prog` was just created from `source` and `name`, which outlive it; it is
    // destroyed once, below, whatever happened.
    let result = unsafe {
        match rtc::compile_program(prog, &options) {
            Ok(()) => cubin(prog).map_err(|e| format!("NVRTC produced no CUBIN for {arch}: {e:?}")),
            Err(e) => {
                let log = rtc::get_program_log(prog).map(|l| text(&l)).unwrap_or_default();
                Err(format!("NVRTC failed to compile the kernels for {arch} ({e:?}): {log}"))
            }
        }
    };
    // SAFETY: as above.
    let _ = unsafe { rtc::destroy_program(prog) };
    Ok((result?, t0.elapsed()))
}

/// The compiled image of a program.
///
/// # Safety
/// `prog` is a live, successfully compiled NVRTC program.
unsafe fn cubin(prog: rtc_sys::nvrtcProgram) -> Result<Vec<u8>, rtc::NvrtcError> {
    let mut size = 0usize;
    rtc_sys::nvrtcGetCUBINSize(prog, &mut size).result()?;
    let mut image = vec![0u8; size];
    rtc_sys::nvrtcGetCUBIN(prog, image.as_mut_ptr() as *mut c_char).result()?;
    Ok(image)
}

fn text(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// NVRTC's version, `(major, minor)`.
fn nvrtc_version() -> Option<(i32, i32)> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out pointers.
    unsafe { rtc_sys::nvrtcVersion(&mut major, &mut minor) }.result().ok().map(|_| (major, minor))
}

/// The image for `arch`, compiled on first use and shared by every GPU of that architecture.
pub fn image(arch: &str) -> Result<Vec<u8>, String> {
    static IMAGES: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    let images = IMAGES.get_or_init(Default::default);
    let mut images = images.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(image) = images.get(arch) {
        return Ok(image.clone());
    }
    let (image, took) = compile(arch)?;
    tracing::info!(
        "compiled {} CUDA kernels for {arch} with NVRTC {:?} in {:.1} ms",
        NAMES.len(),
        nvrtc_version().unwrap_or_default(),
        took.as_secs_f64() * 1e3
    );
    images.insert(arch.to_string(), image.clone());
    Ok(image)
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
    /// Loads the module (a CUBIN) into the current context.
    pub fn load(image: &[u8]) -> Result<Self, DriverError> {
        // SAFETY: `image` is a complete CUBIN from NVRTC that outlives the call; a context is
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
        for arch in ["sm_80", "sm_90"] {
            let (image, _) = compile(arch).unwrap();
            assert_eq!(&image[..4], b"\x7fELF", "{arch}: a CUBIN is an ELF image");
            for name in NAMES {
                let found =
                    image.windows(name.len() + 1).any(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0);
                assert!(found, "{arch}: kernel {name} is in the image");
            }
        }
        let err = compile("sm_1").unwrap_err();
        assert!(err.contains("sm_1"), "a bad architecture is named: {err}");
    }
}
