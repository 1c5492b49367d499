//! The BERT family (BERT, MiniLM and other post-LayerNorm encoders): its config, its weights in
//! first-use order, and its forward pass as a device program. Padding is never computed: the
//! program runs the batch's attended tokens only, packed one sequence after another (each run
//! of attended positions embedded at its own positions), with attention per sequence; its
//! output, the packed `[tokens, hidden]`, is spread back over the padded batch (zeros at
//! padding) by `assemble`.

use serde::Serialize;
use serde_json::{json, Value};

use crate::engine::arch::Architecture;
use crate::engine::batch::TokenBatch;
use crate::engine::config::{
    Activation, ConfigReader, MAX_HIDDEN, MAX_INTERMEDIATE, MAX_LAYERS, MAX_POSITIONS, MAX_TYPE_VOCAB, MAX_VOCAB,
};
use crate::engine::error::Result;
use crate::engine::io::{IoSpec, OutputKind};
use crate::engine::layout::Span;
use crate::engine::nn::attention::{attention, Heads};
use crate::engine::nn::embed::Embeddings;
use crate::engine::nn::mlp::dense;
use crate::engine::nn::norm::LayerNorm;
use crate::engine::nn::Regions;
use crate::engine::plan::PlanBuilder;
use crate::engine::program::{Act, Gemm, Op, Program};
use crate::engine::registry::{Family, Loaded};
use crate::engine::synth::Preset;

pub const FAMILY: Family = Family {
    model_type: "bert",
    architectures: &["BertModel", "BertForMaskedLM", "BertForPreTraining"],
    // A task model's file holds the encoder under `bert.`.
    prefixes: &["", "bert."],
    load,
    presets: PRESETS,
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub hidden_act: Activation,
}

impl BertConfig {
    pub fn read(r: &ConfigReader<'_>) -> Result<Self> {
        let hidden_size = r.size("hidden_size", MAX_HIDDEN)?;
        if let Some(kind) = r.opt_string("position_embedding_type")? {
            if kind != "absolute" {
                return Err(r.err(format!("position_embedding_type {kind:?} is not supported (only \"absolute\")")));
            }
        }
        Ok(Self {
            vocab_size: r.size("vocab_size", MAX_VOCAB)?,
            hidden_size,
            num_hidden_layers: r.size("num_hidden_layers", MAX_LAYERS)?,
            num_attention_heads: r.heads("num_attention_heads", hidden_size)?,
            intermediate_size: r.size("intermediate_size", MAX_INTERMEDIATE)?,
            max_position_embeddings: r.size("max_position_embeddings", MAX_POSITIONS)?,
            type_vocab_size: r.opt_size("type_vocab_size", MAX_TYPE_VOCAB)?.unwrap_or(2),
            layer_norm_eps: r.eps("layer_norm_eps", 1e-12)?,
            hidden_act: r.activation("hidden_act", "gelu")?,
        })
    }
}

#[derive(Debug, Clone)]
struct Layer {
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
pub struct Bert {
    c: BertConfig,
    embeddings: Embeddings,
    emb_ln: LayerNorm,
    layers: Vec<Layer>,
    io: IoSpec,
}

fn load(r: &ConfigReader<'_>) -> Result<Loaded> {
    let c = BertConfig::read(r)?;
    let (bert, plan, layout) = Bert::plan(c);
    Ok(Loaded { arch: Box::new(bert), plan, layout })
}

impl Bert {
    /// Plans the weights, in first-use order: layer 0 the embeddings, layer `i + 1` encoder
    /// layer `i`. Linear weights are `[out, in]` in the file and stored transposed; the query,
    /// key and value projections are stored as one `[H, 3H]` matrix (and one `[3H]` bias) so
    /// that they run as one product.
    fn plan(c: BertConfig) -> (Self, Vec<crate::engine::layout::PlannedTensor>, crate::engine::WeightLayout) {
        let (h, inter, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let mut b = PlanBuilder::new();
        b.layer("embeddings");
        let embeddings = Embeddings {
            word: b.tensor("embeddings.word_embeddings.weight", &[c.vocab_size, h]),
            position: b.tensor("embeddings.position_embeddings.weight", &[c.max_position_embeddings, h]),
            token_type: Some(b.tensor("embeddings.token_type_embeddings.weight", &[c.type_vocab_size, h])),
            width: h,
        };
        let emb_ln = LayerNorm {
            gamma: b.gain("embeddings.LayerNorm.weight", h),
            beta: b.tensor("embeddings.LayerNorm.bias", &[h]),
            eps,
        };
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                b.layer(format!("encoder.layer.{i}"));
                let n = |s: &str| format!("encoder.layer.{i}.{s}");
                let qkv =
                    |kind: &str| ["query", "key", "value"].map(|p| n(&format!("attention.self.{p}.{kind}"))).to_vec();
                let ln = |b: &mut PlanBuilder, prefix: &str| LayerNorm {
                    gamma: b.gain(n(&format!("{prefix}.LayerNorm.weight")), h),
                    beta: b.tensor(n(&format!("{prefix}.LayerNorm.bias")), &[h]),
                    eps,
                };
                Layer {
                    qkv_w: b.transposed_concat(n("attention.self.qkv.weight"), qkv("weight"), h, h),
                    qkv_b: b.concat(n("attention.self.qkv.bias"), qkv("bias"), h),
                    attn_out_w: b.transposed(n("attention.output.dense.weight"), h, h),
                    attn_out_b: b.tensor(n("attention.output.dense.bias"), &[h]),
                    attn_ln: ln(&mut b, "attention.output"),
                    inter_w: b.transposed(n("intermediate.dense.weight"), inter, h),
                    inter_b: b.tensor(n("intermediate.dense.bias"), &[inter]),
                    out_w: b.transposed(n("output.dense.weight"), h, inter),
                    out_b: b.tensor(n("output.dense.bias"), &[h]),
                    out_ln: ln(&mut b, "output"),
                }
            })
            .collect();
        let (plan, layout) = b.finish();
        let io = IoSpec::tokens(true, vec![OutputKind::LastHiddenState]);
        (Self { c, embeddings, emb_ln, layers, io }, plan, layout)
    }
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
    fn of(batch: &TokenBatch) -> Self {
        let (b, s) = (batch.batch, batch.seq);
        let mut p = Packed { ids: Vec::new(), types: Vec::new(), sequences: Vec::with_capacity(b), runs: Vec::new() };
        for bi in 0..b {
            let first = p.ids.len();
            for pos in 0..s {
                let t = bi * s + pos;
                if !batch.mask[t] {
                    continue;
                }
                match p.runs.last_mut() {
                    Some((row, start, len)) if *row >= first && *start + *len == pos => *len += 1,
                    _ => p.runs.push((p.ids.len(), pos, 1)),
                }
                p.ids.push(batch.ids[t]);
                p.types.push(batch.type_ids[t]);
            }
            p.sequences.push((first, p.ids.len() - first));
        }
        p
    }
}

impl Architecture for Bert {
    fn model_type(&self) -> &'static str {
        FAMILY.model_type
    }

    fn config(&self) -> Value {
        json!({"model_type": FAMILY.model_type, "bert": self.c})
    }

    fn io(&self) -> &IoSpec {
        &self.io
    }

    fn vocab_size(&self) -> usize {
        self.c.vocab_size
    }

    fn max_positions(&self) -> usize {
        self.c.max_position_embeddings
    }

    fn type_vocab_size(&self) -> usize {
        self.c.type_vocab_size
    }

    fn hidden_size(&self) -> usize {
        self.c.hidden_size
    }

    /// `last_hidden_state` of the batch's attended tokens, packed `[tokens, hidden]`.
    fn forward(&self, batch: &TokenBatch) -> Program {
        let c = &self.c;
        let h = c.hidden_size;
        let packed = Packed::of(batch);
        let n = packed.ids.len();
        let longest = packed.sequences.iter().map(|s| s.1).max().unwrap_or(0);
        let heads = c.num_attention_heads;
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
        // Each run of consecutive positions in one order: row `row + i` at position `start + i`.
        for &(row, start, len) in &packed.runs {
            ops.push(self.embeddings.op(ids + row, Some(types + row), len, len, start, x + row * h));
        }
        ops.push(self.emb_ln.op(x, None, None, n, h, x));
        // BERT's post-norm residual step: x = LayerNorm(input · W + b + x), through `tmp`.
        let add_norm = |ops: &mut Vec<Op>, (input, in_dim): (usize, usize), w: Span, b: Span, ln: &LayerNorm| {
            ops.push(Op::Gemm(Gemm::linear(input, n, in_dim, w.offset, h, tmp)));
            ops.push(ln.op(tmp, Some(b), Some(x), n, h, x));
        };
        for (i, l) in self.layers.iter().enumerate() {
            ops.push(Op::WaitLayer(i + 1));
            dense(&mut ops, (x, n, h), (l.qkv_w, l.qkv_b), (qkv, 3 * h), Act::None, None, qkv);
            for &(row, len) in &packed.sequences {
                let rows = qkv + row * 3 * h;
                let shape = Heads { heads, head_dim: d, q_len: len, kv_len: len };
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
            dense(&mut ops, (x, n, h), (l.inter_w, l.inter_b), (inner, inter), c.hidden_act.into(), None, inner);
            add_norm(&mut ops, (inner, inter), l.out_w, l.out_b, &l.out_ln);
        }
        Program {
            ops,
            work_elems: r.used(),
            inputs: vec![(ids, packed.ids), (types, packed.types)],
            output: (x, n * h),
        }
    }

    fn assemble(&self, batch: &TokenBatch, data: Vec<f32>) -> (OutputKind, Vec<usize>, Vec<f32>) {
        let (b, s, h) = (batch.batch, batch.seq, self.c.hidden_size);
        let mut padded = vec![0f32; b * s * h];
        let rows = batch.mask.iter().enumerate().filter(|(_, &m)| m).map(|(t, _)| t);
        for (row, t) in data.chunks_exact(h).zip(rows) {
            padded[t * h..(t + 1) * h].copy_from_slice(row);
        }
        (OutputKind::LastHiddenState, vec![b, s, h], padded)
    }

    fn output_elems(&self, batch: &TokenBatch) -> usize {
        batch.batch * batch.seq * self.c.hidden_size
    }
}

fn config(layers: usize, hidden: usize, heads: usize, inter: usize) -> Value {
    json!({
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": 30522,
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": inter, "max_position_embeddings": 512, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0
    })
}

/// Small enough that hundreds fit a test: a 1,024-token vocabulary, 64 positions.
fn nano() -> Value {
    let mut c = config(2, 32, 2, 64);
    c["vocab_size"] = json!(1024);
    c["max_position_embeddings"] = json!(64);
    c
}

const PRESETS: &[Preset] = &[
    Preset {
        name: "bert-nano",
        description: "BERT 2 layers, hidden 32, vocabulary 1024 (0.06M; for tests)",
        config: nano,
    },
    Preset {
        name: "bert-tiny",
        description: "BERT 2 layers, hidden 128 (4.4M parameters)",
        config: || config(2, 128, 2, 512),
    },
    Preset { name: "bert-mini", description: "BERT 4 layers, hidden 256 (11M)", config: || config(4, 256, 4, 1024) },
    Preset {
        name: "minilm-l6",
        description: "MiniLM-L6 shape, 6 layers, hidden 384 (22M)",
        config: || config(6, 384, 12, 1536),
    },
    Preset {
        name: "bert-base",
        description: "BERT-base, 12 layers, hidden 768 (109M)",
        config: || config(12, 768, 12, 3072),
    },
    Preset {
        name: "bert-large",
        description: "BERT-large, 24 layers, hidden 1024 (335M)",
        config: || config(24, 1024, 16, 4096),
    },
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::engine::EngineError;

    fn parse(v: Value) -> Result<BertConfig> {
        BertConfig::read(&ConfigReader::new(Path::new("config.json"), &v)?)
    }

    fn bert() -> Value {
        json!({"model_type":"bert","vocab_size":512,"hidden_size":64,"num_hidden_layers":2,
               "num_attention_heads":4,"intermediate_size":256,"max_position_embeddings":128,
               "layer_norm_eps":1e-12,"hidden_act":"gelu"})
    }

    #[test]
    fn parses_bert_defaults() {
        let c = parse(bert()).unwrap();
        assert_eq!(c.type_vocab_size, 2);
        assert_eq!(c.hidden_act, Activation::GeluErf);
        assert_eq!(c.layer_norm_eps, 1e-12);
    }

    #[test]
    fn rejects_absurd_values() {
        for (key, value) in [
            ("hidden_size", json!(1_000_000_000u64)),
            ("hidden_size", json!(0)),
            ("num_attention_heads", json!(3)),
            ("vocab_size", json!(-5)),
            ("layer_norm_eps", json!(2.0)),
            ("hidden_act", json!("swish")),
            ("max_position_embeddings", json!("many")),
        ] {
            let mut v = bert();
            v[key] = value.clone();
            let err = parse(v).unwrap_err();
            assert!(matches!(err, EngineError::BadConfig { .. }), "{key}={value}: {err}");
            assert!(err.to_string().contains(key), "{err}");
        }
    }

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
        let p = Packed::of(&batch);
        assert_eq!(p.ids, vec![1, 2, 4, 6, 7]);
        assert_eq!(p.sequences, vec![(0, 3), (3, 2)]);
        assert_eq!(p.runs, vec![(0, 0, 2), (2, 3, 1), (3, 1, 2)]);
    }
}
