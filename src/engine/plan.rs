//! The weight plan, built as a family declares its tensors: each tensor is named once, in the
//! order the forward pass first reads it, inside the layer that reads it first, and the span it
//! gets in the packed buffer comes back at once (candle's `VarBuilder`, for a packed layout).
//! `finish` gives the plan the weights file is read with and the layout execution reads.

use super::layout::{Dtype, Init, PlannedTensor, Span, WeightLayout, ALIGN_ELEMS};

#[derive(Debug, Default)]
pub struct PlanBuilder {
    tensors: Vec<PlannedTensor>,
    layers: Vec<String>,
    offset: usize,
    unprefixed: bool,
    matrices: Dtype,
}

impl PlanBuilder {
    /// A plan whose matrices (embedding tables, linear weights) are stored in `matrices`;
    /// vectors are always F32.
    pub fn new(matrices: Dtype) -> Self {
        Self { matrices, ..Self::default() }
    }

    /// Starts a layer: the unit a swap-in copies and execution waits for. Tensors declared
    /// from here on belong to it.
    pub fn layer(&mut self, name: impl Into<String>) {
        self.layers.push(name.into());
    }

    /// Tensors declared from here on are named at the file's top level, outside the prefix the
    /// rest of the model has (a task head's), until this is called with `false`.
    pub fn unprefixed(&mut self, yes: bool) {
        self.unprefixed = yes;
    }

    fn push(&mut self, mut t: PlannedTensor) -> Span {
        assert!(!self.layers.is_empty(), "tensor {} is declared before any layer", t.name);
        t.layer = self.layers.len() - 1;
        t.unprefixed = self.unprefixed;
        if t.shape.len() >= 2 {
            t.dtype = self.matrices;
        }
        self.offset = self.offset.next_multiple_of(ALIGN_ELEMS);
        let span = Span { offset: self.offset, len: t.slots() };
        self.offset += span.len;
        self.tensors.push(t);
        span
    }

    /// A tensor stored as the file stores it.
    pub fn tensor(&mut self, name: impl Into<String>, shape: &[usize]) -> Span {
        self.push(PlannedTensor::new(name, shape, 0))
    }

    /// A normalisation gain (its synthetic values are drawn around 1).
    pub fn gain(&mut self, name: impl Into<String>, width: usize) -> Span {
        let mut t = PlannedTensor::new(name, &[width], 0);
        t.init = Init::Gain;
        self.push(t)
    }

    /// A linear weight, `[out, in]` as PyTorch's `Linear` holds it: products read it
    /// transposed (`Gemm::linear`), each output's weights in a row — the decoders' layout, which
    /// a decode step's one token reads front to back (`skinny`).
    pub fn linear(&mut self, name: impl Into<String>, out_dim: usize, in_dim: usize) -> Span {
        self.tensor(name, &[out_dim, in_dim])
    }

    /// A linear weight the file stores `[out, in]`, stored `[in, out]`: the encoders' layout,
    /// which the general GEMM reads in place at the batch sizes encoders serve (it would pack
    /// an `[out, in]` one before every product); read by `Gemm::linear_in_out`.
    pub fn linear_in_out(&mut self, name: impl Into<String>, out_dim: usize, in_dim: usize) -> Span {
        self.push(PlannedTensor::transposed(name, out_dim, in_dim, 0))
    }

    /// `[out, in]` file weights (each named with its `out`) stored side by side as one
    /// `[in, Σ out]` (the encoders' fused query/key/value).
    pub fn linear_concat_in_out(
        &mut self,
        name: impl Into<String>,
        parts: Vec<(String, usize)>,
        in_dim: usize,
    ) -> Span {
        self.push(PlannedTensor::transposed_concat(name, parts, in_dim, 0))
    }

    /// Linear weights the file stores as separate `[out, in]` tensors (each part named with its
    /// `out`), stacked as one `[Σ out, in]` (one product instead of several).
    pub fn linear_concat(&mut self, name: impl Into<String>, parts: Vec<(String, usize)>, in_dim: usize) -> Span {
        self.push(PlannedTensor::concat(name, parts, &[in_dim], 0))
    }

    /// Vectors the file stores separately (each named with its length), stored one after another.
    pub fn concat(&mut self, name: impl Into<String>, parts: Vec<(String, usize)>) -> Span {
        self.push(PlannedTensor::concat(name, parts, &[], 0))
    }

    /// The plan, in first-use order, and the layout it packs into.
    pub fn finish(self) -> (Vec<PlannedTensor>, WeightLayout) {
        let layout = WeightLayout::build(&self.tensors, &self.layers);
        debug_assert_eq!(layout.total_elems, self.offset.next_multiple_of(ALIGN_ELEMS));
        (self.tensors, layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_come_back_as_declared_and_match_the_layout() {
        let mut b = PlanBuilder::new(Dtype::F32);
        b.layer("embeddings");
        let emb = b.tensor("emb", &[10, 7]);
        b.layer("block.0");
        let w = b.linear("block.0.w", 2, 4);
        let g = b.gain("block.0.norm", 5);
        let (plan, layout) = b.finish();
        assert_eq!((emb.offset, emb.len), (0, 70));
        assert_eq!(w.offset, 128, "aligned to 64 elements");
        assert_eq!(layout.span("block.0.w"), w);
        assert_eq!(layout.span("block.0.norm"), g);
        assert_eq!(plan[2].init, Init::Gain);
        assert_eq!(layout.layers.len(), 2);
        assert_eq!(plan[1].layer, 1);
    }
}
