//! Synthetic model packages with random weights at the sizes serving papers use, for
//! benchmarks and scale tests. Written streaming: the safetensors header is computed from the
//! plan, then each tensor is generated and written in turn, so memory stays small whatever the
//! model size.

use std::io::{BufWriter, Write};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde_json::{json, Value};

use super::error::{EngineError, Result};
use super::layout::Init;

/// Stored element type of a synthetic package (the engine converts F16/BF16 to F32 at load).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SynthDtype {
    F32,
    F16,
    Bf16,
}

impl SynthDtype {
    fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Bf16 => "BF16",
        }
    }

    fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            _ => 2,
        }
    }
}

/// A named preset: the `config.json` it writes (each family lists its own).
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    pub config: fn() -> Value,
}

/// A preset by name, from any family (`registry::presets`).
pub fn preset(name: &str) -> Option<&'static Preset> {
    super::registry::presets().find(|p| p.name == name)
}

/// What `write_package` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SynthReport {
    pub preset: String,
    pub dir: String,
    pub tensors: usize,
    pub parameters: usize,
    pub file_bytes: u64,
}

/// Writes `config.json` and `model.safetensors` for `preset` into `out`, with weights drawn
/// from `seed`. `progress` is told the bytes written after each step.
pub fn write_package(
    preset: &Preset,
    seed: u64,
    dtype: SynthDtype,
    out: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<SynthReport> {
    let config_value = (preset.config)();
    let config_path = out.join("config.json");
    let (family, loaded) = super::registry::load(&config_path, &config_value)?;
    let (plan, prefix) = (loaded.plan, family.prefixes[0]);
    // The tensors as a Hugging Face file holds them (before the engine fuses or transposes).
    let tensors: Vec<(String, Vec<usize>)> = plan
        .iter()
        .flat_map(|t| {
            let prefix = if t.unprefixed { "" } else { prefix };
            t.file_parts().into_iter().map(move |(name, shape)| (format!("{prefix}{name}"), shape))
        })
        .collect();
    std::fs::create_dir_all(out).map_err(|e| EngineError::io(out, e))?;
    let config_text = serde_json::to_string_pretty(&config_value).expect("JSON values serialize");
    write_atomically(&config_path, config_text.as_bytes())?;

    let header = header_bytes(&tensors, dtype);
    let numel = |shape: &[usize]| shape.iter().product::<usize>();
    let data_bytes: u64 = tensors.iter().map(|(_, s)| (numel(s) * dtype.size()) as u64).sum();
    let total = 8 + header.len() as u64 + data_bytes;
    let final_path = out.join("model.safetensors");
    let tmp_path = out.join("model.safetensors.tmp");
    let io = |e| EngineError::io(&tmp_path, e);
    let file = std::fs::File::create(&tmp_path).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&header).map_err(io)?;
    let mut written = 8 + header.len() as u64;
    progress(written, total);
    let mut chunk = Vec::with_capacity(1 << 20);
    for (i, t) in plan.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let is_gain = t.init == Init::Gain;
        let normal = Normal::new(0.0f32, 0.02).expect("valid normal");
        let mut left = t.numel();
        while left > 0 {
            let n = left.min(1 << 18);
            chunk.clear();
            for _ in 0..n {
                let x = if is_gain { 1.0 + rng.random_range(-0.1..0.1) } else { normal.sample(&mut rng) };
                match dtype {
                    SynthDtype::F32 => chunk.extend_from_slice(&x.to_le_bytes()),
                    SynthDtype::F16 => chunk.extend_from_slice(&half::f16::from_f32(x).to_le_bytes()),
                    SynthDtype::Bf16 => chunk.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
                }
            }
            w.write_all(&chunk).map_err(io)?;
            written += chunk.len() as u64;
            left -= n;
            progress(written, total);
        }
    }
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp_path, &final_path).map_err(|e| EngineError::io(&final_path, e))?;
    Ok(SynthReport {
        preset: preset.name.to_string(),
        dir: out.display().to_string(),
        tensors: tensors.len(),
        parameters: tensors.iter().map(|(_, s)| numel(s)).sum(),
        file_bytes: total,
    })
}

/// The safetensors header for `tensors` in order, padded with spaces to a multiple of 8 bytes
/// as the format's writers do.
fn header_bytes(tensors: &[(String, Vec<usize>)], dtype: SynthDtype) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    map.insert("__metadata__".into(), json!({"format": "pt", "generator": "faaswap synth"}));
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let len = shape.iter().product::<usize>() * dtype.size();
        map.insert(
            name.clone(),
            json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut bytes = serde_json::to_vec(&Value::Object(map)).expect("JSON values serialize");
    while !bytes.len().is_multiple_of(8) {
        bytes.push(b' ');
    }
    bytes
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| EngineError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| EngineError::io(path, e))
}
