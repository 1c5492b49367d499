//! DistilBERT: BERT's post-LayerNorm encoder without token types, under its own tensor names
//! (`transformer.layer.{i}.attention.q_lin`, `sa_layer_norm`, `ffn.lin1`, `output_layer_norm`,
//! …; `distilbert.` in task models). Its sequence classifier is `pre_classifier` + ReLU on
//! `[CLS]`, then `classifier`. Sinusoidal position tables are refused.

use serde::Serialize;
use serde_json::{json, Value};

use super::encoder::{EncoderFamily, EncoderModel};
use crate::engine::config::{
    Activation, ConfigReader, MAX_HIDDEN, MAX_INTERMEDIATE, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB,
};
use crate::engine::error::Result;
use crate::engine::nn::encoder::{EncoderNames, EncoderShape, Positions};
use crate::engine::nn::heads::HeadNames;
use crate::engine::program::Act;
use crate::engine::registry::{Family, Loaded};
use crate::engine::synth::Preset;

const ARCHITECTURES: &[&str] = &[
    "DistilBertModel",
    "DistilBertForMaskedLM",
    "DistilBertForQuestionAnswering",
    "DistilBertForSequenceClassification",
    "DistilBertForTokenClassification",
];

pub const FAMILY: Family = Family {
    model_type: "distilbert",
    architectures: ARCHITECTURES,
    prefixes: &["", "distilbert."],
    load,
    presets: PRESETS,
};

const ENCODER: EncoderFamily = EncoderFamily {
    family: &FAMILY,
    stem: "DistilBert",
    names: EncoderNames {
        word: "embeddings.word_embeddings.weight",
        position: "embeddings.position_embeddings.weight",
        token_type: "",
        embedding_norm: "embeddings.LayerNorm",
        layers: "transformer.layer",
        query: "attention.q_lin",
        key: "attention.k_lin",
        value: "attention.v_lin",
        attention_out: "attention.out_lin",
        attention_norm: "sa_layer_norm",
        ffn_in: "ffn.lin1",
        ffn_out: "ffn.lin2",
        ffn_norm: "output_layer_norm",
    },
    heads: HeadNames {
        qa: "qa_outputs",
        token: "classifier",
        sequence_pre: "pre_classifier",
        sequence_pre_in_body: false,
        sequence_act: Act::Relu,
        sequence_out: "classifier",
    },
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DistilBertConfig {
    pub vocab_size: usize,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub hidden_dim: usize,
    pub max_position_embeddings: usize,
    pub activation: Activation,
}

impl DistilBertConfig {
    pub fn read(r: &ConfigReader<'_>) -> Result<Self> {
        if r.get("sinusoidal_pos_embds").and_then(Value::as_bool) == Some(true) {
            return Err(
                r.err("sinusoidal_pos_embds = true is not supported (only learned position embeddings)".to_string())
            );
        }
        let dim = r.size("dim", MAX_HIDDEN)?;
        Ok(Self {
            vocab_size: r.size("vocab_size", MAX_VOCAB)?,
            dim,
            n_layers: r.size("n_layers", MAX_LAYERS)?,
            n_heads: r.heads("n_heads", dim)?,
            hidden_dim: r.size("hidden_dim", MAX_INTERMEDIATE)?,
            max_position_embeddings: r.size("max_position_embeddings", MAX_POSITIONS)?,
            activation: r.activation("activation", "gelu")?,
        })
    }
}

fn load(r: &ConfigReader<'_>) -> Result<Loaded> {
    let c = DistilBertConfig::read(r)?;
    let shape = EncoderShape {
        vocab_size: c.vocab_size,
        hidden_size: c.dim,
        layers: c.n_layers,
        heads: c.n_heads,
        intermediate_size: c.hidden_dim,
        position_rows: c.max_position_embeddings,
        type_vocab_size: None,
        // transformers fixes DistilBERT's LayerNorm eps at 1e-12.
        layer_norm_eps: 1e-12,
        activation: c.activation,
        positions: Positions::FromZero,
    };
    let config = serde_json::to_value(&c).expect("configs serialize");
    EncoderModel::load(r, &ENCODER, shape, config)
}

const PRESETS: &[Preset] = &[Preset {
    name: "distilbert-base-sst2",
    description: "DistilBERT-base with a two-label sequence classifier, as distilbert SST-2 (67M)",
    config: || {
        json!({
            "architectures": ["DistilBertForSequenceClassification"], "model_type": "distilbert",
            "vocab_size": 30522, "dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072,
            "max_position_embeddings": 512, "activation": "gelu", "sinusoidal_pos_embds": false,
            "pad_token_id": 0, "id2label": {"0": "NEGATIVE", "1": "POSITIVE"}
        })
    },
}];

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::engine::registry;

    #[test]
    fn sinusoidal_positions_are_refused_by_name() {
        let mut v = (PRESETS[0].config)();
        v["sinusoidal_pos_embds"] = json!(true);
        let err = registry::load(Path::new("config.json"), &v).err().unwrap().to_string();
        assert!(err.contains("sinusoidal_pos_embds"), "{err}");
    }
}
