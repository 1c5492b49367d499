//! The post-LayerNorm transformer encoder that BERT, RoBERTa, XLM-RoBERTa and DistilBERT share:
//! embeddings (word, learned positions, optionally token types) and LayerNorm, then blocks of
//! `x = LN(x + attn(x))`, `x = LN(x + FFN(x))`. The families differ only in tensor names, in
//! how positions are numbered and in whether token types exist; those come in as data.
//!
//! Padding is never computed: the program runs the batch's attended tokens only, packed one
//! sequence after another (each run of consecutive positions embedded at its own positions),
//! with attention per sequence. Its output is the packed `[tokens, hidden]`.

use serde::Serialize;

use super::attention::{attention, Heads};
use super::embed::Embeddings;
use super::mlp::dense;
use super::norm::LayerNorm;
use super::Regions;
use crate::engine::batch::TokenBatch;
use crate::engine::config::Activation;
use crate::engine::layout::Span;
use crate::engine::plan::PlanBuilder;
use crate::engine::program::{Act, Gemm, Op};

/// The sizes and settings of an encoder, as its family's config gives them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EncoderShape {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate_size: usize,
    /// Rows of the position table.
    pub position_rows: usize,
    /// Rows of the token-type table; `None` when the family has none (DistilBERT).
    pub type_vocab_size: Option<usize>,
    pub layer_norm_eps: f32,
    pub activation: Activation,
    pub positions: Positions,
}

/// How a token's position id is numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Positions {
    /// A token's index in its padded sequence, 0 first, as Hugging Face numbers `position_ids`
    /// by default (BERT, DistilBERT).
    FromZero,
    /// RoBERTa's: a token whose id is `padding_idx` sits at `padding_idx`; every other token at
    /// `padding_idx + 1 + (tokens before it whose id is not padding_idx)`.
    AfterPadding { padding_idx: u32 },
}

impl EncoderShape {
    /// The longest sequence the position table numbers.
    pub fn max_tokens(&self) -> usize {
        match self.positions {
            Positions::FromZero => self.position_rows,
            Positions::AfterPadding { padding_idx } => self.position_rows.saturating_sub(padding_idx as usize + 1),
        }
    }
}

/// Where a family keeps the encoder's tensors (below its file prefix).
#[derive(Debug, Clone, Copy)]
pub struct EncoderNames {
    pub word: &'static str,
    pub position: &'static str,
    pub token_type: &'static str,
    /// The embedding LayerNorm, without `.weight` / `.bias`.
    pub embedding_norm: &'static str,
    /// Block `i` is `{layers}.{i}.`.
    pub layers: &'static str,
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attention_out: &'static str,
    pub attention_norm: &'static str,
    pub ffn_in: &'static str,
    pub ffn_out: &'static str,
    pub ffn_norm: &'static str,
}

/// BERT's names (RoBERTa and XLM-RoBERTa use them too).
pub const BERT_NAMES: EncoderNames = EncoderNames {
    word: "embeddings.word_embeddings.weight",
    position: "embeddings.position_embeddings.weight",
    token_type: "embeddings.token_type_embeddings.weight",
    embedding_norm: "embeddings.LayerNorm",
    layers: "encoder.layer",
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attention_out: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    ffn_in: "intermediate.dense",
    ffn_out: "output.dense",
    ffn_norm: "output.LayerNorm",
};

#[derive(Debug, Clone)]
struct Block {
    /// Query, key and value projections as one `[H, 3H]` weight and `[3H]` bias.
    qkv_w: Span,
    qkv_b: Span,
    attn_out_w: Span,
    attn_out_b: Span,
    attn_ln: LayerNorm,
    inter_w: Span,
    inter_b: Span,
    out_w: Span,
    out_b: Span,
    out_ln: LayerNorm,
}

#[derive(Debug)]
pub struct Encoder {
    pub shape: EncoderShape,
    embeddings: Embeddings,
    emb_ln: LayerNorm,
    blocks: Vec<Block>,
}

/// An encoder's forward orders over a batch, and where its output is.
pub struct EncoderRun {
    pub ops: Vec<Op>,
    pub regions: Regions,
    pub inputs: Vec<(usize, Vec<u32>)>,
    /// The packed `[tokens, hidden]` output.
    pub x: usize,
    /// Attended tokens (rows of `x`).
    pub tokens: usize,
    /// Each sequence's first row in `x` and its length.
    pub sequences: Vec<(usize, usize)>,
}

impl Encoder {
    /// Plans the weights, in first-use order: layer 0 the embeddings, layer `i + 1` block `i`.
    /// Linear weights are `[out, in]` in the file and stored transposed; the query, key and
    /// value projections are stored as one `[H, 3H]` matrix (and one `[3H]` bias) so that they
    /// run as one product.
    pub fn plan(b: &mut PlanBuilder, shape: EncoderShape, names: &EncoderNames) -> Self {
        let (h, inter, eps) = (shape.hidden_size, shape.intermediate_size, shape.layer_norm_eps);
        let ln = |b: &mut PlanBuilder, prefix: &str| LayerNorm {
            gamma: b.gain(format!("{prefix}.weight"), h),
            beta: b.tensor(format!("{prefix}.bias"), &[h]),
            eps,
        };
        b.layer("embeddings");
        let embeddings = Embeddings {
            word: b.tensor(names.word, &[shape.vocab_size, h]),
            position: b.tensor(names.position, &[shape.position_rows, h]),
            token_type: shape.type_vocab_size.map(|types| b.tensor(names.token_type, &[types, h])),
            width: h,
        };
        let emb_ln = ln(b, names.embedding_norm);
        let blocks = (0..shape.layers)
            .map(|i| {
                let block = format!("{}.{i}", names.layers);
                b.layer(block.clone());
                let n = |s: &str| format!("{block}.{s}");
                let qkv =
                    |kind: &str| [names.query, names.key, names.value].map(|p| (n(&format!("{p}.{kind}")), h)).to_vec();
                Block {
                    qkv_w: b.linear_concat_in_out(n("attention.qkv.weight"), qkv("weight"), h),
                    qkv_b: b.concat(n("attention.qkv.bias"), qkv("bias")),
                    attn_out_w: b.linear_in_out(n(&format!("{}.weight", names.attention_out)), h, h),
                    attn_out_b: b.tensor(n(&format!("{}.bias", names.attention_out)), &[h]),
                    attn_ln: ln(b, &n(names.attention_norm)),
                    inter_w: b.linear_in_out(n(&format!("{}.weight", names.ffn_in)), inter, h),
                    inter_b: b.tensor(n(&format!("{}.bias", names.ffn_in)), &[inter]),
                    out_w: b.linear_in_out(n(&format!("{}.weight", names.ffn_out)), h, inter),
                    out_b: b.tensor(n(&format!("{}.bias", names.ffn_out)), &[h]),
                    out_ln: ln(b, &n(names.ffn_norm)),
                }
            })
            .collect();
        Self { shape, embeddings, emb_ln, blocks }
    }

    /// The encoder over a checked batch's attended tokens.
    pub fn forward(&self, batch: &TokenBatch) -> EncoderRun {
        let c = &self.shape;
        let h = c.hidden_size;
        let packed = Packed::of(batch, c.positions);
        let n = packed.ids.len();
        let longest = packed.sequences.iter().map(|s| s.1).max().unwrap_or(0);
        let heads = c.heads;
        let d = h / heads;
        let inter = c.intermediate_size;

        let mut r = Regions::default();
        let ids = r.take(n);
        let types = r.take(n);
        let x = r.take(n * h);
        let tmp = r.take(n * h);
        let qkv = r.take(n * 3 * h);
        let ctx = r.take(n * h);
        let inner = r.take(n * inter);
        let scores = r.take(heads * longest * longest);

        let mut ops = vec![Op::WaitLayer(0)];
        let type_rows = self.embeddings.token_type.map(|_| types);
        // Each run of consecutive positions in one order: row `row + i` at position `start + i`.
        for &(row, start, len) in &packed.runs {
            ops.push(self.embeddings.op(ids + row, type_rows.map(|t| t + row), len, len, start, x + row * h));
        }
        ops.push(self.emb_ln.op(x, None, None, n, h, x));
        // The post-norm residual step: x = LayerNorm(input · W + b + x), through `tmp`.
        let add_norm = |ops: &mut Vec<Op>, (input, in_dim): (usize, usize), w: Span, b: Span, ln: &LayerNorm| {
            ops.push(Op::Gemm(Gemm::linear_in_out(input, n, in_dim, w.offset, h, tmp)));
            ops.push(ln.op(tmp, Some(b), Some(x), n, h, x));
        };
        for (i, l) in self.blocks.iter().enumerate() {
            ops.push(Op::WaitLayer(i + 1));
            dense(&mut ops, (x, n, h), (l.qkv_w, l.qkv_b), (qkv, 3 * h), Act::None, None, qkv);
            for &(row, len) in &packed.sequences {
                let rows = qkv + row * 3 * h;
                let shape = Heads::full(heads, d, len, len);
                attention(
                    &mut ops,
                    (rows, 3 * h),
                    (rows + h, rows + 2 * h, 3 * h, d),
                    shape,
                    scores,
                    None,
                    false,
                    (ctx + row * h, h),
                );
            }
            add_norm(&mut ops, (ctx, h), l.attn_out_w, l.attn_out_b, &l.attn_ln);
            dense(&mut ops, (x, n, h), (l.inter_w, l.inter_b), (inner, inter), c.activation.into(), None, inner);
            add_norm(&mut ops, (inner, inter), l.out_w, l.out_b, &l.out_ln);
        }
        EncoderRun {
            ops,
            regions: r,
            inputs: vec![(ids, packed.ids), (types, packed.types)],
            x,
            tokens: n,
            sequences: packed.sequences,
        }
    }
}

/// Spreads packed rows (`width` values per attended token) over the padded batch, zeros at
/// padding.
pub fn unpack(batch: &TokenBatch, data: &[f32], width: usize) -> Vec<f32> {
    let mut padded = vec![0f32; batch.batch * batch.seq * width];
    let rows = batch.mask.iter().enumerate().filter(|(_, &m)| m).map(|(t, _)| t);
    for (row, t) in data.chunks_exact(width).zip(rows) {
        padded[t * width..(t + 1) * width].copy_from_slice(row);
    }
    padded
}

/// The batch's attended tokens, packed: their ids and types, each sequence's (first packed
/// row, length), and the runs of consecutive positions (first packed row, position, length).
struct Packed {
    ids: Vec<u32>,
    types: Vec<u32>,
    sequences: Vec<(usize, usize)>,
    runs: Vec<(usize, usize, usize)>,
}

impl Packed {
    fn of(batch: &TokenBatch, positions: Positions) -> Self {
        let (b, s) = (batch.batch, batch.seq);
        let mut p = Packed { ids: Vec::new(), types: Vec::new(), sequences: Vec::with_capacity(b), runs: Vec::new() };
        for bi in 0..b {
            let first = p.ids.len();
            let mut not_padding = 0;
            for t in bi * s..(bi + 1) * s {
                let id = batch.ids[t];
                let position = match positions {
                    Positions::FromZero => t - bi * s,
                    Positions::AfterPadding { padding_idx } if id == padding_idx => padding_idx as usize,
                    Positions::AfterPadding { padding_idx } => padding_idx as usize + 1 + not_padding,
                };
                if let Positions::AfterPadding { padding_idx } = positions {
                    not_padding += usize::from(id != padding_idx);
                }
                if !batch.mask[t] {
                    continue;
                }
                match p.runs.last_mut() {
                    Some((row, start, len)) if *row >= first && *start + *len == position => *len += 1,
                    _ => p.runs.push((p.ids.len(), position, 1)),
                }
                p.ids.push(id);
                p.types.push(batch.type_ids[t]);
            }
            p.sequences.push((first, p.ids.len() - first));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_attended_positions_are_packed_per_sequence() {
        let batch = TokenBatch::from_tensors(
            2,
            4,
            vec![1, 2, 3, 4, 5, 6, 7, 8],
            Some(vec![true, true, false, true, false, true, true, false]),
            None,
        )
        .unwrap();
        let p = Packed::of(&batch, Positions::FromZero);
        assert_eq!(p.ids, vec![1, 2, 4, 6, 7]);
        assert_eq!(p.sequences, vec![(0, 3), (3, 2)]);
        assert_eq!(p.runs, vec![(0, 0, 2), (2, 3, 1), (3, 1, 2)]);
    }

    #[test]
    fn roberta_positions_count_tokens_that_are_not_padding() {
        // Padding id 1: right padding (masked), and a padding id inside the attended tokens,
        // which RoBERTa places at padding_idx and does not count.
        let batch = TokenBatch::from_tensors(
            2,
            4,
            vec![0, 5, 2, 1, 0, 1, 7, 2],
            Some(vec![true, true, true, false, true, true, true, true]),
            None,
        )
        .unwrap();
        let p = Packed::of(&batch, Positions::AfterPadding { padding_idx: 1 });
        assert_eq!(p.ids, vec![0, 5, 2, 0, 1, 7, 2]);
        assert_eq!(p.runs, vec![(0, 2, 3), (3, 2, 1), (4, 1, 1), (5, 3, 2)]);
    }
}
