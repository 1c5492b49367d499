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
