//! RoBERTa and XLM-RoBERTa: BERT's encoder with RoBERTa's positions (numbered from
//! `padding_idx + 1`, skipping padding ids) and one token type, under the prefix `roberta.` in
//! task models; the sequence classifier is `classifier.dense` + tanh on `<s>`, then
//! `classifier.out_proj`.

use serde_json::{json, Value};

use super::bert::BertConfig;
use super::encoder::{EncoderFamily, EncoderModel};
use crate::engine::config::ConfigReader;
use crate::engine::error::Result;
use crate::engine::nn::encoder::{Positions, BERT_NAMES};
use crate::engine::nn::heads::HeadNames;
use crate::engine::program::Act;
use crate::engine::registry::{Family, Loaded};
use crate::engine::synth::Preset;

const HEADS: HeadNames = HeadNames {
    qa: "qa_outputs",
    token: "classifier",
    sequence_pre: "classifier.dense",
    sequence_pre_in_body: false,
    sequence_act: Act::Tanh,
    sequence_out: "classifier.out_proj",
};

const ROBERTA_ARCHITECTURES: &[&str] = &[
    "RobertaModel",
    "RobertaForMaskedLM",
    "RobertaForQuestionAnswering",
    "RobertaForSequenceClassification",
    "RobertaForTokenClassification",
];

const XLMR_ARCHITECTURES: &[&str] = &[
    "XLMRobertaModel",
    "XLMRobertaForMaskedLM",
    "XLMRobertaForQuestionAnswering",
    "XLMRobertaForSequenceClassification",
    "XLMRobertaForTokenClassification",
];

pub const ROBERTA: Family = Family {
    model_type: "roberta",
    architectures: ROBERTA_ARCHITECTURES,
    prefixes: &["", "roberta."],
    load: |r| load(r, &ROBERTA_ENCODER),
    presets: ROBERTA_PRESETS,
};

pub const XLM_ROBERTA: Family = Family {
    model_type: "xlm-roberta",
    architectures: XLMR_ARCHITECTURES,
    prefixes: &["", "roberta."],
    load: |r| load(r, &XLMR_ENCODER),
    presets: XLMR_PRESETS,
};

const ROBERTA_ENCODER: EncoderFamily =
    EncoderFamily { family: &ROBERTA, stem: "Roberta", names: BERT_NAMES, heads: HEADS };

const XLMR_ENCODER: EncoderFamily =
    EncoderFamily { family: &XLM_ROBERTA, stem: "XLMRoberta", names: BERT_NAMES, heads: HEADS };

fn load(r: &ConfigReader<'_>, family: &EncoderFamily) -> Result<Loaded> {
    let c = BertConfig::read(r)?;
    let padding_idx = r.opt_token_id("pad_token_id", c.vocab_size)?.unwrap_or(1);
    // Positions run from padding_idx + 1: the table must hold at least one more row.
    if c.max_position_embeddings <= padding_idx as usize + 1 {
        return Err(r.err(format!(
            "max_position_embeddings {} leaves no position after pad_token_id {padding_idx} (RoBERTa numbers \
             positions from pad_token_id + 1)",
            c.max_position_embeddings
        )));
    }
    let mut config = serde_json::to_value(&c).expect("configs serialize");
    config["pad_token_id"] = json!(padding_idx);
    EncoderModel::load(r, family, c.shape(Positions::AfterPadding { padding_idx }), config)
}

fn config(model_type: &str, class: &str, vocab: usize, layers: usize, hidden: usize, heads: usize) -> Value {
    json!({
        "architectures": [class], "model_type": model_type, "vocab_size": vocab,
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": 4 * hidden, "max_position_embeddings": 514, "type_vocab_size": 1,
        "layer_norm_eps": 1e-5, "hidden_act": "gelu", "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2
    })
}

const ROBERTA_PRESETS: &[Preset] = &[
    Preset {
        name: "roberta-nano",
        description: "RoBERTa 2 layers, hidden 32, vocabulary 1024 (0.06M; for tests)",
        config: || {
            let mut c = config("roberta", "RobertaModel", 1024, 2, 32, 2);
            c["max_position_embeddings"] = json!(66);
            c
        },
    },
    Preset {
        name: "roberta-base",
        description: "RoBERTa-base, 12 layers, hidden 768 (125M)",
        config: || config("roberta", "RobertaModel", 50265, 12, 768, 12),
    },
];

const XLMR_PRESETS: &[Preset] = &[Preset {
    name: "xlm-roberta-base-reranker",
    description: "XLM-RoBERTa-base with a one-logit sequence classifier, as bge-reranker-base (278M)",
    config: || {
        let mut c = config("xlm-roberta", "XLMRobertaForSequenceClassification", 250002, 12, 768, 12);
        c["id2label"] = json!({"0": "LABEL_0"});
        c
    },
}];

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::engine::registry;

    #[test]
    fn a_padding_id_that_leaves_no_position_is_refused() {
        let mut v = (ROBERTA_PRESETS[0].config)();
        v["pad_token_id"] = json!(65);
        let err = registry::load(Path::new("config.json"), &v).err().unwrap().to_string();
        assert!(err.contains("pad_token_id"), "{err}");
        v["pad_token_id"] = json!(1);
        let (_, loaded) = registry::load(Path::new("config.json"), &v).unwrap();
        assert_eq!(loaded.arch.max_positions(), 64, "66 rows less padding_idx + 1");
    }
}
