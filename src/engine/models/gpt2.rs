//! The GPT-2 family (pre-LayerNorm causal decoder with a tied LM head): its config, its weights
//! in first-use order, and its forward pass as a device program with its KV cache in the
//! workspace. Inference answers every position's logits; a generation step only the last one.

use serde::Serialize;
use serde_json::{json, Value};

use crate::engine::arch::{Architecture, Decoder};
use crate::engine::config::{
    Activation, ConfigReader, MAX_HIDDEN, MAX_INTERMEDIATE, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB,
};
use crate::engine::error::Result;
use crate::engine::io::IoSpec;
use crate::engine::layout::Span;
use crate::engine::nn::attention::{attention, Heads};
use crate::engine::nn::decoder::{self, LogitRows, Pass};
use crate::engine::nn::embed::Embeddings;
use crate::engine::nn::kv::KvCache;
use crate::engine::nn::mlp::dense;
use crate::engine::nn::norm::LayerNorm;
use crate::engine::nn::{mask_words, Regions};
use crate::engine::plan::PlanBuilder;
use crate::engine::program::{Act, Gemm, Op, Program, Ptr};
use crate::engine::registry::{Family, Loaded};
use crate::engine::synth::Preset;

pub const FAMILY: Family = Family {
    model_type: "gpt2",
    architectures: &["GPT2LMHeadModel", "GPT2Model"],
    // `GPT2LMHeadModel` files prefix names with `transformer.`; bare `GPT2Model` files do not.
    prefixes: &["transformer.", ""],
    load,
    presets: PRESETS,
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_inner: usize,
    pub n_positions: usize,
    pub layer_norm_epsilon: f32,
    pub activation_function: Activation,
    pub eos_token_id: Option<u32>,
}

impl Gpt2Config {
    pub fn read(r: &ConfigReader<'_>) -> Result<Self> {
        let n_embd = r.size("n_embd", MAX_HIDDEN)?;
        let vocab_size = r.size("vocab_size", MAX_VOCAB)?;
        Ok(Self {
            vocab_size,
            n_embd,
            n_layer: r.size("n_layer", MAX_LAYERS)?,
            n_head: r.heads("n_head", n_embd)?,
            n_inner: r.opt_size("n_inner", MAX_INTERMEDIATE)?.unwrap_or(4 * n_embd),
            n_positions: r.size("n_positions", MAX_POSITIONS)?,
            layer_norm_epsilon: r.eps("layer_norm_epsilon", 1e-5)?,
            activation_function: r.activation("activation_function", "gelu_new")?,
            eos_token_id: r.opt_token_id("eos_token_id", vocab_size)?,
        })
    }
}

#[derive(Debug, Clone)]
struct Block {
    ln1: LayerNorm,
    attn_w: Span,
    attn_b: Span,
    proj_w: Span,
    proj_b: Span,
    ln2: LayerNorm,
    fc_w: Span,
    fc_b: Span,
    fc_proj_w: Span,
    fc_proj_b: Span,
}

#[derive(Debug)]
pub struct Gpt2 {
    c: Gpt2Config,
    embeddings: Embeddings,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    eos: Vec<u32>,
    io: IoSpec,
}

fn load(r: &ConfigReader<'_>) -> Result<Loaded> {
    let c = Gpt2Config::read(r)?;
    let (gpt2, plan, layout) = Gpt2::plan(c, r.storage);
    Ok(Loaded { arch: Box::new(gpt2), plan, layout })
}

impl Gpt2 {
    /// Plans the weights: layer 0 the embeddings, layer `i + 1` block `i`, the last layer the
    /// final LayerNorm. The LM head is tied to `wte`, which the embeddings already hold.
    fn plan(
        c: Gpt2Config,
        storage: crate::engine::Dtype,
    ) -> (Self, Vec<crate::engine::layout::PlannedTensor>, crate::engine::WeightLayout) {
        let (e, eps) = (c.n_embd, c.layer_norm_epsilon);
        let mut b = PlanBuilder::new(storage);
        b.layer("embeddings");
        let embeddings = Embeddings {
            word: b.tensor("wte.weight", &[c.vocab_size, e]),
            position: b.tensor("wpe.weight", &[c.n_positions, e]),
            token_type: None,
            width: e,
        };
        let ln = |b: &mut PlanBuilder, name: String| LayerNorm {
            gamma: b.gain(format!("{name}.weight"), e),
            beta: b.tensor(format!("{name}.bias"), &[e]),
            eps,
        };
        let blocks = (0..c.n_layer)
            .map(|i| {
                b.layer(format!("h.{i}"));
                let n = |s: &str| format!("h.{i}.{s}");
                Block {
                    ln1: ln(&mut b, n("ln_1")),
                    attn_w: b.tensor(n("attn.c_attn.weight"), &[e, 3 * e]),
                    attn_b: b.tensor(n("attn.c_attn.bias"), &[3 * e]),
                    proj_w: b.tensor(n("attn.c_proj.weight"), &[e, e]),
                    proj_b: b.tensor(n("attn.c_proj.bias"), &[e]),
                    ln2: ln(&mut b, n("ln_2")),
                    fc_w: b.tensor(n("mlp.c_fc.weight"), &[e, c.n_inner]),
                    fc_b: b.tensor(n("mlp.c_fc.bias"), &[c.n_inner]),
                    fc_proj_w: b.tensor(n("mlp.c_proj.weight"), &[c.n_inner, e]),
                    fc_proj_b: b.tensor(n("mlp.c_proj.bias"), &[e]),
                }
            })
            .collect();
        b.layer("ln_f");
        let ln_f = ln(&mut b, "ln_f".into());
        let (plan, layout) = b.finish();
        let eos = c.eos_token_id.into_iter().collect();
        let io = decoder::io(c.vocab_size);
        (Self { c, embeddings, blocks, ln_f, eos, io }, plan, layout)
    }

    fn pass(&self, pass: &Pass<'_>) -> Program {
        let c = &self.c;
        let e = c.n_embd;
        let b = pass.batch;
        let t = pass.ids.len() / b;
        let n = b * t;
        let heads = c.n_head;
        let d = e / heads;
        let cap = pass.capacity;
        let kv = pass.start + t;
        let v = c.vocab_size;
        assert!(kv <= cap, "KV cache overflow");

        let mut r = Regions::default();
        let cache = KvCache::take(&mut r, c.n_layer, b, heads, d, cap);
        let ids = r.take(n);
        let x = r.take(n * e);
        let normed = r.take(n * e);
        let qkv = r.take(n * 3 * e);
        let ctx = r.take(n * e);
        let tmp = r.take(n * e);
        let inner = r.take(n * c.n_inner);
        let scores = r.take(heads * t * kv);
        let logit_rows = pass.logits.rows(b, t);
        let logits = r.take(logit_rows * v);

        let mut ops = vec![Op::WaitLayer(0), self.embeddings.op(ids, None, n, t, pass.start, x)];
        for (l, bw) in self.blocks.iter().enumerate() {
            let (k_l, v_l) = cache.layer(l);
            ops.push(Op::WaitLayer(l + 1));
            ops.push(bw.ln1.op(x, None, None, n, e, normed));
            dense(&mut ops, (normed, n, e), (bw.attn_w, bw.attn_b), (qkv, 3 * e), Act::None, None, qkv);
            ops.push(cache.append(l, qkv, heads, t, pass.start));
            for bi in 0..b {
                let item = cache.item(bi);
                let shape = Heads::full(heads, d, t, kv);
                attention(
                    &mut ops,
                    (qkv + bi * t * 3 * e, 3 * e),
                    (k_l + item, v_l + item, d, cap * d),
                    shape,
                    scores,
                    Some(cache.key_mask + bi * cap),
                    true,
                    (ctx + bi * t * e, e),
                );
            }
            dense(&mut ops, (ctx, n, e), (bw.proj_w, bw.proj_b), (tmp, e), Act::None, Some(x), x);
            ops.push(bw.ln2.op(x, None, None, n, e, normed));
            let act = c.activation_function.into();
            dense(&mut ops, (normed, n, e), (bw.fc_w, bw.fc_b), (inner, c.n_inner), act, None, inner);
            dense(&mut ops, (inner, n, c.n_inner), (bw.fc_proj_w, bw.fc_proj_b), (tmp, e), Act::None, Some(x), x);
        }
        ops.push(Op::WaitLayer(c.n_layer + 1));
        ops.push(self.ln_f.op(x, None, None, n, e, x));
        // logitsᵀ[vocab, rows] = wte[vocab, e] · xᵀ[e, rows] (the tied LM head).
        let head = |first_row: usize, rows: usize, out_row: usize| {
            Op::Gemm(Gemm {
                trans_a: true,
                trans_b: false,
                m: v,
                n: rows,
                k: e,
                alpha: 1.0,
                a: Ptr::W(self.embeddings.word.offset),
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
                inputs: crate::engine::Dtype::F32,
            })
        };
        match pass.logits {
            LogitRows::All => ops.push(head(0, n, 0)),
            LogitRows::Last(at) => ops.extend(at.iter().enumerate().map(|(bi, &p)| head(bi * t + p, 1, bi))),
        }
        let inputs = vec![(ids, pass.ids.to_vec()), (cache.key_mask, mask_words(&pass.key_mask[..b * cap]))];
        Program { ops, work_elems: r.used(), inputs, output: (logits, logit_rows * v) }
    }
}

impl Architecture for Gpt2 {
    fn model_type(&self) -> &'static str {
        FAMILY.model_type
    }

    fn config(&self) -> Value {
        json!({"model_type": FAMILY.model_type, "gpt2": self.c})
    }

    fn vocab_size(&self) -> usize {
        self.c.vocab_size
    }

    fn max_positions(&self) -> usize {
        self.c.n_positions
    }

    fn hidden_size(&self) -> usize {
        self.c.n_embd
    }

    decoder::shared_architecture!();
}

impl Decoder for Gpt2 {
    fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    fn step(&self, ids: &[u32], start: usize, capacity: usize) -> Program {
        decoder::step(ids, start, capacity, |p| self.pass(p))
    }
}

fn config(layers: usize, hidden: usize, heads: usize) -> Value {
    json!({
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 50257,
        "n_embd": hidden, "n_layer": layers, "n_head": heads, "n_inner": null,
        "n_positions": 1024, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
        "bos_token_id": 50256, "eos_token_id": 50256, "tie_word_embeddings": true
    })
}

/// Small enough that hundreds fit a test: a 1,024-token vocabulary, 64 positions.
fn nano() -> Value {
    let mut c = config(2, 32, 2);
    c["vocab_size"] = json!(1024);
    c["n_positions"] = json!(64);
    c["bos_token_id"] = json!(1023);
    c["eos_token_id"] = json!(1023);
    c
}

const PRESETS: &[Preset] = &[
    Preset {
        name: "gpt2-nano",
        description: "GPT-2 2 layers, hidden 32, vocabulary 1024 (0.06M; for tests)",
        config: nano,
    },
    Preset { name: "gpt2-tiny", description: "GPT-2 2 layers, hidden 128 (7M)", config: || config(2, 128, 2) },
    Preset { name: "gpt2", description: "GPT-2 small, 12 layers, hidden 768 (124M)", config: || config(12, 768, 12) },
    Preset {
        name: "gpt2-medium",
        description: "GPT-2 medium, 24 layers, hidden 1024 (355M)",
        config: || config(24, 1024, 16),
    },
    Preset {
        name: "gpt2-large",
        description: "GPT-2 large, 36 layers, hidden 1280 (774M)",
        config: || config(36, 1280, 20),
    },
    Preset {
        name: "gpt2-xl",
        description: "GPT-2 XL, 48 layers, hidden 1600 (1.56B)",
        config: || config(48, 1600, 25),
    },
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn gpt2_inner_defaults_to_four_times_hidden() {
        let v = json!({"model_type":"gpt2","vocab_size":512,"n_embd":64,"n_layer":2,"n_head":4,
                       "n_positions":128,"n_inner":null,"eos_token_id":511});
        let c = Gpt2Config::read(&ConfigReader::new(Path::new("config.json"), &v).unwrap()).unwrap();
        assert_eq!(c.n_inner, 256);
        assert_eq!(c.eos_token_id, Some(511));
        assert_eq!(c.activation_function, Activation::GeluTanh);
    }
}
