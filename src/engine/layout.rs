//! The swappable layout: every weight of a model packed into one contiguous buffer in the order
//! the forward pass first uses it, with a table of per-tensor offsets and per-layer ranges. The
//! buffer is the unit the runtime copies to devices; execution reads weights only through it and
//! this table, so a copy of the buffer anywhere is a complete, runnable model.
//!
//! The buffer is counted in 4-byte slots. A tensor stored in F32 takes one slot per element; a
//! matrix stored in F16 or BF16 takes one slot per two elements (element `2i` in the low half of
//! slot `i`, as little-endian memory has it). Vectors (biases, normalisation gains) are always
//! F32: they are a fraction of a percent of the bytes and the kernels read them as they are.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Tensors start on 256-byte boundaries, what vector loads and cuBLAS like best.
pub const ALIGN_ELEMS: usize = 64;

/// Which file tensors a stored tensor is made of.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// The file tensor of the same name, as it is.
    Plain,
    /// The file's matrix of the same name, stored transposed: an encoder's `[out, in]` linear
    /// weight stored `[in, out]` (see `PlanBuilder::linear_in_out`).
    Transposed,
    /// `[out, in]` file matrices stored side by side as one `[in, Σ out]` matrix (an encoder's
    /// query, key and value weights become one projection); each part named with its `out`.
    TransposedConcat { parts: Vec<(String, usize)> },
    /// File tensors stacked along their first dimension, each named with its length there:
    /// `[out, in]` linear weights stored as one `[Σ out, in]` (BERT's query, key and value
    /// weights become one projection), or 1-D biases back to back.
    Concat { parts: Vec<(String, usize)> },
}

/// How a synthetic package draws a tensor's values (`faaswap synth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// Normal around 0 (weights, biases, embeddings).
    Normal,
    /// Around 1 (normalisation gains).
    Gain,
}

/// The element type a tensor is stored in, in the packed buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    F32,
    F16,
    Bf16,
}

impl Dtype {
    pub const ALL: [Self; 3] = [Self::F32, Self::F16, Self::Bf16];

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name.to_ascii_lowercase())
    }

    pub fn is_half(self) -> bool {
        self != Self::F32
    }

    /// Slots of the packed buffer `numel` elements take.
    pub fn slots(self, numel: usize) -> usize {
        if self.is_half() {
            numel.div_ceil(2)
        } else {
            numel
        }
    }

    /// An `f32` as F16 or BF16 bits, rounded to nearest, ties to even (the rounding of the
    /// GPU's `narrow_half` kernel).
    #[inline(always)]
    pub fn narrow(self, x: f32) -> u16 {
        match self {
            Self::F16 => half::f16::from_f32(x).to_bits(),
            _ => half::bf16::from_f32(x).to_bits(),
        }
    }

    /// A half value's bits as `f32` (exact: every F16 and BF16 value is an F32 value).
    #[inline(always)]
    pub fn widen(self, bits: u16) -> f32 {
        match self {
            Self::F16 => half::f16::from_bits(bits).to_f32(),
            _ => f32::from_bits(u32::from(bits) << 16),
        }
    }
}

/// A tensor the forward pass needs, in first-use order.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    /// Canonical name (without any file prefix such as `bert.`).
    pub name: String,
    /// Shape as stored in the buffer.
    pub shape: Vec<usize>,
    /// Index into the plan's layer names.
    pub layer: usize,
    pub source: Source,
    pub init: Init,
    /// How it is stored in the packed buffer.
    pub dtype: Dtype,
    /// Named at the file's top level even where the rest of the model sits under a prefix (a
    /// task head beside `bert.`).
    pub unprefixed: bool,
}

impl PlannedTensor {
    /// A file tensor stored as it is.
    pub fn new(name: impl Into<String>, shape: &[usize], layer: usize) -> Self {
        Self {
            name: name.into(),
            shape: shape.to_vec(),
            layer,
            source: Source::Plain,
            init: Init::Normal,
            dtype: Dtype::F32,
            unprefixed: false,
        }
    }

    /// A file `[out, in]` matrix stored as `[in, out]`.
    pub fn transposed(name: impl Into<String>, out_dim: usize, in_dim: usize, layer: usize) -> Self {
        Self { source: Source::Transposed, ..Self::new(name, &[in_dim, out_dim], layer) }
    }

    /// File matrices `[out, in_dim]` (each part's own `out`), stored as one `[in_dim, Σ out]`.
    pub fn transposed_concat(
        name: impl Into<String>,
        parts: Vec<(String, usize)>,
        in_dim: usize,
        layer: usize,
    ) -> Self {
        let shape = [in_dim, parts.iter().map(|p| p.1).sum()];
        Self { source: Source::TransposedConcat { parts }, ..Self::new(name, &shape, layer) }
    }

    /// File tensors stacked along their first dimension (each part named with its length
    /// there); `rest` is the shape after it, the same for every part.
    pub fn concat(name: impl Into<String>, parts: Vec<(String, usize)>, rest: &[usize], layer: usize) -> Self {
        let shape: Vec<usize> = std::iter::once(parts.iter().map(|p| p.1).sum()).chain(rest.iter().copied()).collect();
        Self { source: Source::Concat { parts }, ..Self::new(name, &shape, layer) }
    }

    /// The file tensors this one is made of, with the shapes the file must give them.
    pub fn file_parts(&self) -> Vec<(String, Vec<usize>)> {
        let s = &self.shape;
        match &self.source {
            Source::Plain => vec![(self.name.clone(), s.clone())],
            Source::Transposed => vec![(self.name.clone(), vec![s[1], s[0]])],
            Source::TransposedConcat { parts } => parts.iter().map(|(p, out)| (p.clone(), vec![*out, s[0]])).collect(),
            Source::Concat { parts } => parts
                .iter()
                .map(|(p, len)| (p.clone(), std::iter::once(*len).chain(s[1..].iter().copied()).collect()))
                .collect(),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Slots of the packed buffer it takes.
    pub fn slots(&self) -> usize {
        self.dtype.slots(self.numel())
    }
}

/// A contiguous run of slots in the weights buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

impl Span {
    pub fn end(&self) -> usize {
        self.offset + self.len
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorSlot {
    pub name: String,
    /// Shape as stored in the buffer.
    pub shape: Vec<usize>,
    pub source: Source,
    pub span: Span,
    pub dtype: Dtype,
}

/// A layer's range of the buffer. Layer ranges tile the buffer: together they cover it exactly,
/// so copying the buffer layer by layer copies all of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerSpan {
    pub name: String,
    pub span: Span,
}

impl LayerSpan {
    pub fn byte_range(&self) -> std::ops::Range<usize> {
        self.span.offset * 4..self.span.end() * 4
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightLayout {
    pub tensors: Vec<TensorSlot>,
    pub layers: Vec<LayerSpan>,
    /// Total elements of the buffer, padding included.
    pub total_elems: usize,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

impl WeightLayout {
    /// Places the plan's tensors in order. Plans come from the engine's own family code and
    /// list layers in order, so a plan that goes back to an earlier layer is a bug.
    pub fn build(plan: &[PlannedTensor], layer_names: &[String]) -> Self {
        let mut tensors = Vec::with_capacity(plan.len());
        let mut layer_starts = vec![None; layer_names.len()];
        let mut offset = 0usize;
        let mut last_layer = 0usize;
        for t in plan {
            assert!(t.layer >= last_layer, "plan goes back from layer {last_layer} to {}", t.layer);
            last_layer = t.layer;
            offset = offset.next_multiple_of(ALIGN_ELEMS);
            layer_starts[t.layer].get_or_insert(offset);
            let len = t.slots();
            tensors.push(TensorSlot {
                name: t.name.clone(),
                shape: t.shape.clone(),
                source: t.source.clone(),
                span: Span { offset, len },
                dtype: t.dtype,
            });
            offset += len;
        }
        let total_elems = offset.next_multiple_of(ALIGN_ELEMS);
        let mut layers = Vec::with_capacity(layer_names.len());
        for (i, name) in layer_names.iter().enumerate() {
            let start = layer_starts[i].expect("every planned layer holds a tensor");
            let end = layer_starts[i + 1..].iter().flatten().next().copied().unwrap_or(total_elems);
            layers.push(LayerSpan { name: name.clone(), span: Span { offset: start, len: end - start } });
        }
        let index = tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Self { tensors, layers, total_elems, index }
    }

    pub fn total_bytes(&self) -> usize {
        self.total_elems * 4
    }

    /// The dtype of its matrices (F32 when it has only vectors).
    pub fn matrix_dtype(&self) -> Dtype {
        self.tensors.iter().find(|t| t.shape.len() >= 2).map_or(Dtype::F32, |t| t.dtype)
    }

    /// The tensor whose slots hold `offset`, if any (tensors are in offset order).
    pub fn tensor_at(&self, offset: usize) -> Option<&TensorSlot> {
        let i = self.tensors.partition_point(|t| t.span.end() <= offset);
        self.tensors.get(i).filter(|t| t.span.offset <= offset)
    }

    pub fn slot(&self, name: &str) -> Option<&TensorSlot> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The span of a planned tensor. Family code asks only for names it planned itself.
    pub fn span(&self, name: &str) -> Span {
        self.slot(name).unwrap_or_else(|| panic!("tensor {name} is not in the layout")).span
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> (Vec<PlannedTensor>, Vec<String>) {
        let plan = vec![
            PlannedTensor::new("emb", &[10, 7], 0),
            PlannedTensor::new("l0.a", &[3, 3], 1),
            PlannedTensor::transposed("l0.b", 2, 4, 1),
            PlannedTensor::new("l0.bias", &[5], 1),
            PlannedTensor::new("head", &[2], 2),
        ];
        (plan, vec!["emb".into(), "l0".into(), "head".into()])
    }

    #[test]
    fn packs_in_plan_order_aligned() {
        let (plan, names) = plan();
        let l = WeightLayout::build(&plan, &names);
        assert_eq!(l.span("emb"), Span { offset: 0, len: 70 });
        assert_eq!(l.span("l0.a").offset, 128);
        assert_eq!(l.span("l0.b").offset, 192);
        assert_eq!(l.slot("l0.b").unwrap().shape, vec![4, 2]);
        assert_eq!(l.slot("l0.b").unwrap().source, Source::Transposed);
        assert_eq!(l.span("l0.bias").offset, 256);
        assert_eq!(l.span("head").offset, 320);
        assert_eq!(l.total_elems, 384);
    }

    #[test]
    fn fused_tensors_name_their_file_parts() {
        // Grouped-query attention: the key and value projections are narrower than the query's.
        let parts = vec![("q".to_string(), 4), ("k".to_string(), 2), ("v".to_string(), 2)];
        let t = PlannedTensor::concat("qkv", parts.clone(), &[8], 0);
        assert_eq!(t.shape, vec![8, 8]);
        let file: Vec<_> = t.file_parts();
        assert_eq!(file[0], ("q".to_string(), vec![4, 8]));
        assert_eq!(file[2], ("v".to_string(), vec![2, 8]));
        let b = PlannedTensor::concat("qkv.bias", parts, &[], 0);
        assert_eq!(b.shape, vec![8]);
        assert_eq!(b.file_parts()[1], ("k".to_string(), vec![2]));
    }

    #[test]
    fn layer_spans_tile_the_buffer() {
        let (plan, names) = plan();
        let l = WeightLayout::build(&plan, &names);
        let mut at = 0;
        for layer in &l.layers {
            assert_eq!(layer.span.offset, at);
            at = layer.span.end();
        }
        assert_eq!(at, l.total_elems);
        for t in &l.tensors {
            let layer = l.layers.iter().find(|s| s.span.offset <= t.span.offset && t.span.end() <= s.span.end());
            assert!(layer.is_some(), "{} lies outside every layer", t.name);
        }
    }
}
