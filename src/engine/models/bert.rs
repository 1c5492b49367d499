//! The BERT family (BERT, MiniLM and other post-LayerNorm encoders with token types): its
//! config, read into the shared encoder (`nn::encoder`), its heads (`nn::heads`: question
//! answering, sequence and token classification) and its synthetic presets.

use serde::Serialize;
use serde_json::{json, Value};

use super::encoder::{EncoderFamily, EncoderModel};
use crate::engine::config::{
    Activation, ConfigReader, MAX_HIDDEN, MAX_INTERMEDIATE, MAX_LAYERS, MAX_POSITIONS, MAX_TYPE_VOCAB, MAX_VOCAB,
};
use crate::engine::error::Result;
use crate::engine::nn::encoder::{EncoderShape, Positions, BERT_NAMES};
use crate::engine::nn::heads::HeadNames;
use crate::engine::program::Act;
use crate::engine::registry::{Family, Loaded};
use crate::engine::synth::Preset;

const ARCHITECTURES: &[&str] = &[
    "BertModel",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
];

pub const FAMILY: Family = Family {
    model_type: "bert",
    architectures: ARCHITECTURES,
    // A task model's file holds the encoder under `bert.`.
    prefixes: &["", "bert."],
    load,
    presets: PRESETS,
};

const ENCODER: EncoderFamily = EncoderFamily {
    family: &FAMILY,
    stem: "Bert",
    names: BERT_NAMES,
    heads: HeadNames {
        qa: "qa_outputs",
        token: "classifier",
        sequence_pre: "pooler.dense",
        sequence_pre_in_body: true,
        sequence_act: Act::Tanh,
        sequence_out: "classifier",
    },
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub hidden_act: Activation,
}

impl BertConfig {
    pub fn read(r: &ConfigReader<'_>) -> Result<Self> {
        let hidden_size = r.size("hidden_size", MAX_HIDDEN)?;
        if let Some(kind) = r.opt_string("position_embedding_type")? {
            if kind != "absolute" {
                return Err(r.err(format!("position_embedding_type {kind:?} is not supported (only \"absolute\")")));
            }
        }
        Ok(Self {
            vocab_size: r.size("vocab_size", MAX_VOCAB)?,
            hidden_size,
            num_hidden_layers: r.size("num_hidden_layers", MAX_LAYERS)?,
            num_attention_heads: r.heads("num_attention_heads", hidden_size)?,
            intermediate_size: r.size("intermediate_size", MAX_INTERMEDIATE)?,
            max_position_embeddings: r.size("max_position_embeddings", MAX_POSITIONS)?,
            type_vocab_size: r.opt_size("type_vocab_size", MAX_TYPE_VOCAB)?.unwrap_or(2),
            layer_norm_eps: r.eps("layer_norm_eps", 1e-12)?,
            hidden_act: r.activation("hidden_act", "gelu")?,
        })
    }

    pub fn shape(&self, positions: Positions) -> EncoderShape {
        EncoderShape {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            layers: self.num_hidden_layers,
            heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            position_rows: self.max_position_embeddings,
            type_vocab_size: Some(self.type_vocab_size),
            layer_norm_eps: self.layer_norm_eps,
            activation: self.hidden_act,
            positions,
        }
    }
}

fn load(r: &ConfigReader<'_>) -> Result<Loaded> {
    let c = BertConfig::read(r)?;
    let config = serde_json::to_value(&c).expect("configs serialize");
    EncoderModel::load(r, &ENCODER, c.shape(Positions::FromZero), config)
}

fn config(layers: usize, hidden: usize, heads: usize, inter: usize) -> Value {
    json!({
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": 30522,
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": inter, "max_position_embeddings": 512, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0
    })
}

/// Small enough that hundreds fit a test: a 1,024-token vocabulary, 64 positions.
fn nano() -> Value {
    let mut c = config(2, 32, 2, 64);
    c["vocab_size"] = json!(1024);
    c["max_position_embeddings"] = json!(64);
    c
}

const PRESETS: &[Preset] = &[
    Preset {
        name: "bert-nano",
        description: "BERT 2 layers, hidden 32, vocabulary 1024 (0.06M; for tests)",
        config: nano,
    },
    Preset {
        name: "bert-tiny",
        description: "BERT 2 layers, hidden 128 (4.4M parameters)",
        config: || config(2, 128, 2, 512),
    },
    Preset { name: "bert-mini", description: "BERT 4 layers, hidden 256 (11M)", config: || config(4, 256, 4, 1024) },
    Preset {
        name: "minilm-l6",
        description: "MiniLM-L6 shape, 6 layers, hidden 384 (22M)",
        config: || config(6, 384, 12, 1536),
    },
    Preset {
        name: "bert-base",
        description: "BERT-base, 12 layers, hidden 768 (109M)",
        config: || config(12, 768, 12, 3072),
    },
    Preset {
        name: "bert-large",
        description: "BERT-large, 24 layers, hidden 1024 (335M)",
        config: || config(24, 1024, 16, 4096),
    },
    Preset {
        name: "bert-large-qa",
        description: "BERT-large with a question-answering head, the paper's BERT-QA (335M)",
        config: || {
            let mut c = config(24, 1024, 16, 4096);
            c["architectures"] = json!(["BertForQuestionAnswering"]);
            c
        },
    },
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::engine::EngineError;

    fn parse(v: Value) -> Result<BertConfig> {
        BertConfig::read(&ConfigReader::new(Path::new("config.json"), &v)?)
    }

    fn bert() -> Value {
        json!({"model_type":"bert","vocab_size":512,"hidden_size":64,"num_hidden_layers":2,
               "num_attention_heads":4,"intermediate_size":256,"max_position_embeddings":128,
               "layer_norm_eps":1e-12,"hidden_act":"gelu"})
    }

    #[test]
    fn parses_bert_defaults() {
        let c = parse(bert()).unwrap();
        assert_eq!(c.type_vocab_size, 2);
        assert_eq!(c.hidden_act, Activation::GeluErf);
        assert_eq!(c.layer_norm_eps, 1e-12);
    }

    #[test]
    fn rejects_absurd_values() {
        for (key, value) in [
            ("hidden_size", json!(1_000_000_000u64)),
            ("hidden_size", json!(0)),
            ("num_attention_heads", json!(3)),
            ("vocab_size", json!(-5)),
            ("layer_norm_eps", json!(2.0)),
            ("hidden_act", json!("swish")),
            ("max_position_embeddings", json!("many")),
        ] {
            let mut v = bert();
            v[key] = value.clone();
            let err = parse(v).unwrap_err();
            assert!(matches!(err, EngineError::BadConfig { .. }), "{key}={value}: {err}");
            assert!(err.to_string().contains(key), "{err}");
        }
    }
}
