//! CPU kernels shared by the model families: linear layers, LayerNorm, activations and
//! multi-head attention over strided query/key/value views.

use rayon::prelude::*;

use super::config::Activation;
use super::error::Result;
use super::fast_math::{self, multiversion};
use super::matmul::{matmul, MatMut, MatRef, Threads};
use super::workspace::Arena;

/// `out[rows, out_dim] = x[rows, in_dim] · W + b` with `W` stored `[in, out]` (the layout
/// puts every linear weight that way).
pub fn linear(x: &[f32], rows: usize, in_dim: usize, w: &[f32], b: &[f32], out_dim: usize, out: &mut [f32]) {
    debug_assert_eq!(b.len(), out_dim);
    let out = &mut out[..rows * out_dim];
    for row in out.chunks_exact_mut(out_dim) {
        row.copy_from_slice(b);
    }
    matmul(
        MatMut::row_major(out, rows, out_dim),
        MatRef::row_major(&x[..rows * in_dim], rows, in_dim),
        MatRef::row_major(w, in_dim, out_dim),
        true,
        1.0,
        Threads::Pool,
    );
}

/// LayerNorm over rows of `width`, in place, with biased variance as PyTorch computes it.
pub fn layer_norm(x: &mut [f32], width: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    add_layer_norm_rows(x, None, width, gamma, beta, eps);
}

/// `x += residual`, then LayerNorm: BERT's post-norm residual step.
pub fn add_layer_norm(x: &mut [f32], residual: &[f32], width: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    add_layer_norm_rows(x, Some(residual), width, gamma, beta, eps);
}

multiversion! {
    fn add_layer_norm_rows(x: &mut [f32], residual: Option<&[f32]>, width: usize, gamma: &[f32], beta: &[f32], eps: f32) {
        for (r, row) in x.chunks_exact_mut(width).enumerate() {
            if let Some(res) = residual {
                row.iter_mut().zip(&res[r * width..(r + 1) * width]).for_each(|(v, a)| *v += a);
            }
            let mean = lane_sum(row, |v| v) / width as f32;
            let var = lane_sum(row, |v| (v - mean) * (v - mean)) / width as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

/// Sum of `f(x)` over `x` in eight lanes, so the loop vectorises (a single running sum
/// would fix the order of additions and keep it scalar).
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for i in 0..8 {
            acc[i] += f(c[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Below this many elements an element-wise pass is cheaper than waking pool threads.
const PARALLEL_ELEMS: usize = 1 << 16;

pub fn activate(x: &mut [f32], act: Activation) {
    let apply = |chunk: &mut [f32]| match act {
        Activation::GeluErf => gelu_erf_slice(chunk),
        Activation::GeluTanh => gelu_tanh_slice(chunk),
        Activation::Relu => chunk.iter_mut().for_each(|v| *v = v.max(0.0)),
    };
    if x.len() < PARALLEL_ELEMS {
        apply(x);
    } else {
        x.par_chunks_mut(PARALLEL_ELEMS / 4).for_each(apply);
    }
}

multiversion! {
    fn gelu_erf_slice(x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = gelu_erf(*v));
    }
}

multiversion! {
    fn gelu_tanh_slice(x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = gelu_tanh(*v));
    }
}

#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + fast_math::erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // √(2/π)
    0.5 * x * (1.0 + (C * (x + 0.044_715 * x * x * x)).tanh())
}

/// Where heads' rows of Q, K or V sit in a buffer: row `r` of head `h` starts at
/// `base + h·head_stride + r·row_stride`, with `base` given per sequence.
#[derive(Clone, Copy)]
pub struct HeadLayout<'a> {
    pub data: &'a [f32],
    pub head_stride: usize,
    pub row_stride: usize,
}

impl<'a> HeadLayout<'a> {
    fn rows(&self, base: usize, h: usize, rows: usize, dim: usize) -> MatRef<'a> {
        MatRef::strided(&self.data[base + h * self.head_stride..], rows, dim, self.row_stride, 1)
    }
}

/// One sequence of an attention call.
#[derive(Clone, Debug)]
pub struct Segment {
    /// Its first query row: queries are rows `row..row + len` of Q and of the output.
    pub row: usize,
    pub len: usize,
    /// Element offset of its first key (and value) row.
    pub kv_base: usize,
    pub kv_len: usize,
    /// Its keys' entries in the key mask (false for padding); `None` when every key counts.
    pub mask: Option<std::ops::Range<usize>>,
}

#[derive(Clone, Copy, Debug)]
pub struct HeadShape {
    pub heads: usize,
    pub head_dim: usize,
    pub causal: bool,
}

/// Scaled dot-product attention for every sequence and head. Causal: query `i` sits at
/// position `kv_len - len + i` and sees keys up to it. Writes `out[row + i][h·d .. h·d + d]`.
/// Scores and per-head outputs live in `arena`.
pub fn attention(
    qkv: [HeadLayout<'_>; 3],
    segments: &[Segment],
    key_mask: &[bool],
    shape: HeadShape,
    out: &mut [f32],
    arena: &mut Arena<'_>,
) -> Result<()> {
    let [q, k, v] = qkv;
    let HeadShape { heads, head_dim: d, causal } = shape;
    let scale = 1.0 / (d as f32).sqrt();
    // One job per (sequence, head), each with its own scratch: scores then the head's output.
    let mut jobs = Vec::with_capacity(segments.len() * heads);
    for (si, seg) in segments.iter().enumerate() {
        for h in 0..heads {
            let scores = arena.take(seg.len * seg.kv_len)?;
            let head_out = arena.take(seg.len * d)?;
            jobs.push((si, h, scores, head_out));
        }
    }
    let run = |job: &mut (usize, usize, &mut [f32], &mut [f32])| {
        let (si, h, ref mut scores, ref mut head_out) = *job;
        let seg = &segments[si];
        let (q_len, kv_len) = (seg.len, seg.kv_len);
        matmul(
            MatMut::row_major(scores, q_len, kv_len),
            q.rows(seg.row * q.row_stride, h, q_len, d),
            k.rows(seg.kv_base, h, kv_len, d).t(),
            false,
            scale,
            Threads::Single,
        );
        let mask = seg.mask.clone().map(|r| &key_mask[r]);
        for (i, row) in scores.chunks_exact_mut(kv_len).enumerate() {
            let visible = if causal { kv_len - q_len + i + 1 } else { kv_len };
            masked_softmax(row, mask, visible);
        }
        matmul(
            MatMut::row_major(head_out, q_len, d),
            MatRef::row_major(scores, q_len, kv_len),
            v.rows(seg.kv_base, h, kv_len, d),
            false,
            1.0,
            Threads::Single,
        );
    };
    let work: usize = segments.iter().map(|s| s.len * s.kv_len).sum::<usize>() * heads * d;
    if work < PARALLEL_ELEMS * 4 {
        jobs.iter_mut().for_each(run);
    } else {
        jobs.par_iter_mut().for_each(run);
    }
    let hidden = heads * d;
    for (si, h, _, head_out) in &jobs {
        let row = segments[*si].row;
        for (i, r) in head_out.chunks_exact(d).enumerate() {
            let at = (row + i) * hidden + h * d;
            out[at..at + d].copy_from_slice(r);
        }
    }
    Ok(())
}

multiversion! {
/// Softmax over `row[..visible]` where `mask` is true; every other entry becomes 0. A row that
/// sees no key at all gets uniform weights over the visible range, as adding a very negative
/// bias to every score (what PyTorch does) would give.
pub fn masked_softmax(row: &mut [f32], mask: Option<&[bool]>, visible: usize) {
    let visible = visible.min(row.len());
    {
        if let Some(mask) = mask {
            for (v, &m) in row[..visible].iter_mut().zip(mask) {
                if !m {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        row[visible..].fill(f32::NEG_INFINITY);
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
        if max == f32::NEG_INFINITY {
            // Every entry past the visible range was set to -inf above: zero it, or the
            // product with the values would turn it into NaN.
            let w = 1.0 / visible.max(1) as f32;
            row[..visible].fill(w);
            row[visible..].fill(0.0);
            return;
        }
        let mut sum = 0f32;
        for v in row.iter_mut() {
            *v = if *v == f32::NEG_INFINITY { 0.0 } else { fast_math::exp(*v - max) };
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::workspace::Workspace;

    #[test]
    fn gelu_variants_match_known_values() {
        // Values from torch.nn.functional.gelu(x) and gelu(x, approximate="tanh").
        for (x, erf, tanh) in
            [(1.0f32, 0.841_344_7, 0.841_192), (-0.5, -0.154_268_8, -0.154_286), (3.0, 2.995_950_3, 2.996_362_6)]
        {
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
        assert!(x[4..].iter().all(|&v| (v - 0.5).abs() < 1e-6), "constant row maps to beta");
    }

    #[test]
    fn masked_softmax_ignores_masked_and_future_keys() {
        let mut row = vec![1.0, 5.0, 2.0, 9.0];
        masked_softmax(&mut row, Some(&[true, false, true, true]), 3);
        assert_eq!(row[1], 0.0);
        assert_eq!(row[3], 0.0);
        let e = (1.0f32 - 2.0).exp();
        assert!((row[0] - e / (1.0 + e)).abs() < 1e-6);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_row_that_sees_no_key_is_uniform_over_the_visible_ones_and_zero_elsewhere() {
        // Query 0 of a left-padded sequence: its one visible key is padding.
        let mut row = vec![0.3, 0.1, 0.2, 0.7];
        masked_softmax(&mut row, Some(&[false, true, true, true]), 1);
        assert_eq!(row, vec![1.0, 0.0, 0.0, 0.0]);
        let mut row = vec![0.3, 0.1, 0.2];
        masked_softmax(&mut row, Some(&[false, false, true]), 2);
        assert_eq!(row, vec![0.5, 0.5, 0.0]);
    }

    fn shape(causal: bool) -> HeadShape {
        HeadShape { heads: 1, head_dim: 2, causal }
    }

    #[test]
    fn attention_with_one_key_copies_its_value() {
        // One sequence, one head of width 2, two queries; rows hold [q, k, v] side by side and
        // key 1 is masked out, so every query must return v0.
        #[rustfmt::skip]
        let qkv = [
            1.0, 0.0, 0.3, 0.1, 7.0, -2.0,
            0.0, 1.0, 5.0, 5.0, 1.0, 1.0,
        ];
        let l = |off: usize| HeadLayout { data: &qkv[off..], head_stride: 2, row_stride: 6 };
        let seg = Segment { row: 0, len: 2, kv_base: 0, kv_len: 2, mask: Some(0..2) };
        let mut out = vec![0.0; 4];
        let mut ws = Workspace::new(64);
        attention([l(0), l(2), l(4)], &[seg], &[true, false], shape(false), &mut out, &mut ws.arena()).unwrap();
        assert_eq!(out, vec![7.0, -2.0, 7.0, -2.0]);
    }

    #[test]
    fn causal_attention_hides_later_keys() {
        // The first query may only see key 0, so it returns v0 whatever key 1 scores.
        #[rustfmt::skip]
        let qkv = [
            1.0, 0.0, 0.0, 1.0, 3.0, 4.0,
            0.0, 1.0, 9.0, 9.0, -1.0, 2.0,
        ];
        let l = |off: usize| HeadLayout { data: &qkv[off..], head_stride: 2, row_stride: 6 };
        let seg = Segment { row: 0, len: 2, kv_base: 0, kv_len: 2, mask: None };
        let mut out = vec![0.0; 4];
        let mut ws = Workspace::new(64);
        attention([l(0), l(2), l(4)], &[seg], &[], shape(true), &mut out, &mut ws.arena()).unwrap();
        assert_eq!(&out[..2], &[3.0, 4.0]);
        assert!(out[2] < 3.0, "second query mixes in v1");
    }
}
