//! Output tensors in the KServe v2 response shape.

use serde::{Deserialize, Serialize};

/// What a model can produce, named as Hugging Face names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    LastHiddenState,
    SentenceEmbedding,
    Logits,
}

impl OutputKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::LastHiddenState => "last_hidden_state",
            Self::SentenceEmbedding => "sentence_embedding",
            Self::Logits => "logits",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::LastHiddenState, Self::SentenceEmbedding, Self::Logits].into_iter().find(|k| k.name() == name)
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
