//! The Llama family of decoders — `llama` (Llama 2/3.x, SmolLM, TinyLlama), `mistral`, `qwen2`
//! (Qwen2, Qwen2.5) and `qwen3`: pre-RMSNorm blocks, rotary positions, grouped-query attention
//! and a SwiGLU MLP, with the few ways they differ read from the config (Q/K/V biases, per-head
//! Q/K norms, a sliding window, a tied head). Its config, its weights in first-use order, and its
//! forward pass as a device program with its KV cache in the workspace.

use std::path::Path;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::engine::arch::{Architecture, Decoder};
use crate::engine::config::{ConfigReader, MAX_HIDDEN, MAX_INTERMEDIATE, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB};
use crate::engine::error::Result;
use crate::engine::files::read_optional_json;
use crate::engine::io::IoSpec;
use crate::engine::layout::Span;
use crate::engine::nn::attention::{attention, Heads};
use crate::engine::nn::decoder::{self, LogitRows, Pass};
use crate::engine::nn::kv::KvCache;
use crate::engine::nn::{mask_words, Regions};
use crate::engine::plan::PlanBuilder;
use crate::engine::program::{Act, Gemm, Op, Program};
use crate::engine::registry::{Family, Loaded};
use crate::engine::synth::Preset;

/// Which member of the family a config is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Variant {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

macro_rules! family {
    ($name:ident, $model_type:literal, $class:literal, $load:ident, $variant:expr, $presets:expr) => {
        pub const $name: Family = Family {
            model_type: $model_type,
            architectures: &[$class],
            prefixes: &["model."],
            load: $load,
            presets: $presets,
        };
        fn $load(r: &ConfigReader<'_>) -> Result<Loaded> {
            load(r, $variant, &$name)
        }
    };
}

family!(LLAMA, "llama", "LlamaForCausalLM", load_llama, Variant::Llama, LLAMA_PRESETS);
family!(MISTRAL, "mistral", "MistralForCausalLM", load_mistral, Variant::Mistral, &[]);
family!(QWEN2, "qwen2", "Qwen2ForCausalLM", load_qwen2, Variant::Qwen2, QWEN2_PRESETS);
family!(QWEN3, "qwen3", "Qwen3ForCausalLM", load_qwen3, Variant::Qwen3, QWEN3_PRESETS);

/// How rotary positions are spaced (`rope_scaling` / `rope_parameters`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "rope_type", rename_all = "snake_case")]
pub enum RopeScaling {
    Default,
    Linear { factor: f32 },
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_max_position_embeddings: usize },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    /// Q/K/V projections with biases (Qwen2).
    pub qkv_bias: bool,
    /// RMSNorm of each query and key head before the rotation (Qwen3).
    pub qk_norm: bool,
    /// Per layer: the keys each position sees at most (`None`: all before it).
    pub sliding_window: Vec<Option<usize>>,
    pub eos_token_ids: Vec<u32>,
}

impl LlamaConfig {
    fn read(r: &ConfigReader<'_>, variant: Variant) -> Result<Self> {
        let hidden = r.size("hidden_size", MAX_HIDDEN)?;
        let vocab_size = r.size("vocab_size", MAX_VOCAB)?;
        let heads = r.size("num_attention_heads", MAX_HIDDEN)?;
        let kv_heads = r.opt_size("num_key_value_heads", heads)?.unwrap_or(heads);
        if !heads.is_multiple_of(kv_heads) {
            return Err(
                r.err(format!("num_key_value_heads = {kv_heads} does not divide num_attention_heads = {heads}"))
            );
        }
        let head_dim = match r.opt_size("head_dim", MAX_HIDDEN)? {
            Some(d) => d,
            None if hidden.is_multiple_of(heads) => hidden / heads,
            None => return Err(r.err(format!("num_attention_heads = {heads} does not divide hidden_size {hidden}"))),
        };
        if !head_dim.is_multiple_of(2) || heads * head_dim > MAX_HIDDEN {
            return Err(r.err(format!("head_dim = {head_dim} must be even and heads·head_dim at most {MAX_HIDDEN}")));
        }
        let act = r.opt_string("hidden_act")?.unwrap_or_else(|| "silu".into());
        if act != "silu" {
            return Err(r.err(format!("hidden_act = {act:?}: this family runs SwiGLU with silu only")));
        }
        // Keys that would change the arithmetic: refused rather than ignored.
        for key in ["attention_bias", "mlp_bias"] {
            if r.get(key).and_then(Value::as_bool) == Some(true)
                && !(key == "attention_bias" && variant == Variant::Qwen2)
            {
                return Err(r.err(format!("{key} = true is not supported for {variant:?} models")));
            }
        }
        let layers = r.size("num_hidden_layers", MAX_LAYERS)?;
        let max_position_embeddings = r.size("max_position_embeddings", MAX_POSITIONS)?;
        let (rope_theta, rope_scaling) = rope(r, head_dim, max_position_embeddings)?;
        let tie = match r.get("tie_word_embeddings") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(r.err(format!("tie_word_embeddings must be a boolean, found {v}"))),
        };
        Ok(Self {
            vocab_size,
            hidden_size: hidden,
            intermediate_size: r.size("intermediate_size", MAX_INTERMEDIATE)?,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            max_position_embeddings,
            rms_norm_eps: r.eps("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: tie,
            qkv_bias: variant == Variant::Qwen2,
            qk_norm: variant == Variant::Qwen3,
            sliding_window: windows(r, variant, layers)?,
            eos_token_ids: eos_ids(r, vocab_size)?,
        })
    }

    /// The rotation speed of each pair of a head's dimensions, in F32 as transformers computes
    /// them (`_compute_default_rope_parameters` and the scalings after it).
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base = (0..d / 2).map(|i| 1.0 / self.rope_theta.powf((2 * i) as f32 / d as f32));
        match self.rope_scaling {
            RopeScaling::Default => base.collect(),
            RopeScaling::Linear { factor } => base.map(|f| f / factor).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                let old = original_max_position_embeddings as f32;
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                base.map(|f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    let scaled = if wavelen > low_wavelen { f / factor } else { f };
                    if wavelen < high_wavelen || wavelen > low_wavelen {
                        scaled
                    } else {
                        let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    }
                })
                .collect()
            }
        }
    }
}

/// `rope_theta` and the scaling, from `rope_parameters` (transformers 5) or the top-level
/// `rope_theta` and `rope_scaling` (transformers 4; `type` in older files, `rope_type` after).
fn rope(r: &ConfigReader<'_>, head_dim: usize, max_positions: usize) -> Result<(f32, RopeScaling)> {
    if let Some(f) = r.get("partial_rotary_factor").and_then(Value::as_f64) {
        if f != 1.0 {
            return Err(r.err(format!("partial_rotary_factor = {f} is not supported (only 1)")));
        }
    }
    let (params_key, params): (&str, Map<String, Value>) = match (r.get("rope_parameters"), r.get("rope_scaling")) {
        (Some(Value::Object(p)), _) => ("rope_parameters", p.clone()),
        (Some(Value::Null) | None, Some(Value::Object(s))) => ("rope_scaling", s.clone()),
        (Some(Value::Null) | None, Some(Value::Null) | None) => ("rope_scaling", Map::new()),
        (Some(v), _) => return Err(r.err(format!("rope_parameters must be an object, found {v}"))),
        (_, Some(v)) => return Err(r.err(format!("rope_scaling must be an object or null, found {v}"))),
    };
    let number = |key: &str, value: Option<&Value>| -> Result<Option<f32>> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 && x < 1e12 => Ok(Some(x as f32)),
                _ => Err(r.err(format!("{key} must be a positive number, found {v}"))),
            },
        }
    };
    let theta = match number("rope_theta", params.get("rope_theta"))? {
        Some(t) => t,
        None => number("rope_theta", r.get("rope_theta"))?.unwrap_or(10_000.0),
    };
    let kind = params.get("rope_type").or_else(|| params.get("type"));
    let kind = match kind {
        None | Some(Value::Null) => "default".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => return Err(r.err(format!("{params_key}.rope_type must be a string, found {v}"))),
    };
    let need = |key: &str| -> Result<f32> {
        number(&format!("{params_key}.{key}"), params.get(key))?
            .ok_or_else(|| r.err(format!("{params_key}.{key} is missing for rope_type {kind:?}")))
    };
    let scaling = match kind.as_str() {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear { factor: need("factor")? },
        "llama3" => {
            let (low, high) = (need("low_freq_factor")?, need("high_freq_factor")?);
            if high <= low {
                return Err(r.err(format!("{params_key}: high_freq_factor must exceed low_freq_factor")));
            }
            let original = need("original_max_position_embeddings")? as usize;
            if original == 0 || original > max_positions.max(MAX_POSITIONS) {
                return Err(
                    r.err(format!("{params_key}.original_max_position_embeddings = {original} is out of range"))
                );
            }
            RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: original,
            }
        }
        other => {
            return Err(r.err(format!(
                "{params_key}.rope_type = {other:?} is not supported (supported: default, linear, llama3)"
            )))
        }
    };
    debug_assert!(head_dim > 0);
    Ok((theta, scaling))
}

/// Each layer's sliding window: Mistral's `sliding_window` applies to every layer; Qwen's only
/// with `use_sliding_window`, to the layers `layer_types` marks (else those from
/// `max_window_layers` on).
fn windows(r: &ConfigReader<'_>, variant: Variant, layers: usize) -> Result<Vec<Option<usize>>> {
    let window = r.opt_size("sliding_window", MAX_POSITIONS)?;
    let sliding = match variant {
        Variant::Llama => {
            if window.is_some() {
                return Err(r.err("sliding_window is not a Llama setting; is this a Mistral config?".into()));
            }
            return Ok(vec![None; layers]);
        }
        Variant::Mistral => return Ok(vec![window; layers]),
        Variant::Qwen2 | Variant::Qwen3 => r.get("use_sliding_window").and_then(Value::as_bool).unwrap_or(false),
    };
    if !sliding {
        return Ok(vec![None; layers]);
    }
    let window = window.ok_or_else(|| r.err("use_sliding_window is true but sliding_window is not set".into()))?;
    if let Some(Value::Array(types)) = r.get("layer_types") {
        if types.len() != layers {
            return Err(r.err(format!("layer_types lists {} layers, the model has {layers}", types.len())));
        }
        return types
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(None),
                Some("sliding_attention") => Ok(Some(window)),
                _ => Err(r.err(format!("layer_types holds {t}, not full_attention or sliding_attention"))),
            })
            .collect();
    }
    let from = r.opt_size("max_window_layers", MAX_LAYERS)?.unwrap_or(0);
    Ok((0..layers).map(|i| (i >= from).then_some(window)).collect())
}

/// The ids that end a generation: `generation_config.json`'s `eos_token_id` (one or a list),
/// else the config's.
fn eos_ids(r: &ConfigReader<'_>, vocab: usize) -> Result<Vec<u32>> {
    let gen_path = r.path.parent().unwrap_or(Path::new(".")).join("generation_config.json");
    let generation = read_optional_json(&gen_path, 1 << 20)?;
    let (path, value) = match generation.as_ref().and_then(|g| g.get("eos_token_id")) {
        Some(v) => (gen_path.as_path(), Some(v)),
        None => (r.path, r.get("eos_token_id")),
    };
    let bad = |v: &Value| {
        crate::engine::EngineError::config(path, format!("eos_token_id {v} is not a token id below vocab_size"))
    };
    let id = |v: &Value| v.as_u64().filter(|&id| (id as usize) < vocab).map(|id| id as u32).ok_or_else(|| bad(v));
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= 64 => items.iter().map(id).collect(),
        Some(v) => Ok(vec![id(v)?]),
    }
}

#[derive(Debug, Clone)]
struct Block {
    attn_norm: Span,
    qkv_w: Span,
    qkv_b: Option<Span>,
    q_norm: Option<Span>,
    k_norm: Option<Span>,
    o_w: Span,
    mlp_norm: Span,
    gate_up_w: Span,
    down_w: Span,
}

#[derive(Debug)]
pub struct Llama {
    model_type: &'static str,
    variant: Variant,
    c: LlamaConfig,
    inv_freq: Vec<f32>,
    embed: Span,
    blocks: Vec<Block>,
    norm: Span,
    head: Span,
    io: IoSpec,
}

fn load(r: &ConfigReader<'_>, variant: Variant, family: &'static Family) -> Result<Loaded> {
    let c = LlamaConfig::read(r, variant)?;
    let (llama, plan, layout) = Llama::plan(family.model_type, variant, c, r.storage);
    Ok(Loaded { arch: Box::new(llama), plan, layout })
}

impl Llama {
    /// Plans the weights: layer 0 the token embeddings, layer `i + 1` block `i`, the last layer
    /// the final norm and (when not tied) the LM head.
    fn plan(
        model_type: &'static str,
        variant: Variant,
        c: LlamaConfig,
        storage: crate::engine::Dtype,
    ) -> (Self, Vec<crate::engine::layout::PlannedTensor>, crate::engine::WeightLayout) {
        let (e, d, hq, hkv) = (c.hidden_size, c.head_dim, c.num_attention_heads, c.num_key_value_heads);
        let mut b = PlanBuilder::new(storage);
        b.layer("embeddings");
        let embed = b.tensor("embed_tokens.weight", &[c.vocab_size, e]);
        let blocks = (0..c.num_hidden_layers)
            .map(|i| {
                b.layer(format!("layers.{i}"));
                let n = |s: &str| format!("layers.{i}.{s}");
                let proj = |p: &str, kind: &str, out: usize| (n(&format!("self_attn.{p}_proj.{kind}")), out);
                let qkv =
                    |kind: &str| vec![proj("q", kind, hq * d), proj("k", kind, hkv * d), proj("v", kind, hkv * d)];
                let attn_norm = b.gain(n("input_layernorm.weight"), e);
                let qkv_w = b.linear_concat(n("self_attn.qkv.weight"), qkv("weight"), e);
                let qkv_b = c.qkv_bias.then(|| b.concat(n("self_attn.qkv.bias"), qkv("bias")));
                let q_norm = c.qk_norm.then(|| b.gain(n("self_attn.q_norm.weight"), d));
                let k_norm = c.qk_norm.then(|| b.gain(n("self_attn.k_norm.weight"), d));
                let o_w = b.linear(n("self_attn.o_proj.weight"), e, hq * d);
                let mlp_norm = b.gain(n("post_attention_layernorm.weight"), e);
                let inter = c.intermediate_size;
                let gate_up = vec![(n("mlp.gate_proj.weight"), inter), (n("mlp.up_proj.weight"), inter)];
                let gate_up_w = b.linear_concat(n("mlp.gate_up.weight"), gate_up, e);
                let down_w = b.linear(n("mlp.down_proj.weight"), e, inter);
                Block { attn_norm, qkv_w, qkv_b, q_norm, k_norm, o_w, mlp_norm, gate_up_w, down_w }
            })
            .collect();
        b.layer("norm");
        let norm = b.gain("norm.weight", e);
        let head = if c.tie_word_embeddings {
            embed
        } else {
            b.unprefixed(true);
            let head = b.linear("lm_head.weight", c.vocab_size, e);
            b.unprefixed(false);
            head
        };
        let (plan, layout) = b.finish();
        let io = decoder::io(c.vocab_size);
        let inv_freq = c.inv_freq();
        (Self { model_type, variant, c, inv_freq, embed, blocks, norm, head, io }, plan, layout)
    }

    fn pass(&self, pass: &Pass<'_>) -> Program {
        let c = &self.c;
        let (e, d, hq, hkv) = (c.hidden_size, c.head_dim, c.num_attention_heads, c.num_key_value_heads);
        let inter = c.intermediate_size;
        let b = pass.batch;
        let t = pass.ids.len() / b;
        let n = b * t;
        let cap = pass.capacity;
        let kv = pass.start + t;
        let v = c.vocab_size;
        let qkv_w = (hq + 2 * hkv) * d;
        assert!(kv <= cap, "KV cache overflow");

        let mut r = Regions::default();
        let cache = KvCache::take(&mut r, c.num_hidden_layers, b, hkv, d, cap);
        let ids = r.take(n);
        let inv_freq = r.take(d / 2);
        let x = r.take(n * e);
        let normed = r.take(n * e);
        let qkv = r.take(n * qkv_w);
        let ctx = r.take(n * hq * d);
        let gate_up = r.take(n * 2 * inter);
        let inner = r.take(n * inter);
        let scores = r.take(hq * t * kv);
        let logit_rows = pass.logits.rows(b, t);
        let logits = r.take(logit_rows * v);

        let rms = |x: usize, gamma: Span, rows: usize, ld: usize, vectors: usize, width: usize, out: usize| {
            Op::RmsNorm { x, rows, ld, vectors, width, gamma: gamma.offset, eps: c.rms_norm_eps, out }
        };
        let mut ops = vec![
            Op::WaitLayer(0),
            Op::Embed {
                ids,
                types: None,
                word: self.embed.offset,
                pos: None,
                token_type: None,
                tables: crate::engine::Dtype::F32,
                rows: n,
                t,
                start: pass.start,
                width: e,
                out: x,
            },
        ];
        for (l, bw) in self.blocks.iter().enumerate() {
            let (k_l, v_l) = cache.layer(l);
            ops.push(Op::WaitLayer(l + 1));
            ops.push(rms(x, bw.attn_norm, n, e, 1, e, normed));
            ops.push(Op::Gemm(Gemm::linear(normed, n, e, bw.qkv_w.offset, qkv_w, qkv)));
            if let Some(bias) = bw.qkv_b {
                let act = Act::None;
                ops.push(Op::BiasAct {
                    x: qkv,
                    bias: bias.offset,
                    rows: n,
                    width: qkv_w,
                    act,
                    residual: None,
                    out: qkv,
                });
            }
            if let (Some(qn), Some(kn)) = (bw.q_norm, bw.k_norm) {
                ops.push(rms(qkv, qn, n, qkv_w, hq, d, qkv));
                ops.push(rms(qkv + hq * d, kn, n, qkv_w, hkv, d, qkv + hq * d));
            }
            ops.push(Op::Rope {
                x: qkv,
                rows: n,
                ld: qkv_w,
                vectors: hq + hkv,
                head_dim: d,
                t,
                start: pass.start,
                inv_freq,
            });
            ops.push(cache.append(l, qkv, hq, t, pass.start));
            for bi in 0..b {
                let item = cache.item(bi);
                let shape = Heads {
                    heads: hq,
                    group: hq / hkv,
                    head_dim: d,
                    q_len: t,
                    kv_len: kv,
                    window: c.sliding_window[l],
                };
                attention(
                    &mut ops,
                    (qkv + bi * t * qkv_w, qkv_w),
                    (k_l + item, v_l + item, d, cap * d),
                    shape,
                    scores,
                    Some(cache.key_mask + bi * cap),
                    true,
                    (ctx + bi * t * hq * d, hq * d),
                );
            }
            // The residual stream takes each block's output in place (β = 1).
            ops.push(Op::Gemm(Gemm { beta: 1.0, ..Gemm::linear(ctx, n, hq * d, bw.o_w.offset, e, x) }));
            ops.push(rms(x, bw.mlp_norm, n, e, 1, e, normed));
            ops.push(Op::Gemm(Gemm::linear(normed, n, e, bw.gate_up_w.offset, 2 * inter, gate_up)));
            ops.push(Op::SiluMul { x: gate_up, rows: n, width: inter, out: inner });
            ops.push(Op::Gemm(Gemm { beta: 1.0, ..Gemm::linear(inner, n, inter, bw.down_w.offset, e, x) }));
        }
        ops.push(Op::WaitLayer(c.num_hidden_layers + 1));
        ops.push(rms(x, self.norm, n, e, 1, e, x));
        match pass.logits {
            LogitRows::All => ops.push(Op::Gemm(Gemm::linear(x, n, e, self.head.offset, v, logits))),
            LogitRows::Last(at) => ops.extend(at.iter().enumerate().map(|(bi, &p)| {
                Op::Gemm(Gemm::linear(x + (bi * t + p) * e, 1, e, self.head.offset, v, logits + bi * v))
            })),
        }
        let inputs = vec![
            (ids, pass.ids.to_vec()),
            (inv_freq, self.inv_freq.iter().map(|f| f.to_bits()).collect()),
            (cache.key_mask, mask_words(&pass.key_mask[..b * cap])),
        ];
        Program { ops, work_elems: r.used(), inputs, output: (logits, logit_rows * v) }
    }
}

impl Architecture for Llama {
    fn model_type(&self) -> &'static str {
        self.model_type
    }

    fn config(&self) -> Value {
        json!({"model_type": self.model_type, "variant": self.variant, "llama": self.c})
    }

    fn vocab_size(&self) -> usize {
        self.c.vocab_size
    }

    fn max_positions(&self) -> usize {
        self.c.max_position_embeddings
    }

    fn hidden_size(&self) -> usize {
        self.c.hidden_size
    }

    decoder::shared_architecture!();
}

impl Decoder for Llama {
    fn eos_ids(&self) -> &[u32] {
        &self.c.eos_token_ids
    }

    fn step(&self, ids: &[u32], start: usize, capacity: usize) -> Program {
        decoder::step(ids, start, capacity, |p| self.pass(p))
    }
}

/// A Llama-family config with the given shapes (`rope` the `rope_parameters`).
#[allow(clippy::too_many_arguments)]
fn config(
    model_type: &str,
    class: &str,
    layers: usize,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    inter: usize,
    vocab: usize,
    tied: bool,
    rope: Value,
) -> Value {
    json!({
        "architectures": [class], "model_type": model_type, "vocab_size": vocab,
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "hidden_act": "silu",
        "rope_parameters": rope, "tie_word_embeddings": tied, "bos_token_id": 1, "eos_token_id": 2,
        "dtype": "bfloat16"
    })
}

fn llama3_rope() -> Value {
    json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
           "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
}

const LLAMA_PRESETS: &[Preset] = &[
    Preset {
        name: "llama-nano",
        description: "Llama 2 layers, hidden 64, 4 heads over 2 KV heads, vocabulary 1024 (0.2M; for tests)",
        config: || {
            let mut c = config("llama", "LlamaForCausalLM", 2, 64, 4, 2, 176, 1024, false, llama3_rope());
            c["max_position_embeddings"] = json!(128);
            c["dtype"] = json!("float32");
            c
        },
    },
    Preset {
        name: "smollm2-135m",
        description: "SmolLM2-135M: 30 layers, hidden 576, 9 heads over 3 KV heads, tied (135M)",
        config: || {
            let rope = json!({"rope_type": "default", "rope_theta": 100000.0});
            config("llama", "LlamaForCausalLM", 30, 576, 9, 3, 1536, 49152, true, rope)
        },
    },
    Preset {
        name: "llama-1b",
        description: "Llama 3.2 1B: 16 layers, hidden 2048, 32 heads over 8 KV heads, tied (1.24B)",
        config: || config("llama", "LlamaForCausalLM", 16, 2048, 32, 8, 8192, 128256, true, llama3_rope()),
    },
    Preset {
        name: "llama-3b",
        description: "Llama 3.2 3B: 28 layers, hidden 3072, 24 heads over 8 KV heads, tied (3.2B)",
        config: || config("llama", "LlamaForCausalLM", 28, 3072, 24, 8, 8192, 128256, true, llama3_rope()),
    },
];

const QWEN2_PRESETS: &[Preset] = &[Preset {
    name: "qwen2.5-0.5b",
    description: "Qwen2.5-0.5B: 24 layers, hidden 896, 14 heads over 2 KV heads, Q/K/V biases, tied (0.49B)",
    config: || {
        let rope = json!({"rope_type": "default", "rope_theta": 1000000.0});
        config("qwen2", "Qwen2ForCausalLM", 24, 896, 14, 2, 4864, 151936, true, rope)
    },
}];

const QWEN3_PRESETS: &[Preset] = &[Preset {
    name: "qwen3-0.6b",
    description: "Qwen3-0.6B: 28 layers, hidden 1024, 16 heads of 128 over 8 KV heads, Q/K norms, tied (0.6B)",
    config: || {
        let rope = json!({"rope_type": "default", "rope_theta": 1000000.0});
        let mut c = config("qwen3", "Qwen3ForCausalLM", 28, 1024, 16, 8, 3072, 151936, true, rope);
        c["head_dim"] = json!(128);
        c
    },
}];

#[cfg(test)]
mod tests {
    use super::*;

    fn read(v: Value, variant: Variant) -> Result<LlamaConfig> {
        LlamaConfig::read(&ConfigReader::new(Path::new("config.json"), &v).unwrap(), variant)
    }

    fn base() -> Value {
        json!({"model_type": "llama", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 176,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "max_position_embeddings": 128, "eos_token_id": 2})
    }

    /// transformers 4 files put `rope_theta` and `rope_scaling` (with `type` in older ones) at
    /// the top level; transformers 5 files nest both in `rope_parameters`. Both read the same.
    #[test]
    fn both_rope_config_forms_read_the_same() {
        let mut v4 = base();
        v4["rope_theta"] = json!(500000.0);
        v4["rope_scaling"] = json!({"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32});
        let mut v5 = base();
        v5["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32});
        let (c4, c5) = (read(v4, Variant::Llama).unwrap(), read(v5, Variant::Llama).unwrap());
        assert_eq!(c4, c5);
        assert_eq!(c4.inv_freq().len(), 8);
        assert!(c4.inv_freq()[7] < read(base(), Variant::Llama).unwrap().inv_freq()[7], "low frequencies slowed");
    }

    #[test]
    fn settings_that_change_the_math_are_refused_naming_their_key() {
        for (key, value, variant) in [
            ("attention_bias", json!(true), Variant::Llama),
            ("mlp_bias", json!(true), Variant::Llama),
            ("partial_rotary_factor", json!(0.5), Variant::Llama),
            ("rope_scaling", json!({"rope_type": "yarn", "factor": 4.0}), Variant::Llama),
            ("hidden_act", json!("gelu"), Variant::Mistral),
            ("num_key_value_heads", json!(3), Variant::Qwen2),
            ("sliding_window", json!(16), Variant::Llama),
        ] {
            let mut v = base();
            v[key] = value;
            let e = read(v, variant).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn sliding_windows_per_layer() {
        let mut v = base();
        v["sliding_window"] = json!(16);
        assert_eq!(read(v.clone(), Variant::Mistral).unwrap().sliding_window, vec![Some(16), Some(16)]);
        assert_eq!(read(v.clone(), Variant::Qwen2).unwrap().sliding_window, vec![None, None], "off by default");
        v["use_sliding_window"] = json!(true);
        v["max_window_layers"] = json!(1);
        assert_eq!(read(v.clone(), Variant::Qwen2).unwrap().sliding_window, vec![None, Some(16)]);
        v["layer_types"] = json!(["sliding_attention", "full_attention"]);
        assert_eq!(read(v, Variant::Qwen3).unwrap().sliding_window, vec![Some(16), None]);
    }
}
