//! What goes in and comes out of a model: the input kinds a request carries (token ids, texts,
//! or named tensors, as an image is), the description of a model's inputs and outputs
//! (`IoSpec`, what the KServe metadata lists), and output tensors in the response shape.

use serde::{Deserialize, Serialize};

use super::batch::TokenBatch;

/// The inputs of one request, as the API decoded them.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    /// Texts, one sequence each (needs the package's tokenizer).
    Texts(Vec<String>),
    /// Pairs of texts (a query and a passage), one sequence each through the tokenizer's pair
    /// template (`[CLS] a [SEP] b [SEP]`, token types 0 then 1 for BERT).
    TextPairs(Vec<(String, String)>),
    /// Token ids with their mask and types.
    Tokens(TokenBatch),
    /// Named tensors (an image as `pixel_values`): for models that take tensors, not tokens.
    Tensors(Vec<InputTensor>),
}

impl Inputs {
    /// Bytes of text it holds (0 for tokens and tensors).
    pub fn text_bytes(&self) -> usize {
        match self {
            Self::Texts(t) => t.iter().map(String::len).sum(),
            Self::TextPairs(t) => t.iter().map(|(a, b)| a.len() + b.len()).sum(),
            _ => 0,
        }
    }

    /// Rows of the batch (sequences or the tensors' first dimension).
    pub fn rows(&self) -> usize {
        match self {
            Self::Texts(t) => t.len(),
            Self::TextPairs(t) => t.len(),
            Self::Tokens(b) => b.batch,
            Self::Tensors(t) => t.first().and_then(|t| t.shape.first().copied()).unwrap_or(0),
        }
    }
}

/// One named input tensor, flat and row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// One input a model takes, as the KServe metadata lists it (`-1`: any size).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputSpec {
    pub name: &'static str,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

/// One output a model produces, as the KServe metadata lists it (`-1`: the batch's size or
/// length).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputSpec {
    pub kind: OutputKind,
    pub shape: Vec<i64>,
}

impl OutputSpec {
    /// `[batch, seq, width]`: one row per token.
    pub fn per_token(kind: OutputKind, width: usize) -> Self {
        Self { kind, shape: vec![-1, -1, width as i64] }
    }

    /// `[batch, seq]`: one value per token.
    pub fn per_position(kind: OutputKind) -> Self {
        Self { kind, shape: vec![-1, -1] }
    }

    /// `[batch, width]`: one row per sequence.
    pub fn per_sequence(kind: OutputKind, width: usize) -> Self {
        Self { kind, shape: vec![-1, width as i64] }
    }
}

/// A model's inputs and outputs, and the outputs a request that names none gets.
#[derive(Debug, Clone, PartialEq)]
pub struct IoSpec {
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<OutputSpec>,
    pub defaults: Vec<OutputKind>,
}

impl IoSpec {
    /// Token-id inputs: `input_ids`, `attention_mask`, and `token_type_ids` when it takes them;
    /// the first output is the default.
    pub fn tokens(token_types: bool, outputs: Vec<OutputSpec>) -> Self {
        let ids = |name| InputSpec { name, datatype: "INT64", shape: vec![-1, -1] };
        let mut inputs = vec![ids("input_ids"), ids("attention_mask")];
        if token_types {
            inputs.push(ids("token_type_ids"));
        }
        let defaults = outputs.iter().take(1).map(|o| o.kind).collect();
        Self { inputs, outputs, defaults }
    }

    /// Answers requests that name no output with all of `kinds`.
    pub fn with_defaults(mut self, kinds: Vec<OutputKind>) -> Self {
        self.defaults = kinds;
        self
    }

    pub fn output(&self, kind: OutputKind) -> Option<&OutputSpec> {
        self.outputs.iter().find(|o| o.kind == kind)
    }

    pub fn produces(&self, kind: OutputKind) -> bool {
        self.output(kind).is_some()
    }
}

/// One output as a forward pass produced it: its kind, its shape over the padded batch and its
/// values.
#[derive(Debug, Clone, PartialEq)]
pub struct Produced {
    pub kind: OutputKind,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// What a model can produce, named as Hugging Face names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    LastHiddenState,
    SentenceEmbedding,
    Logits,
    StartLogits,
    EndLogits,
    /// A decoder's logits at each sequence's last attended position, `[batch, vocab]`.
    LastLogits,
}

impl OutputKind {
    const ALL: [Self; 6] = [
        Self::LastHiddenState,
        Self::SentenceEmbedding,
        Self::Logits,
        Self::StartLogits,
        Self::EndLogits,
        Self::LastLogits,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::LastHiddenState => "last_hidden_state",
            Self::SentenceEmbedding => "sentence_embedding",
            Self::Logits => "logits",
            Self::StartLogits => "start_logits",
            Self::EndLogits => "end_logits",
            Self::LastLogits => "last_logits",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One output tensor: `{"name", "datatype": "FP32", "shape", "data"}` with `data` flat,
/// row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl OutputTensor {
    pub fn fp32(kind: OutputKind, shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { name: kind.name().to_string(), datatype: "FP32".to_string(), shape, data }
    }
}

/// How far two outputs are apart: the largest absolute difference, NaN when either holds a NaN
/// (a comparison with a tolerance then fails) and infinite when their lengths differ.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, d| if d.is_nan() || d > m { d } else { m })
}

#[cfg(test)]
mod tests {
    use super::max_abs_diff;

    #[test]
    fn differences_fail_loudly_on_nan_and_length() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 1.0]), 1.0);
        assert!(max_abs_diff(&[f32::NAN, 2.0], &[1.0, 2.0]).is_nan());
        assert!(max_abs_diff(&[1.0, 2.0], &[1.0, f32::NAN]).is_nan(), "a NaN after a larger difference too");
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[]), f32::INFINITY);
    }
}
