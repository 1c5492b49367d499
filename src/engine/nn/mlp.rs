//! Dense layers: a product with the weights, then the bias, the activation and the residual in
//! one elementwise order.

use crate::engine::program::{Act, Gemm, Op};
use crate::engine::Span;

/// `out = act(x · W + b) (+ residual)` over `rows` rows of `x` (`W` stored `[in, out]`): the
/// GEMM writes `y`, then one elementwise order adds the bias, applies the activation and adds
/// the residual into `out` (which may be `y` or the residual).
#[allow(clippy::too_many_arguments)]
pub fn dense(
    ops: &mut Vec<Op>,
    (x, rows, in_dim): (usize, usize, usize),
    (w, b): (Span, Span),
    (y, out_dim): (usize, usize),
    act: Act,
    residual: Option<usize>,
    out: usize,
) {
    ops.push(Op::Gemm(Gemm::linear_in_out(x, rows, in_dim, w.offset, out_dim, y)));
    ops.push(Op::BiasAct { x: y, bias: b.offset, rows, width: out_dim, act, residual, out });
}
