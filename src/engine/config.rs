//! `config.json`: read, and its values checked against limits as the families read them, so
//! that an absurd value is rejected (naming its key) before anything is sized from it. Which
//! family a config is, and what it means, is the family's business (`models/`).

use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{EngineError, Result};
use super::files::read_small_file;
use super::layout::Dtype;

/// Upper bounds on shape settings. Far above any model we serve, low enough that the products
/// of two of them cannot overflow and a typo cannot make us size a huge buffer.
pub const MAX_HIDDEN: usize = 1 << 16;
pub const MAX_LAYERS: usize = 1 << 10;
pub const MAX_INTERMEDIATE: usize = 1 << 18;
pub const MAX_VOCAB: usize = 1 << 21;
pub const MAX_POSITIONS: usize = 1 << 17;
pub const MAX_TYPE_VOCAB: usize = 1 << 10;
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
    /// `tanh` (sequence-classification poolers; also a valid `hidden_act`).
    Tanh,
}

impl Activation {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            "tanh" => Some(Self::Tanh),
            _ => None,
        }
    }
}

/// Reads and checks `config.json` as a JSON object.
pub fn read(path: &Path) -> Result<Value> {
    let bytes = read_small_file(path, MAX_CONFIG_BYTES)?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| EngineError::config(path, format!("not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(EngineError::config(path, "top level is not a JSON object"));
    }
    Ok(value)
}

/// Typed access to a config's keys, with errors that name the key and values checked against
/// the limits above.
pub struct ConfigReader<'a> {
    pub path: &'a Path,
    obj: &'a Map<String, Value>,
    /// How the model's matrices will be stored (what its plan lays out).
    pub storage: Dtype,
}

impl<'a> ConfigReader<'a> {
    /// `value` must be a JSON object.
    pub fn new(path: &'a Path, value: &'a Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| EngineError::config(path, "top level is not a JSON object"))?;
        Ok(Self { path, obj, storage: Dtype::F32 })
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key)
    }

    pub fn err(&self, reason: String) -> EngineError {
        EngineError::config(self.path, reason)
    }

    pub fn string(&self, key: &str) -> Result<String> {
        match self.obj.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.err(format!("{key} must be a string, found {other}"))),
            None => Err(self.err(format!("missing key {key:?}"))),
        }
    }

    pub fn opt_string(&self, key: &str) -> Result<Option<String>> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.string(key).map(Some),
        }
    }

    pub fn size(&self, key: &str, max: usize) -> Result<usize> {
        let v = self.obj.get(key).ok_or_else(|| self.err(format!("missing key {key:?}")))?;
        self.size_value(key, v, max)
    }

    pub fn opt_size(&self, key: &str, max: usize) -> Result<Option<usize>> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.size_value(key, v, max).map(Some),
        }
    }

    pub fn size_value(&self, key: &str, v: &Value, max: usize) -> Result<usize> {
        let n = v.as_u64().ok_or_else(|| self.err(format!("{key} must be a positive integer, found {v}")))?;
        if n == 0 || n > max as u64 {
            return Err(self.err(format!("{key} = {n} is outside 1..={max}")));
        }
        Ok(n as usize)
    }

    pub fn eps(&self, key: &str, default: f32) -> Result<f32> {
        let Some(v) = self.obj.get(key) else {
            return Ok(default);
        };
        let x = v.as_f64().ok_or_else(|| self.err(format!("{key} must be a number, found {v}")))?;
        if !(x > 0.0 && x < 1.0) {
            return Err(self.err(format!("{key} = {x} is outside (0, 1)")));
        }
        Ok(x as f32)
    }

    pub fn activation(&self, key: &str, default: &str) -> Result<Activation> {
        let name = self.opt_string(key)?.unwrap_or_else(|| default.to_string());
        Activation::parse(&name).ok_or_else(|| self.err(format!("{key} = {name:?} is not a supported activation")))
    }

    pub fn heads(&self, key: &str, hidden: usize) -> Result<usize> {
        let heads = self.size(key, hidden)?;
        if !hidden.is_multiple_of(heads) {
            return Err(self.err(format!("{key} = {heads} does not divide the hidden size {hidden}")));
        }
        Ok(heads)
    }

    /// A token id below `vocab` (`None` when absent or null).
    pub fn opt_token_id(&self, key: &str, vocab: usize) -> Result<Option<u32>> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(id) if (id as usize) < vocab => Ok(Some(id as u32)),
                _ => Err(self.err(format!("{key} {v} is not a token id below vocab_size"))),
            },
        }
    }
}
