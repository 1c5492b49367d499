//! Scaled dot-product attention of one sequence (`Op::Attention`).

use crate::engine::program::{Attention, Op};

/// Where one sequence's queries, keys and values are, and how they are laid out.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub heads: usize,
    /// Query heads per key/value head (1: multi-head attention).
    pub group: usize,
    pub head_dim: usize,
    pub q_len: usize,
    pub kv_len: usize,
    /// A sliding window: each query sees its last `window` keys at most.
    pub window: Option<usize>,
}

impl Heads {
    /// Multi-head attention over every key.
    pub fn full(heads: usize, head_dim: usize, q_len: usize, kv_len: usize) -> Self {
        Self { heads, group: 1, head_dim, q_len, kv_len, window: None }
    }
}

/// Attention of one sequence's queries over its keys for every head. Queries are rows of `q`
/// (stride `q_ld`), keys and values rows of `k`/`v` (stride `kv_ld`); head `h` starts `h·d` into
/// a query row and reads key/value head `h / group`, `(h / group)·kv_head_stride` into the keys
/// and values. `mask` (`u32` words, one per
/// key) hides keys, `causal` the future; writes `out[row][h·d..]` with row stride `out_ld`.
/// `scores` is scratch for `heads·q_len·kv_len` elements.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    ops: &mut Vec<Op>,
    (q, q_ld): (usize, usize),
    (k, v, kv_ld, kv_head_stride): (usize, usize, usize, usize),
    shape: Heads,
    scores: usize,
    mask: Option<usize>,
    causal: bool,
    (out, out_ld): (usize, usize),
) {
    let Heads { heads, group, head_dim, q_len, kv_len, window } = shape;
    ops.push(Op::Attention(Attention {
        q,
        q_ld,
        k,
        v,
        kv_ld,
        kv_head_stride,
        heads,
        group,
        head_dim,
        q_len,
        kv_len,
        mask,
        causal,
        window,
        scores,
        out,
        out_ld,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::layout::WeightLayout;
    use crate::engine::program::exec::{self, Resident};
    use crate::engine::program::Program;

    /// One sequence, one head of width 2, two queries; rows hold [q, k, v] side by side.
    fn run(qkv: [f32; 12], mask: Option<[u32; 2]>, causal: bool) -> Vec<f32> {
        let (x, m, scores, out) = (0, 64, 128, 192);
        let mut ops = Vec::new();
        let shape = Heads::full(1, 2, 2, 2);
        attention(&mut ops, (x, 6), (x + 2, x + 4, 6, 2), shape, scores, mask.map(|_| m), causal, (out, 2));
        let mut inputs = vec![(x, qkv.iter().map(|v| v.to_bits()).collect())];
        inputs.extend(mask.map(|words| (m, words.to_vec())));
        let program = Program { ops, work_elems: 256, inputs, output: (out, 4) };
        let layout = WeightLayout::build(&[], &[]);
        exec::run(&program, &Resident::new(&[], &layout), &layout, &mut [0.0; 256]).unwrap()
    }

    #[test]
    fn attention_with_one_key_copies_its_value() {
        // Key 1 is masked out, so every query must return v0.
        #[rustfmt::skip]
        let qkv = [
            1.0, 0.0, 0.3, 0.1, 7.0, -2.0,
            0.0, 1.0, 5.0, 5.0, 1.0, 1.0,
        ];
        assert_eq!(run(qkv, Some([1, 0]), false), vec![7.0, -2.0, 7.0, -2.0]);
    }

    #[test]
    fn causal_attention_hides_later_keys() {
        // The first query may only see key 0, so it returns v0 whatever key 1 scores.
        #[rustfmt::skip]
        let qkv = [
            1.0, 0.0, 0.0, 1.0, 3.0, 4.0,
            0.0, 1.0, 9.0, 9.0, -1.0, 2.0,
        ];
        let out = run(qkv, None, true);
        assert_eq!(&out[..2], &[3.0, 4.0]);
        assert!(out[2] < 3.0, "second query mixes in v1");
    }
}
