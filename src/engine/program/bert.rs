//! The BERT forward pass as a device program. Unlike the CPU engine, which drops padding
//! before the first layer, the program runs the padded batch and masks padded keys in
//! attention (the same values for real tokens), then zeroes the padded output rows.

use super::{attention_ops, dense, mask_words, Act, Gemm, Op, Program, Regions};
use crate::engine::batch::TokenBatch;
use crate::engine::bert::BertWeights;
use crate::engine::config::BertConfig;
use crate::engine::Span;

/// `last_hidden_state[batch·seq, hidden]` of a validated batch.
pub fn bert_forward(c: &BertConfig, wt: &BertWeights, batch: &TokenBatch) -> Program {
    let h = c.hidden_size;
    let (b, s) = (batch.batch, batch.seq);
    let n = b * s;
    let heads = c.num_attention_heads;
    let d = h / heads;
    let inter = c.intermediate_size;
    let eps = c.layer_norm_eps;

    let mut r = Regions::default();
    let ids = r.take(n);
    let types = r.take(n);
    let mask = r.take(n);
    let x = r.take(n * h);
    let tmp = r.take(n * h);
    let qkv = r.take(n * 3 * h);
    let ctx = r.take(n * h);
    let inner = r.take(n * inter);
    let scores = r.take(heads * s * s);

    let mut ops = vec![
        Op::WaitLayer(0),
        Op::Embed {
            ids,
            types: Some(types),
            word: wt.word.offset,
            pos: wt.position.offset,
            token_type: Some(wt.token_type.offset),
            rows: n,
            t: s,
            start: 0,
            width: h,
            out: x,
        },
        Op::LayerNorm {
            x,
            bias: None,
            residual: None,
            gamma: wt.emb_ln_w.offset,
            beta: wt.emb_ln_b.offset,
            rows: n,
            width: h,
            eps,
            out: x,
        },
    ];
    // BERT's post-norm residual step: x = LayerNorm(input · W + b + x), through `tmp`.
    let add_norm =
        |ops: &mut Vec<Op>, (input, in_dim): (usize, usize), (w, b): (&Span, &Span), (g, beta): (&Span, &Span)| {
            ops.push(Op::Gemm(Gemm::linear(input, n, in_dim, w.offset, h, tmp)));
            ops.push(Op::LayerNorm {
                x: tmp,
                bias: Some(b.offset),
                residual: Some(x),
                gamma: g.offset,
                beta: beta.offset,
                rows: n,
                width: h,
                eps,
                out: x,
            });
        };
    for (i, lw) in wt.layers.iter().enumerate() {
        ops.push(Op::WaitLayer(i + 1));
        dense(&mut ops, (x, n, h), (lw.qkv_w.offset, lw.qkv_b.offset), (qkv, 3 * h), Act::None, None, qkv);
        for bi in 0..b {
            let rows = qkv + bi * s * 3 * h;
            attention_ops(
                &mut ops,
                (rows, 3 * h),
                (rows + h, rows + 2 * h, 3 * h, d),
                (heads, d, s, s),
                scores,
                Some(mask + bi * s),
                false,
                (ctx + bi * s * h, h),
            );
        }
        add_norm(&mut ops, (ctx, h), (&lw.attn_out_w, &lw.attn_out_b), (&lw.attn_ln_w, &lw.attn_ln_b));
        let act = c.hidden_act.into();
        dense(&mut ops, (x, n, h), (lw.inter_w.offset, lw.inter_b.offset), (inner, inter), act, None, inner);
        add_norm(&mut ops, (inner, inter), (&lw.out_w, &lw.out_b), (&lw.out_ln_w, &lw.out_ln_b));
    }
    ops.push(Op::ZeroRows { x, mask, rows: n, width: h });
    Program {
        ops,
        work_elems: r.used(),
        inputs: vec![(ids, batch.ids.clone()), (types, batch.type_ids.clone()), (mask, mask_words(&batch.mask))],
        output: (x, n * h),
    }
}
