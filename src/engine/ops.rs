//! CPU kernels shared by the model families: linear layers, LayerNorm, activations and
//! multi-head attention over strided query/key/value views.

use rayon::prelude::*;

use super::config::Activation;
use super::matmul::{matmul, MatMut, MatRef, Threads};

/// How a linear layer's weight matrix is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum WeightOrder {
    /// `[out, in]` (`torch.nn.Linear`, BERT): `y = x · Wᵀ + b`.
    OutIn,
    /// `[in, out]` (GPT-2's `Conv1D`): `y = x · W + b`.
    InOut,
}

/// `out[rows, out_dim] = x[rows, in_dim] · W + b`, with `W` stored as `order` says.
pub fn linear(
    x: &[f32],
    rows: usize,
    in_dim: usize,
    w: &[f32],
    b: &[f32],
    out_dim: usize,
    order: WeightOrder,
    out: &mut [f32],
) {
    debug_assert_eq!(b.len(), out_dim);
    let out = &mut out[..rows * out_dim];
    for row in out.chunks_exact_mut(out_dim) {
        row.copy_from_slice(b);
    }
    let w = match order {
        WeightOrder::OutIn => MatRef::row_major(w, out_dim, in_dim).t(),
        WeightOrder::InOut => MatRef::row_major(w, in_dim, out_dim),
    };
    matmul(
        MatMut::row_major(out, rows, out_dim),
        MatRef::row_major(&x[..rows * in_dim], rows, in_dim),
        w,
        true,
        1.0,
        Threads::Pool,
    );
}

/// LayerNorm over rows of `width`, in place, with biased variance as PyTorch computes it.
pub fn layer_norm(x: &mut [f32], width: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(width) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / width as f64;
        let var = row
            .iter()
            .map(|&v| {
                let d = v as f64 - mean;
                d * d
            })
            .sum::<f64>()
            / width as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = ((*v as f64 - mean) * inv) as f32 * g + b;
        }
    }
}

/// `x += residual`, then LayerNorm: BERT's post-norm residual step.
pub fn add_layer_norm(
    x: &mut [f32],
    residual: &[f32],
    width: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    for (v, r) in x.iter_mut().zip(residual) {
        *v += r;
    }
    layer_norm(x, width, gamma, beta, eps);
}

pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

pub fn activate(x: &mut [f32], act: Activation) {
    match act {
        Activation::GeluErf => x
            .par_chunks_mut(4096)
            .for_each(|c| c.iter_mut().for_each(|v| *v = gelu_erf(*v))),
        Activation::GeluTanh => x
            .par_chunks_mut(4096)
            .for_each(|c| c.iter_mut().for_each(|v| *v = gelu_tanh(*v))),
        Activation::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
    }
}

#[inline]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // √(2/π)
    0.5 * x * (1.0 + (C * (x + 0.044_715 * x * x * x)).tanh())
}

/// Where one head's rows of Q, K or V sit in a buffer: row `r` of head `h` in batch item `b`
/// starts at `b·batch_stride + h·head_stride + r·row_stride`.
#[derive(Clone, Copy)]
pub struct HeadLayout<'a> {
    pub data: &'a [f32],
    pub batch_stride: usize,
    pub head_stride: usize,
    pub row_stride: usize,
}

impl<'a> HeadLayout<'a> {
    fn rows(&self, b: usize, h: usize, rows: usize, dim: usize) -> MatRef<'a> {
        let start = b * self.batch_stride + h * self.head_stride;
        MatRef::strided(&self.data[start..], rows, dim, self.row_stride, 1)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct AttentionDims {
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Queries per batch item (new tokens).
    pub q_len: usize,
    /// Keys per batch item (cached and new).
    pub kv_len: usize,
    /// Causal: query `i` sits at position `kv_len - q_len + i` and sees keys up to it.
    pub causal: bool,
}

/// Scaled dot-product attention for every batch item and head. `key_mask[b·kv_len + j]` is
/// false for padding keys. Writes `out[b·q_len + i][h·d .. h·d + d]`.
pub fn attention(
    q: HeadLayout<'_>,
    k: HeadLayout<'_>,
    v: HeadLayout<'_>,
    key_mask: &[bool],
    dims: AttentionDims,
    out: &mut [f32],
) {
    let AttentionDims {
        batch,
        heads,
        head_dim: d,
        q_len,
        kv_len,
        causal,
    } = dims;
    assert_eq!(key_mask.len(), batch * kv_len);
    let scale = 1.0 / (d as f32).sqrt();
    let mut per_head = vec![0f32; batch * heads * q_len * d];
    per_head
        .par_chunks_mut(q_len * d)
        .enumerate()
        .for_each_init(
            || vec![0f32; q_len * kv_len],
            |scores, (bh, head_out)| {
                let (b, h) = (bh / heads, bh % heads);
                matmul(
                    MatMut::row_major(scores, q_len, kv_len),
                    q.rows(b, h, q_len, d),
                    k.rows(b, h, kv_len, d).t(),
                    false,
                    scale,
                    Threads::Single,
                );
                let mask = &key_mask[b * kv_len..(b + 1) * kv_len];
                for (i, row) in scores.chunks_exact_mut(kv_len).enumerate() {
                    let visible = if causal {
                        kv_len - q_len + i + 1
                    } else {
                        kv_len
                    };
                    masked_softmax(row, mask, visible);
                }
                matmul(
                    MatMut::row_major(head_out, q_len, d),
                    MatRef::row_major(scores, q_len, kv_len),
                    v.rows(b, h, kv_len, d),
                    false,
                    1.0,
                    Threads::Single,
                );
            },
        );
    let hidden = heads * d;
    for (bh, head_out) in per_head.chunks_exact(q_len * d).enumerate() {
        let (b, h) = (bh / heads, bh % heads);
        for (i, row) in head_out.chunks_exact(d).enumerate() {
            let at = (b * q_len + i) * hidden + h * d;
            out[at..at + d].copy_from_slice(row);
        }
    }
}

/// Softmax over `row[..visible]` where `mask` is true; every other entry becomes 0. A row that
/// sees no key at all gets uniform weights over the visible range, as adding a very negative
/// bias to every score (what PyTorch does) would give.
pub fn masked_softmax(row: &mut [f32], mask: &[bool], visible: usize) {
    let allowed = |j: usize| j < visible && mask[j];
    let max = (0..row.len())
        .filter(|&j| allowed(j))
        .map(|j| row[j])
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        let w = 1.0 / visible.max(1) as f32;
        for (j, v) in row.iter_mut().enumerate() {
            *v = if j < visible { w } else { 0.0 };
        }
        return;
    }
    let mut sum = 0f32;
    for (j, v) in row.iter_mut().enumerate() {
        *v = if allowed(j) { (*v - max).exp() } else { 0.0 };
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_variants_match_known_values() {
        // Values from torch.nn.functional.gelu(x) and gelu(x, approximate="tanh").
        for (x, erf, tanh) in [
            (1.0f32, 0.841_344_75, 0.841_192),
            (-0.5, -0.154_268_77, -0.154_285_99),
            (3.0, 2.995_950_3, 2.996_362_6),
        ] {
            assert!((gelu_erf(x) - erf).abs() < 1e-6, "erf gelu({x})");
            assert!((gelu_tanh(x) - tanh).abs() < 1e-6, "tanh gelu({x})");
        }
    }

    #[test]
    fn layer_norm_normalises_each_row() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0];
        layer_norm(&mut x, 4, &[1.0; 4], &[0.5; 4], 1e-12);
        let row0 = &x[..4];
        let mean: f32 = row0.iter().sum::<f32>() / 4.0;
        assert!((mean - 0.5).abs() < 1e-6);
        assert!((row0[3] - 0.5 - 1.341_640_8).abs() < 1e-5);
        assert!(
            x[4..].iter().all(|&v| (v - 0.5).abs() < 1e-6),
            "constant row maps to beta"
        );
    }

    #[test]
    fn masked_softmax_ignores_masked_and_future_keys() {
        let mut row = vec![1.0, 5.0, 2.0, 9.0];
        masked_softmax(&mut row, &[true, false, true, true], 3);
        assert_eq!(row[1], 0.0);
        assert_eq!(row[3], 0.0);
        let e = (1.0f32 - 2.0).exp();
        assert!((row[0] - e / (1.0 + e)).abs() < 1e-6);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn attention_with_one_key_copies_its_value() {
        // One batch item, one head of width 2, two queries, keys [k0, k1] with k1 masked out:
        // every query must return v0.
        let qkv = [
            1.0, 0.0, /*k0*/ 0.3, 0.1, /*v0*/ 7.0, -2.0, 0.0, 1.0, /*k1*/ 5.0, 5.0,
            /*v1*/ 1.0, 1.0,
        ];
        let l = |off: usize| HeadLayout {
            data: &qkv[off..],
            batch_stride: 12,
            head_stride: 2,
            row_stride: 6,
        };
        let dims = AttentionDims {
            batch: 1,
            heads: 1,
            head_dim: 2,
            q_len: 2,
            kv_len: 2,
            causal: false,
        };
        let mut out = vec![0.0; 4];
        attention(l(0), l(2), l(4), &[true, false], dims, &mut out);
        assert_eq!(out, vec![7.0, -2.0, 7.0, -2.0]);
    }
}
