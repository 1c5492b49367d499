//! CPU kernels of the program executor's elementwise orders: LayerNorm, activations and the
//! masked softmax, vectorised (`multiversion!`).

use rayon::prelude::*;

use super::config::Activation;
use super::fast_math::{self, multiversion};

multiversion! {
/// LayerNorm over rows of `width`, in place, with biased variance as PyTorch computes it.
pub fn layer_norm(x: &mut [f32], width: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(width) {
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

/// Below this many elements an element-wise pass is cheaper than waking pool threads.
const PARALLEL_ELEMS: usize = 1 << 16;

pub fn activate(x: &mut [f32], act: Activation) {
    let apply = |chunk: &mut [f32]| match act {
        Activation::GeluErf => gelu_erf_slice(chunk),
        Activation::GeluTanh => gelu_tanh_slice(chunk),
        Activation::Relu => chunk.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Tanh => chunk.iter_mut().for_each(|v| *v = v.tanh()),
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

multiversion! {
/// Softmax over `row[visible]` where `mask` is true; every other entry becomes 0. A row that
/// sees no key at all gets uniform weights over the visible range, as adding a very negative
/// bias to every score (what PyTorch does) would give.
pub fn masked_softmax(row: &mut [f32], mask: Option<&[bool]>, visible: std::ops::Range<usize>) {
    let end = visible.end.min(row.len());
    let first = visible.start.min(end);
    {
        if let Some(mask) = mask {
            for (v, &m) in row[first..end].iter_mut().zip(&mask[first..]) {
                if !m {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        row[..first].fill(f32::NEG_INFINITY);
        row[end..].fill(f32::NEG_INFINITY);
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
        if max == f32::NEG_INFINITY {
            // Every entry outside the visible range was set to -inf above: zero it, or the
            // product with the values would turn it into NaN.
            let w = 1.0 / (end - first).max(1) as f32;
            row.fill(0.0);
            row[first..end].fill(w);
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

multiversion! {
/// RMSNorm of one vector in place, as transformers computes it in F32:
/// `x / √(mean(x²) + eps) · gamma`.
pub fn rms_norm(x: &mut [f32], gamma: &[f32], eps: f32) {
    let mean = lane_sum(x, |v| v * v) / x.len() as f32;
    let inv = 1.0 / (mean + eps).sqrt();
    for (v, g) in x.iter_mut().zip(gamma) {
        *v = g * (*v * inv);
    }
}
}

/// `x · sigmoid(x)` (SiLU, the gate of SwiGLU).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        masked_softmax(&mut row, Some(&[true, false, true, true]), 0..3);
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
        masked_softmax(&mut row, Some(&[false, true, true, true]), 0..1);
        assert_eq!(row, vec![1.0, 0.0, 0.0, 0.0]);
        let mut row = vec![0.3, 0.1, 0.2];
        masked_softmax(&mut row, Some(&[false, false, true]), 0..2);
        assert_eq!(row, vec![0.5, 0.5, 0.0]);
    }

    #[test]
    fn a_sliding_window_hides_keys_before_it() {
        let mut row = vec![9.0, 1.0, 2.0, 7.0];
        masked_softmax(&mut row, None, 1..3);
        assert_eq!((row[0], row[3]), (0.0, 0.0));
        let e = (1.0f32 - 2.0).exp();
        assert!((row[1] - e / (1.0 + e)).abs() < 1e-6);
    }

    #[test]
    fn rms_norm_scales_to_unit_root_mean_square() {
        let mut x = vec![3.0, -4.0];
        rms_norm(&mut x, &[1.0, 2.0], 0.0);
        let rms = (12.5f32).sqrt();
        assert!((x[0] - 3.0 / rms).abs() < 1e-6 && (x[1] + 8.0 / rms).abs() < 1e-6);
        assert!((silu(0.0)).abs() < 1e-9 && (silu(20.0) - 20.0).abs() < 1e-5);
    }
}
