//! A loaded model package: its spec (the family's architecture, the packed layout, tokenizer,
//! pooling) and its packed host weights, with the entry points that run it. Every device runs
//! a model the same way: the architecture writes the forward pass as a program, the device runs
//! it (the CPU through `program::exec`), and the spec assembles the response's tensors.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

use super::arch::Architecture;
use super::batch::TokenBatch;
use super::chat::ChatTemplate;
use super::error::{EngineError, Result};
use super::generate::{self, Decoded, GenerateOptions};
use super::io::{IoSpec, OutputKind, OutputTensor, Produced};
use super::layout::{Dtype, WeightLayout};
use super::pooling::Pooling;
use super::program::exec::{self, Resident, WeightSource};
use super::program::storage::{self, Compute};
use super::program::Program;
use super::tokenize::TextEncoder;
use super::weights::WeightsFile;
use super::workspace::Workspace;

/// Everything about a model except its weights' values: enough to run it against any copy of
/// the packed buffer.
#[derive(Debug)]
pub struct ModelSpec {
    pub dir: PathBuf,
    pub arch: Box<dyn Architecture>,
    pub layout: WeightLayout,
    pub pooling: Option<Pooling>,
    pub tokenizer: Option<TextEncoder>,
    /// A decoder's chat template (with its tokenizer), compiled at load: a template that does not
    /// compile makes the package a bad one, named at deploy rather than at its first chat.
    pub chat_template: Option<ChatTemplate>,
    /// How products over half weights are computed (`settings.compute`).
    pub compute: Compute,
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
    pub config: serde_json::Value,
    /// How its matrices are stored (vectors are F32).
    pub dtype: Dtype,
    pub weight_bytes: usize,
    pub tensors: usize,
    pub layers: Vec<(String, usize, usize)>,
    pub outputs: Vec<&'static str>,
    pub has_tokenizer: bool,
    pub max_input_tokens: usize,
}

impl Model {
    /// Loads and checks a package folder, its matrices stored as the file stores them.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_as(dir, None)
    }

    /// Loads and checks a package folder with its matrices stored in `dtype` (`None`: as the
    /// file stores them). Vectors are F32 whatever the dtype.
    pub fn load_as(dir: &Path, dtype: Option<Dtype>) -> Result<Self> {
        if !dir.is_dir() {
            return Err(EngineError::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a model package folder"),
            ));
        }
        let config_path = dir.join("config.json");
        let config = super::config::read(&config_path)?;
        let file = WeightsFile::open_package(dir)?;
        let storage = match dtype {
            Some(d) => d,
            None => file.matrix_dtype()?,
        };
        let (family, loaded) = super::registry::load_as(&config_path, &config, storage)?;
        let weights = file.load_packed(&loaded.plan, &loaded.layout, family.prefixes)?;
        let arch = loaded.arch;
        // Sentence-transformers pooling applies to encoders' hidden states.
        let pooling = if arch.io().produces(OutputKind::LastHiddenState) { Pooling::load(dir)? } else { None };
        let tokenizer = TextEncoder::load(dir, arch.max_positions())?;
        let chat_template =
            if arch.as_decoder().is_some() && tokenizer.is_some() { ChatTemplate::load(dir)? } else { None };
        Ok(Self {
            spec: ModelSpec {
                dir: dir.to_path_buf(),
                arch,
                layout: loaded.layout,
                pooling,
                tokenizer,
                chat_template,
                compute: Compute::F32,
            },
            host_pin: OnceLock::new(),
            weights,
        })
    }

    /// The model computing half-weight products as `compute` says.
    pub fn with_compute(mut self, compute: Compute) -> Self {
        self.spec.compute = compute;
        self
    }

    /// The packed buffer: the unit the runtime copies to devices.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// The resident weights as programs read them.
    pub fn resident(&self) -> Resident<'_> {
        Resident::new(&self.weights, &self.spec.layout)
    }

    /// The device back end's state for these weights, created by `init` on first use (once,
    /// even when several threads ask at the same time).
    pub fn host_pin(&self, init: impl FnOnce(&[f32]) -> Box<dyn Any + Send + Sync>) -> &(dyn Any + Send + Sync) {
        self.host_pin.get_or_init(|| init(&self.weights)).as_ref()
    }

    /// One batch with a workspace sized for it (for one-off use; servers reuse a workspace).
    pub fn infer(&self, batch: &TokenBatch, outputs: &[OutputKind]) -> Result<Vec<OutputTensor>> {
        let mut ws = Workspace::new(self.spec.workspace_elems(batch.batch, batch.seq, batch.seq));
        self.spec.infer(&self.resident(), batch, outputs, &mut ws)
    }

    /// Generates after `prompt` with a workspace sized for it; returns the new tokens.
    pub fn generate(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Vec<u32>> {
        let total = prompt.len() + opts.max_new_tokens;
        let mut ws = Workspace::new(self.spec.workspace_elems(1, prompt.len(), total));
        Ok(self.spec.generate(&self.resident(), prompt, opts, &mut ws, on_token)?.tokens)
    }
}

impl ModelSpec {
    pub fn summary(&self) -> ModelSummary {
        ModelSummary {
            model_type: self.arch.model_type(),
            config: self.arch.config(),
            dtype: self.layout.matrix_dtype(),
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
            max_input_tokens: self.tokenizer.as_ref().map_or(self.arch.max_positions(), |t| t.max_len()),
        }
    }

    /// The tensors it takes and produces, as the architecture has them.
    pub fn io(&self) -> &IoSpec {
        self.arch.io()
    }

    /// Outputs this model produces: the pooled sentence embedding first when the package has
    /// pooling settings, then the architecture's.
    pub fn outputs(&self) -> Vec<OutputKind> {
        let mut out = Vec::with_capacity(3);
        if self.pooling.is_some() {
            out.push(OutputKind::SentenceEmbedding);
        }
        out.extend(self.arch.io().outputs.iter().map(|o| o.kind));
        out
    }

    /// What a request that names no output gets: the sentence embedding with pooling settings,
    /// else the architecture's defaults (both logits of a question-answering head).
    pub fn default_outputs(&self) -> Vec<OutputKind> {
        if self.pooling.is_some() {
            vec![OutputKind::SentenceEmbedding]
        } else {
            self.arch.io().defaults.clone()
        }
    }

    pub fn output_by_name(&self, name: &str) -> Result<OutputKind> {
        let outputs = self.outputs();
        OutputKind::from_name(name).filter(|k| outputs.contains(k)).ok_or_else(|| EngineError::UnknownOutput {
            name: name.to_string(),
            available: outputs.iter().map(|o| o.name()).collect::<Vec<_>>().join(", "),
        })
    }

    /// The outputs a request asked for by name, or the defaults when it named none.
    pub fn requested_outputs(&self, names: &[String]) -> Result<Vec<OutputKind>> {
        if names.is_empty() {
            return Ok(self.default_outputs());
        }
        names.iter().map(|n| self.output_by_name(n)).collect()
    }

    /// The shape of `kind` as the KServe metadata lists it (`-1` for the batch's sizes).
    pub fn output_shape(&self, kind: OutputKind) -> Vec<i64> {
        if kind == OutputKind::SentenceEmbedding {
            let h = self.arch.hidden_size();
            return vec![-1, self.pooling.as_ref().map_or(h, |p| p.output_dim(h)) as i64];
        }
        self.arch.io().output(kind).map_or_else(Vec::new, |o| o.shape.clone())
    }

    /// Tokenizes texts with the package's tokenizer.
    pub fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        let t = self.tokenizer.as_ref().ok_or(EngineError::NoTokenizer)?;
        t.encode(texts)
    }

    /// A batch of texts, or of text pairs through the tokenizer's pair template (with the
    /// token types it gives the second text), as the model takes them.
    pub fn tokenize_batch(&self, texts: &[String], pairs: Option<&[String]>) -> Result<TokenBatch> {
        let t = self.tokenizer.as_ref().ok_or(EngineError::NoTokenizer)?;
        match pairs {
            None => TokenBatch::from_sequences(&t.encode(texts)?),
            Some(pairs) => {
                let encoded = t.encode_pairs(texts, pairs)?;
                let (ids, types): (Vec<_>, Vec<_>) = encoded.into_iter().unzip();
                let mut batch = TokenBatch::from_sequences(&ids)?;
                // Token types of the second text only where the model has a table for them
                // (a RoBERTa tokenizer gives none; DistilBERT takes none).
                if self.arch.type_vocab_size() > 1 {
                    for (b, seq_types) in types.iter().enumerate() {
                        batch.type_ids[b * batch.seq..][..seq_types.len()].copy_from_slice(seq_types);
                    }
                }
                Ok(batch)
            }
        }
    }

    fn check_weights(&self, weights: &dyn WeightSource) -> Result<()> {
        if weights.len() != self.layout.total_elems {
            return Err(EngineError::WeightsSizeMismatch { expected: self.layout.total_elems, found: weights.len() });
        }
        Ok(())
    }

    fn validate_batch(&self, batch: &TokenBatch) -> Result<()> {
        batch.validate(self.arch.vocab_size(), self.arch.type_vocab_size(), self.arch.max_positions())
    }

    /// Workspace floats that always suffice for `batch` sequences of up to `seq` new tokens
    /// attending to up to `kv` positions (`kv` = `seq` outside generation): what the programs
    /// for a full batch of that shape use.
    pub fn workspace_elems(&self, batch: usize, seq: usize, kv: usize) -> usize {
        self.largest_program(batch, seq, kv, |p| self.lowered(p, true).work_elems)
    }

    /// Checks, before any work, that every program of a request of this shape (a generation's
    /// prefill and decode steps over `kv` positions) fits a device workspace of `available`
    /// bytes on every kind of device — the CUDA back end's widened programs included.
    pub fn check_workspace(&self, batch: usize, seq: usize, kv: usize, available: u64) -> Result<()> {
        let elems = |p: &Program| self.lowered(p, true).work_elems.max(self.lowered(p, false).work_elems);
        let needed = self.largest_program(batch, seq, kv, elems) as u64 * 4;
        if needed > available {
            return Err(EngineError::WorkspaceTooSmall { needed, available });
        }
        Ok(())
    }

    /// [`Self::workspace_elems`] for a device whose GEMMs read F32 weights only (the CUDA back
    /// end checks each program against the workspace it reserved; tests size theirs with this).
    #[cfg(test)]
    pub(crate) fn widened_workspace_elems(&self, batch: usize, seq: usize, kv: usize) -> usize {
        self.largest_program(batch, seq, kv, |p| self.lowered(p, false).work_elems)
    }

    /// The most `size` gives over the programs of a full batch of that shape (the forward pass,
    /// and a decode step over `kv` positions for a decoder).
    fn largest_program(&self, batch: usize, seq: usize, kv: usize, size: impl Fn(&Program) -> usize) -> usize {
        let full = TokenBatch {
            batch,
            seq,
            ids: vec![0; batch * seq],
            mask: vec![true; batch * seq],
            type_ids: vec![0; batch * seq],
        };
        let forward = size(&self.arch.forward(&full, &[]));
        match self.arch.as_decoder() {
            Some(d) if kv > seq => forward.max(size(&d.step(&full.ids, 0, kv))),
            _ => forward,
        }
    }

    /// Values the request's outputs hold, with the main output they are made from: what
    /// answering it costs in host memory outside the workspace.
    pub fn output_elems(&self, batch: &TokenBatch, outputs: &[OutputKind]) -> usize {
        let pooled = outputs.iter().filter(|&&o| o == OutputKind::SentenceEmbedding).count();
        let copies = (outputs.len() - pooled).max(1);
        let width = self.output_shape(OutputKind::SentenceEmbedding)[1] as usize;
        copies * self.arch.output_elems(batch, outputs) + pooled * batch.batch * width
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
        if self.arch.as_decoder().is_none() {
            return Err(EngineError::BadInput(format!(
                "generation needs a decoder model; this package is {}",
                self.arch.model_type()
            )));
        }
        let batch = TokenBatch::from_sequences(&[prompt.to_vec()])?;
        self.validate_batch(&batch)?;
        let total = prompt.len() + opts.max_new_tokens;
        let positions = self.arch.max_positions();
        if total > positions {
            return Err(EngineError::BadInput(format!(
                "prompt of {} tokens plus {} new tokens exceeds the model's {positions} positions",
                prompt.len(),
                opts.max_new_tokens,
            )));
        }
        opts.sampling.validate()?;
        Ok(batch)
    }

    /// The forward pass of a checked batch for the asked `outputs`, as a device program whose
    /// output feeds [`Self::outputs_of`] (with the same `outputs`).
    pub fn forward_program(&self, batch: &TokenBatch, outputs: &[OutputKind]) -> Program {
        self.program(self.arch.forward(batch, outputs))
    }

    /// A family's program made ready for this model's storage (embedding tables' dtype).
    fn program(&self, mut p: Program) -> Program {
        storage::annotate(&mut p, &self.layout);
        p
    }

    /// `program` as a device runs it under this model's `compute`: `native` lowers every
    /// product over half weights to rounded activations times half weights; `f32` leaves it to
    /// a device whose GEMMs read half weights (`reads_half`: the CPU executor) or widens the
    /// weights for one that reads F32 only (cuBLAS's SGEMM).
    pub fn lowered(&self, program: &Program, reads_half: bool) -> Program {
        match self.compute {
            Compute::Native => storage::native(program, &self.layout),
            Compute::F32 if reads_half => program.clone(),
            Compute::F32 => storage::widen(program, &self.layout),
        }
    }

    /// Runs one batch against `weights` (any copy of the packed buffer, as it arrives) on the
    /// CPU and returns the asked outputs in order.
    pub fn infer(
        &self,
        weights: &dyn WeightSource,
        batch: &TokenBatch,
        outputs: &[OutputKind],
        ws: &mut Workspace,
    ) -> Result<Vec<OutputTensor>> {
        self.check_weights(weights)?;
        self.check_request(batch, outputs)?;
        let program = self.lowered(&self.forward_program(batch, outputs), true);
        let data = exec::run(&program, weights, &self.layout, ws.elems())?;
        Ok(self.outputs_of(batch, outputs, data))
    }

    /// The asked outputs from what a forward program produced: the architecture's outputs over
    /// the padded batch, and the sentence embedding pooled from its hidden states when asked.
    pub fn outputs_of(&self, batch: &TokenBatch, outputs: &[OutputKind], data: Vec<f32>) -> Vec<OutputTensor> {
        let mut produced: Vec<Option<Produced>> =
            self.arch.assemble(batch, outputs, data).into_iter().map(Some).collect();
        let pooled = match &self.pooling {
            Some(pooling) if outputs.contains(&OutputKind::SentenceEmbedding) => {
                let hidden = produced
                    .iter()
                    .flatten()
                    .find(|p| p.kind == OutputKind::LastHiddenState)
                    .expect("pooling is set only where the architecture gives hidden states");
                let (b, s, h) = (batch.batch, batch.seq, hidden.shape[2]);
                let values = pooling.apply(&hidden.data, &batch.mask, b, s, h);
                Some(OutputTensor::fp32(OutputKind::SentenceEmbedding, vec![b, pooling.output_dim(h)], values))
            }
            _ => None,
        };
        // Each output is moved into its last use, copied into any before it.
        outputs
            .iter()
            .enumerate()
            .map(|(i, &want)| {
                if want == OutputKind::SentenceEmbedding {
                    return pooled.clone().expect("listed only with pooling");
                }
                let slot = produced
                    .iter_mut()
                    .find(|p| p.as_ref().is_some_and(|p| p.kind == want))
                    .expect("checked against the outputs");
                let last = !outputs[i + 1..].contains(&want);
                let p = if last { slot.take().expect("present") } else { slot.clone().expect("present") };
                OutputTensor::fp32(p.kind, p.shape, p.data)
            })
            .collect()
    }

    /// Generates on any device that runs programs: `run` executes one program and returns its
    /// output (the last position's logits). The KV cache stays in the device's workspace
    /// between calls, where every program of this generation places it.
    pub fn generate_with(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
        run: &mut dyn FnMut(&Program) -> Result<Vec<f32>>,
    ) -> Result<Decoded> {
        self.check_generation(prompt, opts)?;
        let decoder = self.arch.as_decoder().expect("check_generation accepts decoders only");
        generate::generate(decoder, prompt, opts, on_token, &mut |p| run(&self.program(p.clone())))
    }

    /// [`Self::generate_with`] on the CPU, against `weights` as they arrive.
    pub fn generate(
        &self,
        weights: &dyn WeightSource,
        prompt: &[u32],
        opts: &GenerateOptions,
        ws: &mut Workspace,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Decoded> {
        self.check_weights(weights)?;
        let layout = &self.layout;
        let lowered = |p: &Program| self.lowered(p, true);
        self.generate_with(prompt, opts, on_token, &mut |p| exec::run(&lowered(p), weights, layout, ws.elems()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_that_hide_keys_give_finite_outputs() {
        let gpt2 = Model::load(&crate::engine::fixture("tiny_gpt2")).unwrap();
        // Left padding, the usual way to batch prompts of different lengths.
        let mask = Some(vec![false, true, true, true, true, true]);
        let batch = TokenBatch::from_tensors(2, 3, vec![0, 5, 6, 7, 8, 9], mask, None).unwrap();
        let out = gpt2.infer(&batch, &[OutputKind::Logits]).unwrap();
        let bad = out[0].data.iter().filter(|x| !x.is_finite()).count();
        assert_eq!(bad, 0, "{bad} of {} logits are not finite", out[0].data.len());
    }

    #[test]
    fn last_logits_are_each_sequences_last_attended_row_and_the_pass_computes_only_those() {
        let left = TokenBatch::from_tensors(
            2,
            3,
            vec![0, 5, 6, 7, 8, 9],
            Some(vec![false, true, true, true, true, true]),
            None,
        )
        .unwrap();
        let right = TokenBatch::from_sequences(&[vec![3, 7, 11, 2], vec![9, 4]]).unwrap();
        for name in ["tiny_gpt2", "tiny_llama", "tiny_qwen2"] {
            let model = Model::load(&crate::engine::fixture(name)).unwrap();
            let vocab = model.spec.arch.vocab_size();
            for batch in [&left, &right] {
                let both = model.infer(batch, &[OutputKind::Logits, OutputKind::LastLogits]).unwrap();
                let (all, last) = (&both[0], &both[1]);
                assert_eq!(last.name, "last_logits");
                assert_eq!(last.shape, vec![batch.batch, vocab]);
                for (b, &p) in crate::engine::nn::decoder::last_positions(batch).iter().enumerate() {
                    let at = (b * batch.seq + p) * vocab;
                    assert_eq!(&last.data[b * vocab..][..vocab], &all.data[at..at + vocab], "{name}: row {b}");
                }
                let alone = model.infer(batch, &[OutputKind::LastLogits]).unwrap();
                let d = crate::engine::max_abs_diff(&alone[0].data, &last.data);
                assert!(d < 1e-5, "{name}: the last-only pass differs by {d}");
                let programs = [&[OutputKind::Logits][..], &[OutputKind::LastLogits]]
                    .map(|o| model.spec.forward_program(batch, o).output.1);
                assert_eq!(programs, [batch.batch * batch.seq * vocab, batch.batch * vocab], "{name}: rows computed");
            }
        }
    }
}
