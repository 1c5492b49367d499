//! The one table of model families: which `config.json` each loads (by `model_type`), the name
//! prefixes its weights files use, its loader, and its synthetic presets. The error for an
//! unknown `model_type`, `faaswap synth --list` and the model metadata read it; adding a family
//! is a file in `models/` and a row here.

use std::path::Path;

use serde_json::Value;

use super::arch::Architecture;
use super::config::ConfigReader;
use super::error::{EngineError, Result};
use super::layout::{Dtype, PlannedTensor, WeightLayout};
use super::models::{bert, distilbert, gpt2, llama, roberta};
use super::synth::Preset;

/// One model family.
pub struct Family {
    /// `config.json`'s `model_type`.
    pub model_type: &'static str,
    /// The `architectures` (transformers classes) it serves.
    pub architectures: &'static [&'static str],
    /// Prefixes its weights files put before the names it plans (a task model's submodule).
    pub prefixes: &'static [&'static str],
    /// Reads its config and plans its weights.
    pub load: fn(&ConfigReader<'_>) -> Result<Loaded>,
    /// Synthetic packages `faaswap synth` writes.
    pub presets: &'static [Preset],
}

/// A family's architecture over its planned weights.
pub struct Loaded {
    pub arch: Box<dyn Architecture>,
    /// The tensors in first-use order, as the weights file is read.
    pub plan: Vec<PlannedTensor>,
    pub layout: WeightLayout,
}

/// Every family, in the order they arrived.
pub const FAMILIES: &[&Family] = &[
    &bert::FAMILY,
    &gpt2::FAMILY,
    &roberta::ROBERTA,
    &roberta::XLM_ROBERTA,
    &distilbert::FAMILY,
    &llama::LLAMA,
    &llama::MISTRAL,
    &llama::QWEN2,
    &llama::QWEN3,
];

/// The family of a config (by its `model_type`), loaded with F32 matrices.
pub fn load(path: &Path, config: &Value) -> Result<(&'static Family, Loaded)> {
    load_as(path, config, Dtype::F32)
}

/// The family of a config, loaded with its matrices stored in `storage`.
pub fn load_as(path: &Path, config: &Value, storage: Dtype) -> Result<(&'static Family, Loaded)> {
    let mut reader = ConfigReader::new(path, config)?;
    reader.storage = storage;
    let model_type = reader.string("model_type")?;
    let family = FAMILIES.iter().find(|f| f.model_type == model_type).ok_or_else(|| EngineError::UnknownModelType {
        path: path.to_path_buf(),
        model_type,
        supported: supported(),
    })?;
    Ok((family, (family.load)(&reader)?))
}

/// The supported `model_type`s, quoted, for messages.
pub fn supported() -> String {
    FAMILIES.iter().map(|f| format!("{:?}", f.model_type)).collect::<Vec<_>>().join(", ")
}

/// Every family's synthetic presets.
pub fn presets() -> impl Iterator<Item = &'static Preset> {
    FAMILIES.iter().flat_map(|f| f.presets.iter())
}

/// Hostile `config.json` files: any value for any key a family reads. Loading never panics,
/// and an accepted config keeps every size within its limit (nothing downstream is sized from
/// an unchecked value).
#[cfg(test)]
mod props {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::*;
    use crate::engine::config::{MAX_HIDDEN, MAX_POSITIONS, MAX_VOCAB};

    const KEYS: &[&str] = &[
        "model_type",
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
        "type_vocab_size",
        "layer_norm_eps",
        "hidden_act",
        "n_embd",
        "n_layer",
        "n_head",
        "n_inner",
        "n_positions",
        "layer_norm_epsilon",
        "activation_function",
        "eos_token_id",
        "bos_token_id",
        "tie_word_embeddings",
        "architectures",
        "id2label",
        "num_labels",
        "pad_token_id",
        "dim",
        "n_layers",
        "n_heads",
        "hidden_dim",
        "activation",
        "sinusoidal_pos_embds",
        "num_key_value_heads",
        "head_dim",
        "rms_norm_eps",
        "rope_theta",
        "rope_scaling",
        "rope_parameters",
        "partial_rotary_factor",
        "sliding_window",
        "use_sliding_window",
        "max_window_layers",
        "layer_types",
        "attention_bias",
        "mlp_bias",
    ];

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (0u64..300).prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1.0f64..1.0).prop_map(Value::from),
            prop_oneof![
                Just("bert"),
                Just("gpt2"),
                Just("gelu"),
                Just("gelu_new"),
                Just("relu"),
                Just("silu"),
                Just("")
            ]
            .prop_map(Value::from),
            // Rotary settings, both config forms, sound and not.
            (prop_oneof![Just("default"), Just("linear"), Just("llama3"), Just("yarn")], -2.0f64..40.0, 0u64..100)
                .prop_map(|(kind, x, n)| serde_json::json!({
                    "rope_type": kind, "type": kind, "rope_theta": x * 1e4, "factor": x,
                    "low_freq_factor": x / 8.0, "high_freq_factor": x / 2.0, "original_max_position_embeddings": n
                })),
            prop::collection::vec(prop_oneof![Just("full_attention"), Just("sliding_attention"), Just("x")], 0..4)
                .prop_map(|v| Value::Array(v.into_iter().map(Value::from).collect())),
            Just(Value::Array(vec![])),
            prop_oneof![
                Just("BertForSequenceClassification"),
                Just("RobertaForTokenClassification"),
                Just("DistilBertForQuestionAnswering"),
                Just("BertForMultipleChoice")
            ]
            .prop_map(|c| Value::Array(vec![Value::from(c)])),
            // Label maps, hostile ones included (a key spelled twice, a gap, a non-index).
            prop::collection::vec(
                (prop_oneof![Just("0"), Just("1"), Just("01"), Just("+1"), Just("2"), Just("x")], any::<bool>()),
                0..4
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter()
                    .map(|(k, b)| (k.to_string(), if b { Value::from("L") } else { Value::from(1) }))
                    .collect()
            )),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn configs_load_or_err_without_panicking(
            model_type in prop_oneof![Just("bert"), Just("gpt2"), Just("roberta"), Just("xlm-roberta"), Just("distilbert"), Just("llama"), Just("mistral"), Just("qwen2"), Just("qwen3")],
            kv in prop::collection::vec((0..KEYS.len(), value()), 0..24),
        ) {
            let mut obj = Map::new();
            obj.insert("model_type".into(), Value::from(model_type));
            for (k, v) in kv {
                obj.insert(KEYS[k].to_string(), v);
            }
            // Small shapes only get this far: the plan of an accepted config is built.
            if let Ok((_, loaded)) = load(Path::new("config.json"), &Value::Object(obj)) {
                let a = &loaded.arch;
                prop_assert!(a.hidden_size() <= MAX_HIDDEN && a.vocab_size() <= MAX_VOCAB);
                prop_assert!(a.max_positions() <= MAX_POSITIONS);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_unknown_model_type_names_the_supported_ones() {
        let err = load(Path::new("config.json"), &json!({"model_type": "mamba"})).err().unwrap();
        assert!(matches!(&err, EngineError::UnknownModelType { model_type, .. } if model_type == "mamba"));
        assert!(err.to_string().contains("\"bert\", \"gpt2\""), "{err}");
    }
}
