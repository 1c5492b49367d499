//! `config.json`: which family a package belongs to and its shape settings, checked against
//! limits so that an absurd value is rejected before anything is sized from it.

use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{EngineError, Result};
use super::files::read_small_file;

/// Upper bounds on shape settings. Far above any model we serve, low enough that the products
/// of two of them cannot overflow and a typo cannot make us size a huge buffer.
const MAX_HIDDEN: usize = 1 << 16;
const MAX_LAYERS: usize = 1 << 10;
const MAX_INTERMEDIATE: usize = 1 << 18;
const MAX_VOCAB: usize = 1 << 21;
const MAX_POSITIONS: usize = 1 << 17;
const MAX_TYPE_VOCAB: usize = 1 << 10;
/// Config files are a few KiB; refuse anything large rather than parse it.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// GELU variants named by Hugging Face configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `0.5·x·(1 + erf(x/√2))` — `gelu` in BERT configs.
    GeluErf,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` — `gelu_new`, `gelu_pytorch_tanh`.
    GeluTanh,
    Relu,
}

impl Activation {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }
}

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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_inner: usize,
    pub n_positions: usize,
    pub layer_norm_epsilon: f32,
    pub activation_function: Activation,
    pub eos_token_id: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "model_type", rename_all = "snake_case")]
pub enum ModelConfig {
    Bert(BertConfig),
    Gpt2(Gpt2Config),
}

impl ModelConfig {
    pub fn model_type(&self) -> &'static str {
        match self {
            Self::Bert(_) => "bert",
            Self::Gpt2(_) => "gpt2",
        }
    }

    pub fn max_positions(&self) -> usize {
        match self {
            Self::Bert(c) => c.max_position_embeddings,
            Self::Gpt2(c) => c.n_positions,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Bert(c) => c.vocab_size,
            Self::Gpt2(c) => c.vocab_size,
        }
    }

    pub fn hidden_size(&self) -> usize {
        match self {
            Self::Bert(c) => c.hidden_size,
            Self::Gpt2(c) => c.n_embd,
        }
    }

    pub fn num_layers(&self) -> usize {
        match self {
            Self::Bert(c) => c.num_hidden_layers,
            Self::Gpt2(c) => c.n_layer,
        }
    }

    /// Reads and checks `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_small_file(path, MAX_CONFIG_BYTES)?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| EngineError::config(path, format!("not valid JSON: {e}")))?;
        Self::from_json(path, &value)
    }

    pub fn from_json(path: &Path, value: &Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| EngineError::config(path, "top level is not a JSON object"))?;
        let r = Reader { path, obj };
        let model_type = r.string("model_type")?;
        match model_type.as_str() {
            "bert" => r.bert().map(Self::Bert),
            "gpt2" => r.gpt2().map(Self::Gpt2),
            _ => Err(EngineError::UnknownModelType { path: path.to_path_buf(), model_type }),
        }
    }
}

/// Typed access to config keys with errors that name the key.
struct Reader<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn err(&self, reason: String) -> EngineError {
        EngineError::config(self.path, reason)
    }

    fn string(&self, key: &str) -> Result<String> {
        match self.obj.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.err(format!("{key} must be a string, found {other}"))),
            None => Err(self.err(format!("missing key {key:?}"))),
        }
    }

    fn opt_string(&self, key: &str) -> Result<Option<String>> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.string(key).map(Some),
        }
    }

    fn size(&self, key: &str, max: usize) -> Result<usize> {
        let v = self.obj.get(key).ok_or_else(|| self.err(format!("missing key {key:?}")))?;
        self.size_value(key, v, max)
    }

    fn opt_size(&self, key: &str, max: usize) -> Result<Option<usize>> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.size_value(key, v, max).map(Some),
        }
    }

    fn size_value(&self, key: &str, v: &Value, max: usize) -> Result<usize> {
        let n = v.as_u64().ok_or_else(|| self.err(format!("{key} must be a positive integer, found {v}")))?;
        if n == 0 || n > max as u64 {
            return Err(self.err(format!("{key} = {n} is outside 1..={max}")));
        }
        Ok(n as usize)
    }

    fn eps(&self, key: &str, default: f32) -> Result<f32> {
        let Some(v) = self.obj.get(key) else {
            return Ok(default);
        };
        let x = v.as_f64().ok_or_else(|| self.err(format!("{key} must be a number, found {v}")))?;
        if !(x > 0.0 && x < 1.0) {
            return Err(self.err(format!("{key} = {x} is outside (0, 1)")));
        }
        Ok(x as f32)
    }

    fn activation(&self, key: &str, default: &str) -> Result<Activation> {
        let name = self.opt_string(key)?.unwrap_or_else(|| default.to_string());
        Activation::parse(&name).ok_or_else(|| self.err(format!("{key} = {name:?} is not a supported activation")))
    }

    fn heads(&self, key: &str, hidden: usize) -> Result<usize> {
        let heads = self.size(key, hidden)?;
        if !hidden.is_multiple_of(heads) {
            return Err(self.err(format!("{key} = {heads} does not divide the hidden size {hidden}")));
        }
        Ok(heads)
    }

    fn bert(&self) -> Result<BertConfig> {
        let hidden_size = self.size("hidden_size", MAX_HIDDEN)?;
        if let Some(kind) = self.opt_string("position_embedding_type")? {
            if kind != "absolute" {
                return Err(self.err(format!("position_embedding_type {kind:?} is not supported (only \"absolute\")")));
            }
        }
        Ok(BertConfig {
            vocab_size: self.size("vocab_size", MAX_VOCAB)?,
            hidden_size,
            num_hidden_layers: self.size("num_hidden_layers", MAX_LAYERS)?,
            num_attention_heads: self.heads("num_attention_heads", hidden_size)?,
            intermediate_size: self.size("intermediate_size", MAX_INTERMEDIATE)?,
            max_position_embeddings: self.size("max_position_embeddings", MAX_POSITIONS)?,
            type_vocab_size: self.opt_size("type_vocab_size", MAX_TYPE_VOCAB)?.unwrap_or(2),
            layer_norm_eps: self.eps("layer_norm_eps", 1e-12)?,
            hidden_act: self.activation("hidden_act", "gelu")?,
        })
    }

    fn gpt2(&self) -> Result<Gpt2Config> {
        let n_embd = self.size("n_embd", MAX_HIDDEN)?;
        let vocab_size = self.size("vocab_size", MAX_VOCAB)?;
        let eos_token_id = match self.obj.get("eos_token_id") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(id) if (id as usize) < vocab_size => Some(id as u32),
                _ => return Err(self.err(format!("eos_token_id {v} is not a token id below vocab_size"))),
            },
        };
        Ok(Gpt2Config {
            vocab_size,
            n_embd,
            n_layer: self.size("n_layer", MAX_LAYERS)?,
            n_head: self.heads("n_head", n_embd)?,
            n_inner: self.opt_size("n_inner", MAX_INTERMEDIATE)?.unwrap_or(4 * n_embd),
            n_positions: self.size("n_positions", MAX_POSITIONS)?,
            layer_norm_epsilon: self.eps("layer_norm_epsilon", 1e-5)?,
            activation_function: self.activation("activation_function", "gelu_new")?,
            eos_token_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ModelConfig> {
        ModelConfig::from_json(Path::new("config.json"), &v)
    }

    fn bert() -> Value {
        json!({"model_type":"bert","vocab_size":512,"hidden_size":64,"num_hidden_layers":2,
               "num_attention_heads":4,"intermediate_size":256,"max_position_embeddings":128,
               "layer_norm_eps":1e-12,"hidden_act":"gelu"})
    }

    #[test]
    fn parses_bert_defaults() {
        let ModelConfig::Bert(c) = parse(bert()).unwrap() else { panic!("not bert") };
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

    #[test]
    fn rejects_unknown_model_type() {
        let mut v = bert();
        v["model_type"] = json!("llama");
        assert!(matches!(
            parse(v).unwrap_err(),
            EngineError::UnknownModelType { model_type, .. } if model_type == "llama"
        ));
    }

    #[test]
    fn gpt2_inner_defaults_to_four_times_hidden() {
        let v = json!({"model_type":"gpt2","vocab_size":512,"n_embd":64,"n_layer":2,"n_head":4,
                       "n_positions":128,"n_inner":null,"eos_token_id":511});
        let ModelConfig::Gpt2(c) = parse(v).unwrap() else { panic!("not gpt2") };
        assert_eq!(c.n_inner, 256);
        assert_eq!(c.eos_token_id, Some(511));
        assert_eq!(c.activation_function, Activation::GeluTanh);
    }
}

/// Hostile `config.json` files: any value for any key the loader reads. Loading never panics,
/// and an accepted config keeps every size within its limit (nothing downstream is sized from
/// an unchecked value).
#[cfg(test)]
mod props {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::*;

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
    ];

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (0u64..300).prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1.0f64..1.0).prop_map(Value::from),
            prop_oneof![Just("bert"), Just("gpt2"), Just("gelu"), Just("gelu_new"), Just("relu"), Just("")]
                .prop_map(Value::from),
            Just(Value::Array(vec![])),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn configs_load_or_err_without_panicking(
            model_type in prop_oneof![Just("bert"), Just("gpt2"), Just("llama")],
            kv in prop::collection::vec((0..KEYS.len(), value()), 0..24),
        ) {
            let mut obj = Map::new();
            obj.insert("model_type".into(), Value::from(model_type));
            for (k, v) in kv {
                obj.insert(KEYS[k].to_string(), v);
            }
            if let Ok(c) = ModelConfig::from_json(Path::new("config.json"), &Value::Object(obj)) {
                prop_assert!(c.hidden_size() <= MAX_HIDDEN && c.vocab_size() <= MAX_VOCAB);
                prop_assert!(c.num_layers() <= MAX_LAYERS && c.max_positions() <= MAX_POSITIONS);
            }
        }
    }
}
