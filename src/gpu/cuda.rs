//! The CUDA back end. Not built yet (the CUDA work fills it in); until then it reports itself
//! unavailable, `--devices cuda` fails with that message and `auto` falls back to the CPU.

use super::DeviceError;

/// The number of usable CUDA GPUs, or why there are none.
pub fn probe() -> Result<usize, DeviceError> {
    Err(DeviceError::Unavailable(
        "the CUDA back end is not available in this build yet; use --devices cpu or --devices sim:NxSIZE".into(),
    ))
}
