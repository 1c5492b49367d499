//! Reading `model.safetensors` into the packed layout: every planned tensor is found, its shape
//! and dtype checked, and its values converted to `f32` into its slot. Nothing is allocated
//! until every planned tensor has been checked against the file, so the buffer is never larger
//! than what the file itself holds (at most twice its size, for f16/bf16 files).

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::error::{EngineError, Result};
use super::layout::{PlannedTensor, WeightLayout};

/// The file's tensors, looked up under one of the name prefixes a family allows.
pub struct WeightsFile {
    path: std::path::PathBuf,
    map: memmap2::Mmap,
}

impl WeightsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
        // SAFETY: the map is only read, and only while `self` lives. Another process truncating
        // the file while it is mapped would fault the reads; package files are written once
        // (to a temporary name, then renamed) and never modified in place, so that does not
        // happen to packages faaswap manages.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| EngineError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
        })
    }

    fn parse(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.map).map_err(|e| EngineError::CorruptWeights {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    /// Which of `prefixes` the file's names use, judged by the plan's first tensor.
    fn detect_prefix<'p>(
        &self,
        st: &SafeTensors<'_>,
        first: &str,
        prefixes: &[&'p str],
    ) -> Result<&'p str> {
        let names = st.names();
        prefixes
            .iter()
            .copied()
            .find(|p| names.iter().any(|n| *n == format!("{p}{first}")))
            .ok_or_else(|| EngineError::MissingTensor {
                path: self.path.clone(),
                tensor: first.to_string(),
            })
    }

    /// Checks the file against the plan and packs it into a new buffer laid out by `layout`.
    pub fn load_packed(
        &self,
        plan: &[PlannedTensor],
        layout: &WeightLayout,
        prefixes: &[&str],
    ) -> Result<Vec<f32>> {
        let st = self.parse()?;
        let prefix = self.detect_prefix(&st, &plan[0].name, prefixes)?;
        let mut views = Vec::with_capacity(plan.len());
        for t in plan {
            let name = format!("{prefix}{}", t.name);
            let view = st.tensor(&name).map_err(|_| EngineError::MissingTensor {
                path: self.path.clone(),
                tensor: name.clone(),
            })?;
            if view.shape() != t.shape.as_slice() {
                return Err(EngineError::WrongShape {
                    path: self.path.clone(),
                    tensor: name,
                    expected: t.shape.clone(),
                    found: view.shape().to_vec(),
                });
            }
            if !matches!(view.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                return Err(EngineError::WrongDtype {
                    path: self.path.clone(),
                    tensor: name,
                    dtype: format!("{:?}", view.dtype()),
                });
            }
            views.push((name, view));
        }
        let mut buf = vec![0f32; layout.total_elems];
        for ((name, view), slot) in views.iter().zip(&layout.tensors) {
            let dst = &mut buf[slot.span.offset..slot.span.end()];
            convert(view.dtype(), view.data(), dst);
            if let Some(index) = dst.iter().position(|x| !x.is_finite()) {
                return Err(EngineError::NonFiniteWeight {
                    path: self.path.clone(),
                    tensor: name.clone(),
                    index,
                });
            }
        }
        Ok(buf)
    }
}

/// Little-endian F32/F16/BF16 bytes to `f32`. The caller checked the dtype and that `src` holds
/// exactly `dst.len()` elements (the shape matched, and safetensors checked sizes).
fn convert(dtype: Dtype, src: &[u8], dst: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        Dtype::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::f16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        Dtype::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::bf16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        other => unreachable!("dtype {other:?} was rejected before conversion"),
    }
}
