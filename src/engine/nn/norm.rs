//! LayerNorm as one order, with what precedes it (a bias, a residual) folded in.

use crate::engine::program::Op;
use crate::engine::Span;

/// The gain and shift of one LayerNorm.
#[derive(Debug, Clone, Copy)]
pub struct LayerNorm {
    pub gamma: Span,
    pub beta: Span,
    pub eps: f32,
}

impl LayerNorm {
    /// `out = LayerNorm(x (+ bias) (+ residual))` over `rows` rows of `width`; `out` may be
    /// `x` or the residual.
    pub fn op(
        &self,
        x: usize,
        bias: Option<Span>,
        residual: Option<usize>,
        rows: usize,
        width: usize,
        out: usize,
    ) -> Op {
        Op::LayerNorm {
            x,
            bias: bias.map(|b| b.offset),
            residual,
            gamma: self.gamma.offset,
            beta: self.beta.offset,
            rows,
            width,
            eps: self.eps,
            out,
        }
    }
}
