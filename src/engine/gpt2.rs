//! The GPT-2 family (pre-LayerNorm causal decoder, tied LM head): the weight plan, the forward
//! pass with a KV cache, and the logits projection.

use super::config::Gpt2Config;
use super::error::Result;
use super::layout::{PlannedTensor, Span, WeightLayout};
use super::matmul::{matmul, MatMut, MatRef, Threads};
use super::ops::{self, HeadLayout, HeadShape, Segment};
use super::streamed::Weights;
use super::workspace::Arena;

/// `GPT2LMHeadModel` files prefix names with `transformer.`; bare `GPT2Model` files do not.
pub const PREFIXES: &[&str] = &["transformer.", ""];

/// Layer 0 the embeddings, layer `i + 1` block `i`, the last layer the final LayerNorm. The
/// LM head is tied to `wte`, which the embeddings already hold.
pub fn plan(c: &Gpt2Config) -> (Vec<PlannedTensor>, Vec<String>) {
    let e = c.n_embd;
    let mut p = vec![
        PlannedTensor::new("wte.weight", &[c.vocab_size, e], 0),
        PlannedTensor::new("wpe.weight", &[c.n_positions, e], 0),
    ];
    let mut names = vec!["embeddings".to_string()];
    for i in 0..c.n_layer {
        let l = i + 1;
        let n = |s: &str| format!("h.{i}.{s}");
        p.extend([
            PlannedTensor::new(n("ln_1.weight"), &[e], l),
            PlannedTensor::new(n("ln_1.bias"), &[e], l),
            PlannedTensor::new(n("attn.c_attn.weight"), &[e, 3 * e], l),
            PlannedTensor::new(n("attn.c_attn.bias"), &[3 * e], l),
            PlannedTensor::new(n("attn.c_proj.weight"), &[e, e], l),
            PlannedTensor::new(n("attn.c_proj.bias"), &[e], l),
            PlannedTensor::new(n("ln_2.weight"), &[e], l),
            PlannedTensor::new(n("ln_2.bias"), &[e], l),
            PlannedTensor::new(n("mlp.c_fc.weight"), &[e, c.n_inner], l),
            PlannedTensor::new(n("mlp.c_fc.bias"), &[c.n_inner], l),
            PlannedTensor::new(n("mlp.c_proj.weight"), &[c.n_inner, e], l),
            PlannedTensor::new(n("mlp.c_proj.bias"), &[e], l),
        ]);
        names.push(format!("h.{i}"));
    }
    let last = c.n_layer + 1;
    p.push(PlannedTensor::new("ln_f.weight", &[e], last));
    p.push(PlannedTensor::new("ln_f.bias", &[e], last));
    names.push("ln_f".to_string());
    (p, names)
}

#[derive(Debug, Clone)]
pub(crate) struct BlockSpans {
    pub(crate) ln1_w: Span,
    pub(crate) ln1_b: Span,
    pub(crate) attn_w: Span,
    pub(crate) attn_b: Span,
    pub(crate) proj_w: Span,
    pub(crate) proj_b: Span,
    pub(crate) ln2_w: Span,
    pub(crate) ln2_b: Span,
    pub(crate) fc_w: Span,
    pub(crate) fc_b: Span,
    pub(crate) fc_proj_w: Span,
    pub(crate) fc_proj_b: Span,
}

#[derive(Debug, Clone)]
pub struct Gpt2Weights {
    pub(crate) wte: Span,
    pub(crate) wpe: Span,
    pub(crate) blocks: Vec<BlockSpans>,
    pub(crate) lnf_w: Span,
    pub(crate) lnf_b: Span,
}

impl Gpt2Weights {
    pub fn resolve(c: &Gpt2Config, l: &WeightLayout) -> Self {
        let blocks = (0..c.n_layer)
            .map(|i| {
                let s = |x: &str| l.span(&format!("h.{i}.{x}"));
                BlockSpans {
                    ln1_w: s("ln_1.weight"),
                    ln1_b: s("ln_1.bias"),
                    attn_w: s("attn.c_attn.weight"),
                    attn_b: s("attn.c_attn.bias"),
                    proj_w: s("attn.c_proj.weight"),
                    proj_b: s("attn.c_proj.bias"),
                    ln2_w: s("ln_2.weight"),
                    ln2_b: s("ln_2.bias"),
                    fc_w: s("mlp.c_fc.weight"),
                    fc_b: s("mlp.c_fc.bias"),
                    fc_proj_w: s("mlp.c_proj.weight"),
                    fc_proj_b: s("mlp.c_proj.bias"),
                }
            })
            .collect();
        Self {
            wte: l.span("wte.weight"),
            wpe: l.span("wpe.weight"),
            blocks,
            lnf_w: l.span("ln_f.weight"),
            lnf_b: l.span("ln_f.bias"),
        }
    }
}

/// Keys and values of every position seen so far, per layer, laid out
/// `[layer][batch, head, capacity, head_dim]` in workspace memory, so each head's keys are one
/// strided matrix.
pub struct KvCache<'a> {
    batch: usize,
    heads: usize,
    head_dim: usize,
    capacity: usize,
    len: usize,
    per_layer: usize,
    k: &'a mut [f32],
    v: &'a mut [f32],
    /// `[batch, capacity]`: false for padding positions.
    key_mask: Vec<bool>,
}

impl<'a> KvCache<'a> {
    pub fn new(c: &Gpt2Config, batch: usize, capacity: usize, arena: &mut Arena<'a>) -> Result<Self> {
        let d = c.n_embd / c.n_head;
        let per_layer = batch * c.n_head * capacity * d;
        Ok(Self {
            batch,
            heads: c.n_head,
            head_dim: d,
            capacity,
            len: 0,
            per_layer,
            k: arena.take(c.n_layer * per_layer)?,
            v: arena.take(c.n_layer * per_layer)?,
            key_mask: vec![false; batch * capacity],
        })
    }

    /// Copies the keys and values of `t` new positions out of `qkv[batch·t, 3E]`.
    fn append(&mut self, layer: usize, qkv: &[f32], t: usize) {
        let (h, d) = (self.heads, self.head_dim);
        let e = h * d;
        for b in 0..self.batch {
            for i in 0..t {
                let row = &qkv[(b * t + i) * 3 * e..(b * t + i + 1) * 3 * e];
                let pos = self.len + i;
                for head in 0..h {
                    let at = layer * self.per_layer + ((b * h + head) * self.capacity + pos) * d;
                    self.k[at..at + d].copy_from_slice(&row[e + head * d..e + head * d + d]);
                    self.v[at..at + d].copy_from_slice(&row[2 * e + head * d..2 * e + head * d + d]);
                }
            }
        }
    }

    fn layout<'d>(&self, data: &'d [f32]) -> HeadLayout<'d> {
        HeadLayout { data, head_stride: self.capacity * self.head_dim, row_stride: self.head_dim }
    }

    /// Attention segments for `t` new tokens per batch item over the `kv_len` cached keys.
    fn segments(&self, t: usize, kv_len: usize) -> Vec<Segment> {
        (0..self.batch)
            .map(|b| Segment {
                row: b * t,
                len: t,
                kv_base: b * self.heads * self.capacity * self.head_dim,
                kv_len,
                mask: Some(b * kv_len..(b + 1) * kv_len),
            })
            .collect()
    }
}

/// Runs `t` new tokens per batch item (`ids` and `mask` are `[batch, t]`) at positions
/// `cache.len()..`, appends their keys and values to the cache, and returns the final hidden
/// states after `ln_f`, `[batch·t, n_embd]`. The caller checked that the cache has room and
/// the ids are in the vocabulary.
pub fn forward<W: Weights + ?Sized>(
    c: &Gpt2Config,
    wt: &Gpt2Weights,
    w: &W,
    cache: &mut KvCache<'_>,
    ids: &[u32],
    mask: &[bool],
    arena: &mut Arena<'_>,
) -> Result<Vec<f32>> {
    let e = c.n_embd;
    let b = cache.batch;
    let t = ids.len() / b;
    assert_eq!((ids.len(), mask.len()), (b * t, b * t), "ids and mask are [batch, t]");
    let n = b * t;
    let start = cache.len;
    assert!(start + t <= cache.capacity, "KV cache overflow");
    for bi in 0..b {
        let m = &mask[bi * t..(bi + 1) * t];
        cache.key_mask[bi * cache.capacity + start..bi * cache.capacity + start + t].copy_from_slice(m);
    }
    let kv_len = start + t;
    let key_mask: Vec<bool> = (0..b)
        .flat_map(|bi| cache.key_mask[bi * cache.capacity..bi * cache.capacity + kv_len].iter().copied())
        .collect();
    let (wte, wpe) = (wt.wte.of(w), wt.wpe.of(w));
    let x = arena.take(n * e)?;
    for (r, row) in x.chunks_exact_mut(e).enumerate() {
        let id = ids[r] as usize;
        let pos = start + r % t;
        for (j, v) in row.iter_mut().enumerate() {
            *v = wte[id * e + j] + wpe[pos * e + j];
        }
    }

    let normed = arena.take(n * e)?;
    let qkv = arena.take(n * 3 * e)?;
    let ctx = arena.take(n * e)?;
    let tmp = arena.take(n * e)?;
    let inner = arena.take(n * c.n_inner)?;
    let segments = cache.segments(t, kv_len);
    let eps = c.layer_norm_epsilon;
    for (l, bw) in wt.blocks.iter().enumerate() {
        normed.copy_from_slice(x);
        ops::layer_norm(normed, e, bw.ln1_w.of(w), bw.ln1_b.of(w), eps);
        ops::linear(normed, n, e, bw.attn_w.of(w), bw.attn_b.of(w), 3 * e, qkv);
        cache.append(l, qkv, t);
        let q = HeadLayout { data: qkv, head_stride: e / c.n_head, row_stride: 3 * e };
        let layer = l * cache.per_layer..(l + 1) * cache.per_layer;
        let (kl, vl) = (cache.layout(&cache.k[layer.clone()]), cache.layout(&cache.v[layer]));
        let shape = HeadShape { heads: c.n_head, head_dim: e / c.n_head, causal: true };
        arena.scoped(|scratch| ops::attention([q, kl, vl], &segments, &key_mask, shape, ctx, scratch))?;
        ops::linear(ctx, n, e, bw.proj_w.of(w), bw.proj_b.of(w), e, tmp);
        ops::add_in_place(x, tmp);
        normed.copy_from_slice(x);
        ops::layer_norm(normed, e, bw.ln2_w.of(w), bw.ln2_b.of(w), eps);
        ops::linear(normed, n, e, bw.fc_w.of(w), bw.fc_b.of(w), c.n_inner, inner);
        ops::activate(inner, c.activation_function);
        ops::linear(inner, n, c.n_inner, bw.fc_proj_w.of(w), bw.fc_proj_b.of(w), e, tmp);
        ops::add_in_place(x, tmp);
    }
    cache.len = kv_len;
    ops::layer_norm(x, e, wt.lnf_w.of(w), wt.lnf_b.of(w), eps);
    Ok(x.to_vec())
}

/// `logits[rows, vocab] = hidden[rows, n_embd] · wteᵀ` (the tied LM head).
pub fn logits<W: Weights + ?Sized>(c: &Gpt2Config, wt: &Gpt2Weights, w: &W, hidden: &[f32], rows: usize) -> Vec<f32> {
    let (e, v) = (c.n_embd, c.vocab_size);
    let mut out = vec![0f32; rows * v];
    matmul(
        MatMut::row_major(&mut out, rows, v),
        MatRef::row_major(&hidden[..rows * e], rows, e),
        MatRef::row_major(wt.wte.of(w), v, e).t(),
        false,
        1.0,
        Threads::Pool,
    );
    out
}
