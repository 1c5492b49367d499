//! A loaded model package: its spec (config, layout, tokenizer, pooling) and its packed host
//! weights, with the entry points that run it.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

use super::batch::TokenBatch;
use super::bert::{self, BertWeights};
use super::config::ModelConfig;
use super::error::{EngineError, Result};
use super::gpt2::{self, Gpt2Weights, KvCache};
use super::layout::WeightLayout;
use super::output::{OutputKind, OutputTensor};
use super::pooling::Pooling;
use super::program::{self, Gpt2Pass, LogitRows, Program};
use super::sampling::{Sampler, SamplingParams};
use super::streamed::Weights;
use super::tokenize::TextEncoder;
use super::weights::WeightsFile;
use super::workspace::Workspace;

#[derive(Debug, Clone)]
enum Family {
    Bert(BertWeights),
    Gpt2(Gpt2Weights),
}

/// Everything about a model except its weights' values: enough to run it against any copy of
/// the packed buffer.
#[derive(Debug)]
pub struct ModelSpec {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub layout: WeightLayout,
    pub pooling: Option<Pooling>,
    pub tokenizer: Option<TextEncoder>,
    family: Family,
}

/// A spec with its packed host weights.
#[derive(Debug)]
pub struct Model {
    pub spec: ModelSpec,
    /// State a device back end ties to the host weights (the CUDA back end's page-locked
    /// registration). Declared before `weights` so that it is dropped first.
    host_pin: OnceLock<Box<dyn Any + Send + Sync>>,
    weights: Vec<f32>,
}

/// A short description of a package, for listings and `faaswap inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub model_type: &'static str,
    pub config: ModelConfig,
    pub weight_bytes: usize,
    pub tensors: usize,
    pub layers: Vec<(String, usize, usize)>,
    pub outputs: Vec<&'static str>,
    pub has_tokenizer: bool,
    pub max_input_tokens: usize,
}

#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop after emitting the config's `eos_token_id` (included in the output).
    pub stop_at_eos: bool,
}

impl Model {
    /// Loads and checks a package folder.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(EngineError::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a model package folder"),
            ));
        }
        let config = ModelConfig::load(&dir.join("config.json"))?;
        let (plan, layer_names, prefixes) = match &config {
            ModelConfig::Bert(c) => {
                let (p, n) = bert::plan(c);
                (p, n, bert::PREFIXES)
            }
            ModelConfig::Gpt2(c) => {
                let (p, n) = gpt2::plan(c);
                (p, n, gpt2::PREFIXES)
            }
        };
        let layout = WeightLayout::build(&plan, &layer_names);
        let weights = WeightsFile::open(&dir.join("model.safetensors"))?.load_packed(&plan, &layout, prefixes)?;
        let family = match &config {
            ModelConfig::Bert(c) => Family::Bert(BertWeights::resolve(c, &layout)),
            ModelConfig::Gpt2(c) => Family::Gpt2(Gpt2Weights::resolve(c, &layout)),
        };
        let pooling = match config {
            ModelConfig::Bert(_) => Pooling::load(dir)?,
            ModelConfig::Gpt2(_) => None,
        };
        let tokenizer = TextEncoder::load(dir, config.max_positions())?;
        Ok(Self {
            spec: ModelSpec { dir: dir.to_path_buf(), config, layout, pooling, tokenizer, family },
            host_pin: OnceLock::new(),
            weights,
        })
    }

    /// The packed buffer: the unit the runtime copies to devices.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// The device back end's state for these weights, created by `init` on first use (once,
    /// even when several threads ask at the same time).
    pub fn host_pin(&self, init: impl FnOnce(&[f32]) -> Box<dyn Any + Send + Sync>) -> &(dyn Any + Send + Sync) {
        self.host_pin.get_or_init(|| init(&self.weights)).as_ref()
    }

    /// One batch with a workspace sized for it (for one-off use; servers reuse a workspace).
    pub fn infer(&self, batch: &TokenBatch, outputs: &[OutputKind]) -> Result<Vec<OutputTensor>> {
        let mut ws = Workspace::new(self.spec.workspace_elems(batch.batch, batch.seq, batch.seq));
        self.spec.infer(self.weights.as_slice(), batch, outputs, &mut ws)
    }

    pub fn generate(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Vec<u32>> {
        let total = prompt.len() + opts.max_new_tokens;
        let mut ws = Workspace::new(self.spec.workspace_elems(1, prompt.len(), total));
        self.spec.generate(self.weights.as_slice(), prompt, opts, &mut ws, on_token)
    }
}

impl ModelSpec {
    pub fn summary(&self) -> ModelSummary {
        ModelSummary {
            model_type: self.config.model_type(),
            config: self.config.clone(),
            weight_bytes: self.layout.total_bytes(),
            tensors: self.layout.tensors.len(),
            layers: self
                .layout
                .layers
                .iter()
                .map(|l| (l.name.clone(), l.byte_range().start, l.byte_range().end))
                .collect(),
            outputs: self.outputs().iter().map(|o| o.name()).collect(),
            has_tokenizer: self.tokenizer.is_some(),
            max_input_tokens: self.tokenizer.as_ref().map_or(self.config.max_positions(), |t| t.max_len()),
        }
    }

    /// Outputs this model produces, the default first.
    pub fn outputs(&self) -> Vec<OutputKind> {
        match (&self.family, &self.pooling) {
            (Family::Bert(_), Some(_)) => {
                vec![OutputKind::SentenceEmbedding, OutputKind::LastHiddenState]
            }
            (Family::Bert(_), None) => vec![OutputKind::LastHiddenState],
            (Family::Gpt2(_), _) => vec![OutputKind::Logits],
        }
    }

    pub fn default_output(&self) -> OutputKind {
        self.outputs()[0]
    }

    pub fn output_by_name(&self, name: &str) -> Result<OutputKind> {
        let outputs = self.outputs();
        OutputKind::from_name(name).filter(|k| outputs.contains(k)).ok_or_else(|| EngineError::UnknownOutput {
            name: name.to_string(),
            available: outputs.iter().map(|o| o.name()).collect::<Vec<_>>().join(", "),
        })
    }

    /// Tokenizes texts with the package's tokenizer.
    pub fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        let t = self.tokenizer.as_ref().ok_or(EngineError::NoTokenizer)?;
        t.encode(texts)
    }

    fn check_weights<W: Weights + ?Sized>(&self, weights: &W) -> Result<()> {
        if weights.len() != self.layout.total_elems {
            return Err(EngineError::WeightsSizeMismatch { expected: self.layout.total_elems, found: weights.len() });
        }
        Ok(())
    }

    fn validate_batch(&self, batch: &TokenBatch) -> Result<()> {
        let type_vocab = match &self.config {
            ModelConfig::Bert(c) => c.type_vocab_size,
            ModelConfig::Gpt2(_) => 1,
        };
        batch.validate(self.config.vocab_size(), type_vocab, self.config.max_positions())
    }

    /// Workspace floats that always suffice for `batch` sequences of up to `seq` new tokens
    /// attending to up to `kv` positions (`kv` = `seq` outside generation).
    pub fn workspace_elems(&self, batch: usize, seq: usize, kv: usize) -> usize {
        let n = batch * seq;
        let (h, heads) = match &self.config {
            ModelConfig::Bert(c) => (c.hidden_size, c.num_attention_heads),
            ModelConfig::Gpt2(c) => (c.n_embd, c.n_head),
        };
        let attention = batch * heads * (seq * kv + seq * (h / heads));
        match &self.config {
            ModelConfig::Bert(c) => n * (6 * h + c.intermediate_size) + attention,
            ModelConfig::Gpt2(c) => 2 * c.n_layer * batch * kv * h + n * (7 * h + c.n_inner) + attention,
        }
    }

    /// Values the request's outputs hold (and, for BERT, the padded hidden states it always
    /// builds): what answering it costs in host memory outside the workspace.
    pub fn output_elems(&self, batch: &TokenBatch, outputs: &[OutputKind]) -> usize {
        let (b, s, h) = (batch.batch, batch.seq, self.config.hidden_size());
        let hidden = match self.family {
            Family::Bert(_) => b * s * h,
            Family::Gpt2(_) => 0,
        };
        hidden
            + outputs
                .iter()
                .map(|o| match o {
                    OutputKind::SentenceEmbedding => b * self.pooling.as_ref().map_or(h, |p| p.output_dim(h)),
                    OutputKind::LastHiddenState => b * s * h,
                    OutputKind::Logits => b * s * self.config.vocab_size(),
                })
                .sum::<usize>()
    }

    /// Checks a request before it is queued: the outputs exist and the batch fits the model.
    pub fn check_request(&self, batch: &TokenBatch, outputs: &[OutputKind]) -> Result<()> {
        let available = self.outputs();
        if let Some(k) = outputs.iter().find(|k| !available.contains(k)) {
            self.output_by_name(k.name())?;
        }
        self.validate_batch(batch)
    }

    /// Checks a generation request before it is queued: a decoder, valid prompt ids, room for
    /// the new tokens, valid sampling settings. Returns the prompt as a batch of one.
    pub fn check_generation(&self, prompt: &[u32], opts: &GenerateOptions) -> Result<TokenBatch> {
        let ModelConfig::Gpt2(c) = &self.config else {
            return Err(EngineError::BadInput(format!(
                "generation needs a decoder model; this package is {}",
                self.config.model_type()
            )));
        };
        let batch = TokenBatch::from_sequences(&[prompt.to_vec()])?;
        self.validate_batch(&batch)?;
        let total = prompt.len() + opts.max_new_tokens;
        if total > c.n_positions {
            return Err(EngineError::BadInput(format!(
                "prompt of {} tokens plus {} new tokens exceeds the model's {} positions",
                prompt.len(),
                opts.max_new_tokens,
                c.n_positions
            )));
        }
        opts.sampling.validate()?;
        Ok(batch)
    }

    /// Runs one batch against `weights` (any copy of the packed buffer) and returns the asked
    /// outputs in order.
    pub fn infer<W: Weights + ?Sized>(
        &self,
        weights: &W,
        batch: &TokenBatch,
        outputs: &[OutputKind],
        ws: &mut Workspace,
    ) -> Result<Vec<OutputTensor>> {
        self.check_weights(weights)?;
        self.check_request(batch, outputs)?;
        let (b, s) = (batch.batch, batch.seq);
        match (&self.config, &self.family) {
            (ModelConfig::Bert(c), Family::Bert(wt)) => {
                let hidden = bert::forward(c, wt, weights, batch, &mut ws.arena())?;
                Ok(self.outputs_of(batch, outputs, hidden))
            }
            (ModelConfig::Gpt2(c), Family::Gpt2(wt)) => {
                let mut arena = ws.arena();
                let mut cache = KvCache::new(c, b, s, &mut arena)?;
                let hidden = gpt2::forward(c, wt, weights, &mut cache, &batch.ids, &batch.mask, &mut arena)?;
                Ok(self.outputs_of(batch, outputs, gpt2::logits(c, wt, weights, &hidden, b * s)))
            }
            _ => unreachable!("family is derived from the config"),
        }
    }

    /// The asked outputs from what a forward pass produced: BERT's padded hidden states
    /// `[batch·seq, hidden]` (pooled here when asked) or GPT-2's logits `[batch·seq, vocab]`.
    pub fn outputs_of(&self, batch: &TokenBatch, outputs: &[OutputKind], data: Vec<f32>) -> Vec<OutputTensor> {
        let (b, s) = (batch.batch, batch.seq);
        let h = self.config.hidden_size();
        match &self.family {
            Family::Bert(_) => outputs
                .iter()
                .map(|&kind| match kind {
                    OutputKind::SentenceEmbedding => {
                        let pooling = self.pooling.as_ref().expect("listed only with pooling");
                        let pooled = pooling.apply(&data, &batch.mask, b, s, h);
                        OutputTensor::fp32(kind, vec![b, pooling.output_dim(h)], pooled)
                    }
                    _ => OutputTensor::fp32(kind, vec![b, s, h], data.clone()),
                })
                .collect(),
            Family::Gpt2(_) => {
                vec![OutputTensor::fp32(OutputKind::Logits, vec![b, s, self.config.vocab_size()], data)]
            }
        }
    }

    /// The forward pass of a checked batch as a device program whose output feeds
    /// [`Self::outputs_of`].
    pub fn forward_program(&self, batch: &TokenBatch) -> Program {
        match (&self.config, &self.family) {
            (ModelConfig::Bert(c), Family::Bert(wt)) => program::bert_forward(c, wt, batch),
            (ModelConfig::Gpt2(c), Family::Gpt2(wt)) => program::gpt2_forward(
                c,
                wt,
                &Gpt2Pass {
                    batch: batch.batch,
                    ids: &batch.ids,
                    start: 0,
                    capacity: batch.seq,
                    key_mask: &batch.mask,
                    logits: LogitRows::All,
                },
            ),
            _ => unreachable!("family is derived from the config"),
        }
    }

    /// [`Self::generate`] on a device that runs programs: `run` executes one program and
    /// returns its output (the last position's logits). The KV cache stays in the device's
    /// workspace between calls, where every program of this generation places it.
    pub fn generate_with(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
        run: &mut dyn FnMut(&Program) -> Result<Vec<f32>>,
    ) -> Result<Vec<u32>> {
        self.check_generation(prompt, opts)?;
        let (ModelConfig::Gpt2(c), Family::Gpt2(wt)) = (&self.config, &self.family) else {
            unreachable!("check_generation accepts decoders only")
        };
        if opts.max_new_tokens == 0 {
            return Ok(Vec::new());
        }
        let cap = prompt.len() + opts.max_new_tokens;
        let mask = vec![true; cap];
        let mut start = 0;
        decode(c, opts, on_token, &mut |token| {
            let step = token.map(|t| [t]);
            let ids: &[u32] = step.as_ref().map_or(prompt, |s| s.as_slice());
            let pass = Gpt2Pass { batch: 1, ids, start, capacity: cap, key_mask: &mask, logits: LogitRows::Last };
            start += ids.len();
            run(&program::gpt2_forward(c, wt, &pass))
        })
    }

    /// Generates up to `max_new_tokens` after `prompt` with a KV cache. `on_token` sees each
    /// new token as soon as it exists and returns false to stop early (a client that left).
    /// Returns the new tokens only.
    pub fn generate<W: Weights + ?Sized>(
        &self,
        weights: &W,
        prompt: &[u32],
        opts: &GenerateOptions,
        ws: &mut Workspace,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Vec<u32>> {
        self.check_weights(weights)?;
        let batch = self.check_generation(prompt, opts)?;
        let (ModelConfig::Gpt2(c), Family::Gpt2(wt)) = (&self.config, &self.family) else {
            unreachable!("check_generation accepts decoders only")
        };
        if opts.max_new_tokens == 0 {
            return Ok(Vec::new());
        }
        let total = prompt.len() + opts.max_new_tokens;
        let mut arena = ws.arena();
        let mut cache = KvCache::new(c, 1, total, &mut arena)?;
        let e = c.n_embd;
        decode(c, opts, on_token, &mut |token| {
            let hidden = match token {
                None => arena.scoped(|step| gpt2::forward(c, wt, weights, &mut cache, prompt, &batch.mask, step))?,
                Some(t) => arena.scoped(|step| gpt2::forward(c, wt, weights, &mut cache, &[t], &[true], step))?,
            };
            Ok(gpt2::logits(c, wt, weights, &hidden[hidden.len() - e..], 1))
        })
    }
}

/// The sampling loop of both generation paths: `logits(None)` runs the prompt and returns the
/// last position's logits, `logits(Some(t))` feeds token `t` and returns the next position's.
fn decode(
    c: &crate::engine::Gpt2Config,
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> bool,
    logits: &mut dyn FnMut(Option<u32>) -> Result<Vec<f32>>,
) -> Result<Vec<u32>> {
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    let mut out = Vec::with_capacity(opts.max_new_tokens);
    let mut fed = None;
    loop {
        let token = sampler.next(&logits(fed)?);
        out.push(token);
        let keep_going = on_token(token);
        let eos = opts.stop_at_eos && Some(token) == c.eos_token_id;
        if !keep_going || eos || out.len() == opts.max_new_tokens {
            return Ok(out);
        }
        fed = Some(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_that_hide_keys_give_finite_outputs() {
        let gpt2 = Model::load(&crate::engine::fixture("tiny_gpt2")).unwrap();
        // Left padding, the usual way to batch prompts of different lengths.
        let batch = TokenBatch::from_tensors(
            2,
            3,
            vec![0, 5, 6, 7, 8, 9],
            Some(vec![false, true, true, true, true, true]),
            None,
        )
        .unwrap();
        let out = gpt2.infer(&batch, &[OutputKind::Logits]).unwrap();
        let bad = out[0].data.iter().filter(|x| !x.is_finite()).count();
        assert_eq!(bad, 0, "{bad} of {} logits are not finite", out[0].data.len());
    }
}
