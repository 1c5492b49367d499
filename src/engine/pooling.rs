//! Sentence-transformers pooling settings (`modules.json`, `1_Pooling/config.json`) and the
//! pooling + normalisation they describe.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::error::{EngineError, Result};
use super::files::read_optional_json;

const MAX_JSON_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    Cls,
    Max,
    Mean,
    MeanSqrtLen,
}

/// Pooling as sentence-transformers applies it: the modes' vectors concatenated in its order
/// (cls, max, mean, mean_sqrt_len), then optional L2 normalisation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pooling {
    pub modes: Vec<PoolMode>,
    pub normalize: bool,
}

impl Pooling {
    /// Reads the package's pooling settings; `None` when it has none.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let modules_path = dir.join("modules.json");
        let (pool_dir, normalize) = match read_optional_json(&modules_path, MAX_JSON_BYTES)? {
            Some(modules) => {
                let list = modules.as_array().ok_or_else(|| EngineError::config(&modules_path, "not a JSON list"))?;
                let kind = |m: &Value| m.get("type").and_then(Value::as_str).unwrap_or("").to_string();
                let pooling = list.iter().find(|m| kind(m).ends_with(".Pooling"));
                let normalize = list.iter().any(|m| kind(m).ends_with(".Normalize"));
                match pooling {
                    Some(m) => {
                        let rel = m.get("path").and_then(Value::as_str).unwrap_or("1_Pooling");
                        if rel.is_empty() || rel.contains("..") || Path::new(rel).is_absolute() {
                            return Err(EngineError::config(
                                &modules_path,
                                format!("pooling path {rel:?} is not a folder of the package"),
                            ));
                        }
                        (dir.join(rel), normalize)
                    }
                    None => return Ok(None),
                }
            }
            None => (dir.join("1_Pooling"), false),
        };
        let config_path = pool_dir.join("config.json");
        let Some(config) = read_optional_json(&config_path, MAX_JSON_BYTES)? else {
            return Ok(None);
        };
        let flag = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(false);
        for unsupported in ["pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"] {
            if flag(unsupported) {
                return Err(EngineError::config(&config_path, format!("{unsupported} is not supported")));
            }
        }
        let modes: Vec<PoolMode> = [
            ("pooling_mode_cls_token", PoolMode::Cls),
            ("pooling_mode_max_tokens", PoolMode::Max),
            ("pooling_mode_mean_tokens", PoolMode::Mean),
            ("pooling_mode_mean_sqrt_len_tokens", PoolMode::MeanSqrtLen),
        ]
        .into_iter()
        .filter(|(key, _)| flag(key))
        .map(|(_, mode)| mode)
        .collect();
        if modes.is_empty() {
            return Err(EngineError::config(&config_path, "no pooling mode is enabled"));
        }
        Ok(Some(Self { modes, normalize }))
    }

    pub fn output_dim(&self, hidden: usize) -> usize {
        hidden * self.modes.len()
    }

    /// Pools `hidden[batch, seq, width]` over the unmasked tokens of each row.
    pub fn apply(&self, hidden: &[f32], mask: &[bool], batch: usize, seq: usize, width: usize) -> Vec<f32> {
        let dim = self.output_dim(width);
        let mut out = vec![0f32; batch * dim];
        for b in 0..batch {
            let rows = &hidden[b * seq * width..(b + 1) * seq * width];
            let m = &mask[b * seq..(b + 1) * seq];
            let count = m.iter().filter(|&&x| x).count();
            let dst = &mut out[b * dim..(b + 1) * dim];
            for (mode, part) in self.modes.iter().zip(dst.chunks_exact_mut(width)) {
                pool_one(*mode, rows, m, count, width, part);
            }
            if self.normalize {
                // sentence-transformers divides by max(‖v‖, 1e-12).
                let norm = dst.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt().max(1e-12);
                dst.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
            }
        }
        out
    }
}

fn pool_one(mode: PoolMode, rows: &[f32], mask: &[bool], count: usize, width: usize, out: &mut [f32]) {
    let tokens = rows.chunks_exact(width).zip(mask).filter(|(_, &m)| m).map(|(r, _)| r);
    match mode {
        PoolMode::Cls => out.copy_from_slice(&rows[..width]),
        PoolMode::Max => {
            out.fill(f32::NEG_INFINITY);
            for r in tokens {
                out.iter_mut().zip(r).for_each(|(o, &v)| *o = o.max(v));
            }
        }
        PoolMode::Mean | PoolMode::MeanSqrtLen => {
            let mut acc = vec![0f64; width];
            for r in tokens {
                acc.iter_mut().zip(r).for_each(|(a, &v)| *a += v as f64);
            }
            // sentence-transformers clamps the count at 1e-9 so an all-padding row gives zeros.
            let n = (count as f64).max(1e-9);
            let div = if mode == PoolMode::Mean { n } else { n.sqrt() };
            out.iter_mut().zip(&acc).for_each(|(o, a)| *o = (a / div) as f32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pooling_skips_padding_and_normalises() {
        let p = Pooling { modes: vec![PoolMode::Mean], normalize: true };
        // Two tokens [3, 0] and [1, 4], then a padding row that must not count.
        let hidden = [3.0, 0.0, 1.0, 4.0, 100.0, 100.0];
        let out = p.apply(&hidden, &[true, true, false], 1, 3, 2);
        // mean [2, 2] → normalised [1/√2, 1/√2]
        assert!((out[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
        assert!((out[1] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
    }

    #[test]
    fn modes_concatenate_in_sentence_transformers_order() {
        let p = Pooling { modes: vec![PoolMode::Cls, PoolMode::Max], normalize: false };
        let out = p.apply(&[1.0, 5.0, 2.0, 3.0], &[true, true], 1, 2, 2);
        assert_eq!(out, vec![1.0, 5.0, 2.0, 5.0]);
    }
}
