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

use super::bert;
use super::config::ModelConfig;
use super::error::{EngineError, Result};
use super::gpt2;
use super::layout::PlannedTensor;

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

/// A named preset: the `config.json` it writes.
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    config: fn() -> Value,
}

fn bert_config(layers: usize, hidden: usize, heads: usize, inter: usize) -> Value {
    json!({
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": 30522,
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": inter, "max_position_embeddings": 512, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0
    })
}

fn gpt2_config(layers: usize, hidden: usize, heads: usize) -> Value {
    json!({
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 50257,
        "n_embd": hidden, "n_layer": layers, "n_head": heads, "n_inner": null,
        "n_positions": 1024, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
        "bos_token_id": 50256, "eos_token_id": 50256, "tie_word_embeddings": true
    })
}

/// Models small enough that hundreds fit a test: a 1,024-token vocabulary, 64 positions.
fn nano(mut config: Value) -> Value {
    config["vocab_size"] = json!(1024);
    match config["model_type"].as_str() {
        Some("bert") => config["max_position_embeddings"] = json!(64),
        _ => {
            config["n_positions"] = json!(64);
            config["bos_token_id"] = json!(1023);
            config["eos_token_id"] = json!(1023);
        }
    }
    config
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "bert-nano",
        description: "BERT 2 layers, hidden 32, vocabulary 1024 (0.06M; for tests)",
        config: || nano(bert_config(2, 32, 2, 64)),
    },
    Preset {
        name: "gpt2-nano",
        description: "GPT-2 2 layers, hidden 32, vocabulary 1024 (0.06M; for tests)",
        config: || nano(gpt2_config(2, 32, 2)),
    },
    Preset {
        name: "bert-tiny",
        description: "BERT 2 layers, hidden 128 (4.4M parameters)",
        config: || bert_config(2, 128, 2, 512),
    },
    Preset {
        name: "bert-mini",
        description: "BERT 4 layers, hidden 256 (11M)",
        config: || bert_config(4, 256, 4, 1024),
    },
    Preset {
        name: "minilm-l6",
        description: "MiniLM-L6 shape, 6 layers, hidden 384 (22M)",
        config: || bert_config(6, 384, 12, 1536),
    },
    Preset {
        name: "bert-base",
        description: "BERT-base, 12 layers, hidden 768 (109M)",
        config: || bert_config(12, 768, 12, 3072),
    },
    Preset {
        name: "bert-large",
        description: "BERT-large, 24 layers, hidden 1024 (335M)",
        config: || bert_config(24, 1024, 16, 4096),
    },
    Preset { name: "gpt2-tiny", description: "GPT-2 2 layers, hidden 128 (7M)", config: || gpt2_config(2, 128, 2) },
    Preset {
        name: "gpt2",
        description: "GPT-2 small, 12 layers, hidden 768 (124M)",
        config: || gpt2_config(12, 768, 12),
    },
    Preset {
        name: "gpt2-medium",
        description: "GPT-2 medium, 24 layers, hidden 1024 (355M)",
        config: || gpt2_config(24, 1024, 16),
    },
    Preset {
        name: "gpt2-large",
        description: "GPT-2 large, 36 layers, hidden 1280 (774M)",
        config: || gpt2_config(36, 1280, 20),
    },
    Preset {
        name: "gpt2-xl",
        description: "GPT-2 XL, 48 layers, hidden 1600 (1.56B)",
        config: || gpt2_config(48, 1600, 25),
    },
];

pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
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
    let config = ModelConfig::from_json(&config_path, &config_value)?;
    let (plan, prefix) = match &config {
        ModelConfig::Bert(c) => (bert::plan(c).0, ""),
        ModelConfig::Gpt2(c) => (gpt2::plan(c).0, "transformer."),
    };
    // The tensors as a Hugging Face file holds them (before the engine fuses or transposes).
    let tensors: Vec<(String, Vec<usize>)> = plan.iter().flat_map(PlannedTensor::file_parts).collect();
    std::fs::create_dir_all(out).map_err(|e| EngineError::io(out, e))?;
    let config_text = serde_json::to_string_pretty(&config_value).expect("JSON values serialize");
    write_atomically(&config_path, config_text.as_bytes())?;

    let header = header_bytes(&tensors, prefix, dtype);
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
        let is_gain = t.name.ends_with("LayerNorm.weight") || (t.name.contains("ln_") && t.name.ends_with(".weight"));
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
fn header_bytes(tensors: &[(String, Vec<usize>)], prefix: &str, dtype: SynthDtype) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    map.insert("__metadata__".into(), json!({"format": "pt", "generator": "faaswap synth"}));
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let len = shape.iter().product::<usize>() * dtype.size();
        map.insert(
            format!("{prefix}{name}"),
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
