//! Reading `model.safetensors` into the packed layout: every planned tensor is found, its shape
//! and dtype checked, and its values stored as the layout says (F32, or F16/BF16 for matrices:
//! a half file's matrices stay half unless the deploy asks otherwise). Nothing is allocated
//! until every planned tensor has been checked against the file, so the buffer is never larger
//! than what the file itself holds (at most twice its size, for a half file widened to F32).

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::error::{EngineError, Result};
use super::layout::{self, PlannedTensor, Source, WeightLayout};

/// Most tensors a weights file may hold.
pub const MAX_TENSORS: usize = 1 << 16;

/// Most shards a sharded checkpoint may name.
const MAX_SHARDS: usize = 1024;

/// A package's weights: `model.safetensors`, or the shards `model.safetensors.index.json` names
/// (transformers' sharded checkpoints), read as one set of tensors.
pub struct WeightsFile {
    shards: Vec<(std::path::PathBuf, memmap2::Mmap)>,
}

/// The parsed shards; a tensor is looked up in each in turn.
struct Tensors<'a>(Vec<(&'a Path, SafeTensors<'a>)>);

impl<'a> Tensors<'a> {
    fn tensor(&self, name: &str) -> Option<(&'a Path, safetensors::tensor::TensorView<'a>)> {
        self.0.iter().find_map(|(path, st)| st.tensor(name).ok().map(|v| (*path, v)))
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(_, st)| st.names().contains(&name))
    }
}

impl WeightsFile {
    /// The weights of the package in `dir`: `model.safetensors` when there is one, else the
    /// shards of `model.safetensors.index.json`.
    pub fn open_package(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join(INDEX);
        if single.exists() || !index.exists() {
            return Self::open(&single);
        }
        let shards = shard_names(dir)?;
        let mut maps = Vec::with_capacity(shards.len());
        for name in shards {
            maps.extend(Self::open(&dir.join(name))?.shards);
        }
        Ok(Self { shards: maps })
    }

    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
        // SAFETY: the map is only read, and only while `self` lives. Another process truncating
        // the file while it is mapped would fault the reads; package files are written once
        // (to a temporary name, then renamed) and never modified in place, so that does not
        // happen to packages faaswap manages.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| EngineError::io(path, e))?;
        Ok(Self { shards: vec![(path.to_path_buf(), map)] })
    }

    fn path(&self) -> &Path {
        &self.shards[0].0
    }

    /// How the file stores its matrices: the dtype of its largest tensor (what a deploy keeps
    /// by default).
    pub fn matrix_dtype(&self) -> Result<layout::Dtype> {
        let st = self.parse()?;
        let largest =
            st.0.iter().flat_map(|(_, st)| st.tensors()).max_by_key(|(_, v)| v.shape().iter().product::<usize>());
        Ok(match largest.map(|(_, v)| v.dtype()) {
            Some(Dtype::F16) => layout::Dtype::F16,
            Some(Dtype::BF16) => layout::Dtype::Bf16,
            _ => layout::Dtype::F32,
        })
    }

    fn parse(&self) -> Result<Tensors<'_>> {
        let mut all = Vec::with_capacity(self.shards.len());
        let mut count = 0;
        for (path, map) in &self.shards {
            let st = SafeTensors::deserialize(map)
                .map_err(|e| EngineError::CorruptWeights { path: path.clone(), reason: e.to_string() })?;
            // The crate bounds the header at 100 MB; a model of the supported families has a
            // few thousand tensors at most, so millions of tiny entries are refused here.
            count += st.len();
            if count > MAX_TENSORS {
                return Err(EngineError::CorruptWeights {
                    path: path.clone(),
                    reason: format!("more than the limit of {MAX_TENSORS} tensors"),
                });
            }
            all.push((path.as_path(), st));
        }
        Ok(Tensors(all))
    }

    /// Which of `prefixes` the file's names use, judged by the plan's first tensor.
    fn detect_prefix<'p>(&self, st: &Tensors<'_>, first: &str, prefixes: &[&'p str]) -> Result<&'p str> {
        prefixes
            .iter()
            .copied()
            .find(|p| st.has(&format!("{p}{first}")))
            .ok_or_else(|| EngineError::MissingTensor { path: self.path().to_path_buf(), tensor: first.to_string() })
    }

    /// Checks the file against the plan and packs it into a new buffer laid out by `layout`.
    pub fn load_packed(&self, plan: &[PlannedTensor], layout: &WeightLayout, prefixes: &[&str]) -> Result<Vec<f32>> {
        let st = self.parse()?;
        let prefix = self.detect_prefix(&st, &plan[0].file_parts()[0].0, prefixes)?;
        // Every part of every planned tensor, checked before anything is allocated.
        let mut parts = Vec::with_capacity(plan.len());
        for t in plan {
            let mut views = Vec::new();
            let prefix = if t.unprefixed { "" } else { prefix };
            for (part, shape) in t.file_parts() {
                let name = format!("{prefix}{part}");
                let (path, view) = st.tensor(&name).ok_or_else(|| EngineError::MissingTensor {
                    path: self.path().to_path_buf(),
                    tensor: name.clone(),
                })?;
                if view.shape() != shape.as_slice() {
                    return Err(EngineError::WrongShape {
                        path: path.to_path_buf(),
                        tensor: name,
                        expected: shape,
                        found: view.shape().to_vec(),
                    });
                }
                if !matches!(view.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                    return Err(EngineError::WrongDtype {
                        path: path.to_path_buf(),
                        tensor: name,
                        dtype: format!("{:?}", view.dtype()),
                    });
                }
                views.push((name, view));
            }
            parts.push(views);
        }
        let mut buf = vec![0f32; layout.total_elems];
        for (views, slot) in parts.iter().zip(&layout.tensors) {
            let dst = &mut buf[slot.span.offset..slot.span.end()];
            let mut offset = 0;
            for (name, view) in views {
                let len: usize = view.shape().iter().product();
                let non_finite = match slot.dtype {
                    layout::Dtype::F32 => {
                        place(view, &slot.source, slot.shape.get(1), dst, offset, |d: &mut f32, x| *d = x)
                    }
                    half => {
                        let dst: &mut [u16] =
                            &mut bytemuck::cast_slice_mut(dst)[..slot.shape.iter().product::<usize>()];
                        place(view, &slot.source, slot.shape.get(1), dst, offset, |d: &mut u16, x| *d = half.narrow(x))
                            .or_else(|| dst.iter().position(|&b| !half.widen(b).is_finite()))
                    }
                };
                offset += match slot.source {
                    Source::Plain | Source::Concat { .. } => len,
                    Source::Transposed | Source::TransposedConcat { .. } => view.shape()[0],
                };
                if let Some(index) = non_finite {
                    return Err(EngineError::NonFiniteWeight {
                        path: self.path().to_path_buf(),
                        tensor: name.clone(),
                        index,
                    });
                }
            }
        }
        Ok(buf)
    }
}

/// The index of a sharded checkpoint.
pub const INDEX: &str = "model.safetensors.index.json";

/// The shard files `dir`'s index names, in order, each once. A name must be a plain file name
/// in the package folder ending in `.safetensors`: an index cannot point outside the package.
pub fn shard_names(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join(INDEX);
    let index = super::files::read_optional_json(&path, 64 << 20)?
        .ok_or_else(|| EngineError::io(&path, std::io::Error::from(std::io::ErrorKind::NotFound)))?;
    let map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| EngineError::config(&path, "weight_map must be an object of tensor name to shard file"))?;
    let mut names: Vec<String> = Vec::new();
    for (tensor, shard) in map {
        let shard = shard.as_str().filter(|s| is_shard_name(s)).ok_or_else(|| {
            EngineError::config(
                &path,
                format!("weight_map[{tensor:?}] = {shard} is not a .safetensors file in the package"),
            )
        })?;
        if !names.iter().any(|n| n == shard) {
            names.push(shard.to_string());
        }
    }
    if names.is_empty() || names.len() > MAX_SHARDS {
        return Err(EngineError::config(&path, format!("{} shards named (1..={MAX_SHARDS} allowed)", names.len())));
    }
    names.sort();
    Ok(names)
}

/// A shard's name as an index may give it: a file of the package folder itself.
pub fn is_shard_name(name: &str) -> bool {
    name.ends_with(".safetensors")
        && !name.starts_with('.')
        && name.len() <= 255
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Writes one file tensor into its stored tensor `dst` (elements of the stored dtype, set from
/// `f32` by `set`): as it is at element `offset` (plain, concatenated), or transposed into
/// columns `offset..` of rows `dst_cols` long (transposed, side by side). Returns the index of a
/// non-finite value of the file's, if any.
fn place<T: Copy + Default>(
    view: &safetensors::tensor::TensorView<'_>,
    source: &Source,
    dst_cols: Option<&usize>,
    dst: &mut [T],
    offset: usize,
    set: impl Fn(&mut T, f32),
) -> Option<usize> {
    let len: usize = view.shape().iter().product();
    let mut tmp = vec![0f32; len];
    convert(view.dtype(), view.data(), &mut tmp);
    let bad = tmp.iter().position(|x| !x.is_finite());
    match source {
        Source::Plain | Source::Concat { .. } => {
            dst[offset..offset + len].iter_mut().zip(&tmp).for_each(|(d, &x)| set(d, x));
        }
        Source::Transposed | Source::TransposedConcat { .. } => {
            let (rows, cols) = (view.shape()[0], view.shape()[1]);
            let mut stored = vec![T::default(); len];
            stored.iter_mut().zip(&tmp).for_each(|(d, &x)| set(d, x));
            transpose_into(&stored, rows, cols, dst, *dst_cols.expect("a matrix"), offset);
        }
    }
    bad
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

/// Writes the transpose of the `rows × cols` row-major `src` into columns
/// `col_offset..col_offset + rows` of `dst`, whose rows are `dst_cols` long: `dst[c, col_offset
/// + r] = src[r, c]`. Works in cache-sized tiles.
fn transpose_into<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T], dst_cols: usize, col_offset: usize) {
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * dst_cols + col_offset + r] = src[r * cols + c];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn transpose_swaps_rows_and_columns() {
        let src: Vec<f32> = (0..6).map(|i| i as f32).collect(); // [[0,1,2],[3,4,5]]
        let mut dst = vec![0.0; 6];
        super::transpose_into(&src, 2, 3, &mut dst, 2, 0);
        assert_eq!(dst, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn transpose_into_places_parts_side_by_side() {
        // Two [1, 2] parts become one [2, 2] matrix: part j is column j.
        let mut dst = vec![0.0; 4];
        super::transpose_into(&[1.0, 2.0], 1, 2, &mut dst, 2, 0);
        super::transpose_into(&[3.0, 4.0], 1, 2, &mut dst, 2, 1);
        assert_eq!(dst, vec![1.0, 3.0, 2.0, 4.0]);
    }
}
