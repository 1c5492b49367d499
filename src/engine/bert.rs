//! The BERT family (BERT, MiniLM and other post-LayerNorm encoders): the weight plan in
//! first-use order and the forward pass over the packed buffer.

use super::batch::TokenBatch;
use super::config::BertConfig;
use super::error::Result;
use super::layout::{PlannedTensor, Span, WeightLayout};
use super::ops::{self, HeadLayout, HeadShape, Segment};
use super::streamed::Weights;
use super::workspace::Arena;

/// Name prefixes a BERT file may use: bare `BertModel`, or a task model's `bert.` submodule.
pub const PREFIXES: &[&str] = &["", "bert."];

/// The tensors in first-use order, with layer 0 the embeddings and layer `i + 1` encoder
/// layer `i`. Linear weights are `[out, in]` in the file and stored transposed; the query, key
/// and value projections are stored as one `[H, 3H]` matrix (and one `[3H]` bias) so that they
/// run as one product.
pub fn plan(c: &BertConfig) -> (Vec<PlannedTensor>, Vec<String>) {
    let h = c.hidden_size;
    let mut p = vec![
        PlannedTensor::new("embeddings.word_embeddings.weight", &[c.vocab_size, h], 0),
        PlannedTensor::new("embeddings.position_embeddings.weight", &[c.max_position_embeddings, h], 0),
        PlannedTensor::new("embeddings.token_type_embeddings.weight", &[c.type_vocab_size, h], 0),
        PlannedTensor::new("embeddings.LayerNorm.weight", &[h], 0),
        PlannedTensor::new("embeddings.LayerNorm.bias", &[h], 0),
    ];
    let mut names = vec!["embeddings".to_string()];
    for i in 0..c.num_hidden_layers {
        let l = i + 1;
        let n = |s: &str| format!("encoder.layer.{i}.{s}");
        let qkv = |kind: &str| ["query", "key", "value"].map(|p| n(&format!("attention.self.{p}.{kind}"))).to_vec();
        let inter = c.intermediate_size;
        p.extend([
            PlannedTensor::transposed_concat(n("attention.self.qkv.weight"), qkv("weight"), h, h, l),
            PlannedTensor::concat(n("attention.self.qkv.bias"), qkv("bias"), h, l),
            PlannedTensor::transposed(n("attention.output.dense.weight"), h, h, l),
            PlannedTensor::new(n("attention.output.dense.bias"), &[h], l),
            PlannedTensor::new(n("attention.output.LayerNorm.weight"), &[h], l),
            PlannedTensor::new(n("attention.output.LayerNorm.bias"), &[h], l),
            PlannedTensor::transposed(n("intermediate.dense.weight"), inter, h, l),
            PlannedTensor::new(n("intermediate.dense.bias"), &[inter], l),
            PlannedTensor::transposed(n("output.dense.weight"), h, inter, l),
            PlannedTensor::new(n("output.dense.bias"), &[h], l),
            PlannedTensor::new(n("output.LayerNorm.weight"), &[h], l),
            PlannedTensor::new(n("output.LayerNorm.bias"), &[h], l),
        ]);
        names.push(format!("encoder.layer.{i}"));
    }
    (p, names)
}

#[derive(Debug, Clone)]
pub(crate) struct LayerSpans {
    /// Query, key and value projections as one `[H, 3H]` weight and `[3H]` bias.
    pub(crate) qkv_w: Span,
    pub(crate) qkv_b: Span,
    pub(crate) attn_out_w: Span,
    pub(crate) attn_out_b: Span,
    pub(crate) attn_ln_w: Span,
    pub(crate) attn_ln_b: Span,
    pub(crate) inter_w: Span,
    pub(crate) inter_b: Span,
    pub(crate) out_w: Span,
    pub(crate) out_b: Span,
    pub(crate) out_ln_w: Span,
    pub(crate) out_ln_b: Span,
}

/// Where each weight sits in the packed buffer, resolved once from the layout.
#[derive(Debug, Clone)]
pub struct BertWeights {
    pub(crate) word: Span,
    pub(crate) position: Span,
    pub(crate) token_type: Span,
    pub(crate) emb_ln_w: Span,
    pub(crate) emb_ln_b: Span,
    pub(crate) layers: Vec<LayerSpans>,
}

impl BertWeights {
    pub fn resolve(c: &BertConfig, l: &WeightLayout) -> Self {
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let s = |x: &str| l.span(&format!("encoder.layer.{i}.{x}"));
                LayerSpans {
                    qkv_w: s("attention.self.qkv.weight"),
                    qkv_b: s("attention.self.qkv.bias"),
                    attn_out_w: s("attention.output.dense.weight"),
                    attn_out_b: s("attention.output.dense.bias"),
                    attn_ln_w: s("attention.output.LayerNorm.weight"),
                    attn_ln_b: s("attention.output.LayerNorm.bias"),
                    inter_w: s("intermediate.dense.weight"),
                    inter_b: s("intermediate.dense.bias"),
                    out_w: s("output.dense.weight"),
                    out_b: s("output.dense.bias"),
                    out_ln_w: s("output.LayerNorm.weight"),
                    out_ln_b: s("output.LayerNorm.bias"),
                }
            })
            .collect();
        Self {
            word: l.span("embeddings.word_embeddings.weight"),
            position: l.span("embeddings.position_embeddings.weight"),
            token_type: l.span("embeddings.token_type_embeddings.weight"),
            emb_ln_w: l.span("embeddings.LayerNorm.weight"),
            emb_ln_b: l.span("embeddings.LayerNorm.bias"),
            layers,
        }
    }
}

/// The encoder's `last_hidden_state`, `[batch·seq, hidden]`, with zeros at padding positions.
/// Padding tokens are dropped before the first layer (every product runs on real tokens only)
/// and attention runs per sequence, which equals masked attention for the real tokens. The batch
/// was validated against the config (ids, type ids and length in range).
pub fn forward<W: Weights + ?Sized>(
    c: &BertConfig,
    wt: &BertWeights,
    w: &W,
    batch: &TokenBatch,
    arena: &mut Arena<'_>,
) -> Result<Vec<f32>> {
    let h = c.hidden_size;
    let (b, s) = (batch.batch, batch.seq);
    let heads = c.num_attention_heads;
    let d = h / heads;
    let eps = c.layer_norm_eps;
    let inter_dim = c.intermediate_size;

    // Positions in the padded batch of the tokens that count, and one segment per sequence.
    let mut keep = Vec::with_capacity(b * s);
    let mut segments = Vec::with_capacity(b);
    for bi in 0..b {
        let first = keep.len();
        keep.extend((bi * s..(bi + 1) * s).filter(|&t| batch.mask[t]));
        let len = keep.len() - first;
        if len > 0 {
            segments.push(Segment { row: first, len, kv_base: first * 3 * h, kv_len: len, mask: None });
        }
    }
    let n = keep.len();
    let mut x = arena.take(n * h)?;
    let (word, pos, tt) = (wt.word.of(w), wt.position.of(w), wt.token_type.of(w));
    for (row, &t) in x.chunks_exact_mut(h).zip(&keep) {
        let id = batch.ids[t] as usize;
        let ty = batch.type_ids[t] as usize;
        let p = t % s;
        for (j, v) in row.iter_mut().enumerate() {
            *v = word[id * h + j] + pos[p * h + j] + tt[ty * h + j];
        }
    }
    ops::layer_norm(x, h, wt.emb_ln_w.of(w), wt.emb_ln_b.of(w), eps);

    let qkv = arena.take(n * 3 * h)?;
    let ctx = arena.take(n * h)?;
    let mut tmp = arena.take(n * h)?;
    let inter = arena.take(n * inter_dim)?;
    for lw in &wt.layers {
        ops::linear(x, n, h, lw.qkv_w.of(w), lw.qkv_b.of(w), 3 * h, qkv);
        let views = [0, h, 2 * h].map(|off| HeadLayout { data: &qkv[off..], head_stride: d, row_stride: 3 * h });
        let shape = HeadShape { heads, head_dim: d, causal: false };
        arena.scoped(|scratch| ops::attention(views, &segments, &[], shape, ctx, scratch))?;
        ops::linear(ctx, n, h, lw.attn_out_w.of(w), lw.attn_out_b.of(w), h, tmp);
        ops::add_layer_norm(tmp, x, h, lw.attn_ln_w.of(w), lw.attn_ln_b.of(w), eps);
        std::mem::swap(&mut x, &mut tmp);
        ops::linear(x, n, h, lw.inter_w.of(w), lw.inter_b.of(w), inter_dim, inter);
        ops::activate(inter, c.hidden_act);
        ops::linear(inter, n, inter_dim, lw.out_w.of(w), lw.out_b.of(w), h, tmp);
        ops::add_layer_norm(tmp, x, h, lw.out_ln_w.of(w), lw.out_ln_b.of(w), eps);
        std::mem::swap(&mut x, &mut tmp);
    }
    // The result leaves the workspace: it is the response.
    let mut hidden = vec![0f32; b * s * h];
    if n == b * s {
        hidden.copy_from_slice(x);
    } else {
        for (row, &t) in x.chunks_exact(h).zip(&keep) {
            hidden[t * h..(t + 1) * h].copy_from_slice(row);
        }
    }
    Ok(hidden)
}
