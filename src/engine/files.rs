//! Bounded file reads: package files are user input, so nothing is read without a size check.

use std::io::Read;
use std::path::Path;

use super::error::{EngineError, Result};

/// Reads a whole file that must be at most `limit` bytes.
pub fn read_small_file(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
    let size = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
    if size > limit {
        return Err(EngineError::FileTooLarge { path: path.to_path_buf(), size, limit });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // `take` guards against a file that grows between the size check and the read.
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| EngineError::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(EngineError::FileTooLarge { path: path.to_path_buf(), size: bytes.len() as u64, limit });
    }
    Ok(bytes)
}

/// Reads an optional small JSON file; `Ok(None)` when it does not exist.
pub fn read_optional_json(path: &Path, limit: u64) -> Result<Option<serde_json::Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_small_file(path, limit)?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| EngineError::config(path, format!("not valid JSON: {e}")))
}
