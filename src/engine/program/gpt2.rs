//! The GPT-2 forward pass as a device program, with its KV cache in the workspace. The cache
//! and its key mask are the first workspace regions and depend only on the batch and the
//! capacity, so the prefill and every decoding step of one generation share them.

use super::{attention_ops, dense, mask_words, Act, Gemm, Op, Program, Ptr, Regions};
use crate::engine::config::Gpt2Config;
use crate::engine::gpt2::Gpt2Weights;

/// Which rows get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows {
    /// Every position: `[batch·t, vocab]` (the inference output).
    All,
    /// The last new position of each batch item: `[batch, vocab]` (what sampling needs).
    Last,
}

/// One forward step: `t` new tokens per batch item at positions `start..start + t`.
#[derive(Debug, Clone)]
pub struct Gpt2Pass<'a> {
    pub batch: usize,
    /// `[batch, t]`.
    pub ids: &'a [u32],
    pub start: usize,
    /// Positions the cache holds.
    pub capacity: usize,
    /// `[batch, capacity]`: false at padding; entries past `start + t` are ignored.
    pub key_mask: &'a [bool],
    pub logits: LogitRows,
}

pub fn gpt2_forward(c: &Gpt2Config, wt: &Gpt2Weights, pass: &Gpt2Pass<'_>) -> Program {
    let e = c.n_embd;
    let b = pass.batch;
    let t = pass.ids.len() / b;
    let n = b * t;
    let heads = c.n_head;
    let d = e / heads;
    let cap = pass.capacity;
    let kv = pass.start + t;
    let per_layer = b * heads * cap * d;
    let eps = c.layer_norm_epsilon;
    let v = c.vocab_size;
    assert!(kv <= cap, "KV cache overflow");

    let mut r = Regions::default();
    let kcache = r.take(c.n_layer * per_layer);
    let vcache = r.take(c.n_layer * per_layer);
    let key_mask = r.take(b * cap);
    let ids = r.take(n);
    let x = r.take(n * e);
    let normed = r.take(n * e);
    let qkv = r.take(n * 3 * e);
    let ctx = r.take(n * e);
    let tmp = r.take(n * e);
    let inner = r.take(n * c.n_inner);
    let scores = r.take(heads * t * kv);
    let logit_rows = match pass.logits {
        LogitRows::All => n,
        LogitRows::Last => b,
    };
    let logits = r.take(logit_rows * v);

    let ln = |x: usize, w: &crate::engine::Span, bias: &crate::engine::Span, out: usize| Op::LayerNorm {
        x,
        bias: None,
        residual: None,
        gamma: w.offset,
        beta: bias.offset,
        rows: n,
        width: e,
        eps,
        out,
    };
    let mut ops = vec![
        Op::WaitLayer(0),
        Op::Embed {
            ids,
            types: None,
            word: wt.wte.offset,
            pos: wt.wpe.offset,
            token_type: None,
            rows: n,
            t,
            start: pass.start,
            width: e,
            out: x,
        },
    ];
    for (l, bw) in wt.blocks.iter().enumerate() {
        let (k_l, v_l) = (kcache + l * per_layer, vcache + l * per_layer);
        ops.push(Op::WaitLayer(l + 1));
        ops.push(ln(x, &bw.ln1_w, &bw.ln1_b, normed));
        dense(&mut ops, (normed, n, e), (bw.attn_w.offset, bw.attn_b.offset), (qkv, 3 * e), Act::None, None, qkv);
        ops.push(Op::KvAppend {
            qkv,
            k: k_l,
            v: v_l,
            batch: b,
            t,
            heads,
            head_dim: d,
            capacity: cap,
            start: pass.start,
        });
        for bi in 0..b {
            let item = bi * heads * cap * d;
            attention_ops(
                &mut ops,
                (qkv + bi * t * 3 * e, 3 * e),
                (k_l + item, v_l + item, d, cap * d),
                (heads, d, t, kv),
                scores,
                Some(key_mask + bi * cap),
                true,
                (ctx + bi * t * e, e),
            );
        }
        dense(&mut ops, (ctx, n, e), (bw.proj_w.offset, bw.proj_b.offset), (tmp, e), Act::None, Some(x), x);
        ops.push(ln(x, &bw.ln2_w, &bw.ln2_b, normed));
        let (fc, fc_proj) = ((bw.fc_w.offset, bw.fc_b.offset), (bw.fc_proj_w.offset, bw.fc_proj_b.offset));
        dense(&mut ops, (normed, n, e), fc, (inner, c.n_inner), c.activation_function.into(), None, inner);
        dense(&mut ops, (inner, n, c.n_inner), fc_proj, (tmp, e), Act::None, Some(x), x);
    }
    ops.push(Op::WaitLayer(c.n_layer + 1));
    ops.push(ln(x, &wt.lnf_w, &wt.lnf_b, x));
    // logitsᵀ[vocab, rows] = wte[vocab, e] · xᵀ[e, rows] (the tied LM head).
    let head = |first_row: usize, rows: usize, out_row: usize| {
        Op::Gemm(Gemm {
            trans_a: true,
            trans_b: false,
            m: v,
            n: rows,
            k: e,
            alpha: 1.0,
            a: Ptr::W(wt.wte.offset),
            lda: e,
            stride_a: 0,
            b: Ptr::A(x + first_row * e),
            ldb: e,
            stride_b: 0,
            beta: 0.0,
            c: logits + out_row * v,
            ldc: v,
            stride_c: 0,
            batch: 1,
        })
    };
    match pass.logits {
        LogitRows::All => ops.push(head(0, n, 0)),
        LogitRows::Last => ops.extend((0..b).map(|bi| head(bi * t + t - 1, 1, bi))),
    }
    let mut inputs = vec![(ids, pass.ids.to_vec())];
    inputs.push((key_mask, mask_words(&pass.key_mask[..b * cap])));
    Program { ops, work_elems: r.used(), inputs, output: (logits, logit_rows * v) }
}
