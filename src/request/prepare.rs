//! Validation: how a request for a function becomes work the scheduler can place — tokenized,
//! checked against the model (batch size, vocabulary, positions, outputs), its response sized —
//! or the reason it is refused (a 400). Plain functions, run on the HTTP worker that received
//! the request (in parallel across workers, with no hand-off to another thread).

use std::sync::Arc;

use super::{Generation, Inputs, RuntimeError, Work};
use crate::engine::{EngineError, Model, TokenBatch};
use crate::policy::Profile;

/// Most output values one request may produce (256 MiB of `f32`): responses are built in host
/// memory, outside the device's workspace.
const MAX_OUTPUT_VALUES: usize = 1 << 26;

/// What a function runs: a model package, or (on `sim` devices) a profile alone.
#[derive(Clone)]
pub enum Payload {
    Model(Arc<Model>),
    Profile(Profile),
}

impl Payload {
    pub fn model(&self) -> Option<&Arc<Model>> {
        match self {
            Self::Model(m) => Some(m),
            Self::Profile(_) => None,
        }
    }

    /// Weight bytes a swap moves.
    pub fn bytes(&self) -> u64 {
        match self {
            Self::Model(m) => m.spec.layout.total_bytes() as u64,
            Self::Profile(p) => p.weight_bytes,
        }
    }

    /// An inference request as work for the scheduler, or the reason it is refused (a 400).
    pub fn prepare(&self, inputs: Inputs, requested: &[String], max_batch: usize) -> Result<Work, RuntimeError> {
        let model = match self {
            Payload::Model(m) => m,
            Payload::Profile(p) => return Self::prepare_profiled(p, inputs, requested, max_batch),
        };
        let spec = &model.spec;
        let outputs = spec.requested_outputs(requested)?;
        // The batch size is checked before tokenizing (the cheap refusal first).
        let rows = inputs.rows();
        if rows > max_batch {
            return Err(EngineError::BadInput(format!(
                "a batch of {rows} exceeds the function's max_batch of {max_batch}"
            ))
            .into());
        }
        let batch = match inputs {
            Inputs::Texts(texts) => spec.tokenize_batch(&texts, None)?,
            Inputs::TextPairs(pairs) => {
                let (texts, seconds): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
                spec.tokenize_batch(&texts, Some(&seconds))?
            }
            Inputs::Tokens(batch) => batch,
            Inputs::Tensors(_) => return Err(takes_tokens()),
        };
        spec.check_request(&batch, &outputs)?;
        let values = spec.output_elems(&batch, &outputs);
        if values > MAX_OUTPUT_VALUES {
            return Err(EngineError::BadInput(format!(
                "the response would hold {values} values, more than the limit of {MAX_OUTPUT_VALUES}"
            ))
            .into());
        }
        Ok(Work { model: Some(model.clone()), bytes: self.bytes(), exec_ms: None, batch, outputs, generation: None })
    }

    /// A profiled function takes token ids (or texts, one sequence each) only for their batch
    /// size and produces no tensors.
    fn prepare_profiled(
        p: &Profile,
        inputs: Inputs,
        requested: &[String],
        max_batch: usize,
    ) -> Result<Work, RuntimeError> {
        if let Some(name) = requested.first() {
            return Err(EngineError::UnknownOutput { name: name.clone(), available: String::new() }.into());
        }
        let batch = match inputs {
            Inputs::Texts(_) | Inputs::TextPairs(_) => TokenBatch::from_sequences(&vec![vec![0]; inputs.rows()])?,
            Inputs::Tokens(batch) => batch,
            Inputs::Tensors(_) => return Err(takes_tokens()),
        };
        if batch.batch > max_batch {
            return Err(EngineError::BadInput(format!(
                "a batch of {} exceeds the function's max_batch of {}",
                batch.batch, max_batch
            ))
            .into());
        }
        Ok(Work {
            model: None,
            bytes: p.weight_bytes,
            exec_ms: Some(p.exec_ms),
            batch,
            outputs: Vec::new(),
            generation: None,
        })
    }

    /// A generation request as work for the scheduler, or the reason it is refused.
    pub fn prepare_generation(&self, generation: Generation) -> Result<Work, RuntimeError> {
        let Payload::Model(model) = self else {
            return Err(EngineError::BadInput("a function deployed from a profile alone cannot generate".into()).into());
        };
        let batch = model.spec.check_generation(&generation.prompt, &generation.options)?;
        if !generation.stop.is_empty() && model.spec.tokenizer.is_none() {
            return Err(EngineError::BadInput("stop strings need a package with a tokenizer".into()).into());
        }
        Ok(Work {
            model: Some(model.clone()),
            bytes: self.bytes(),
            exec_ms: None,
            batch,
            outputs: Vec::new(),
            generation: Some(generation),
        })
    }
}

fn takes_tokens() -> RuntimeError {
    EngineError::BadInput("this function takes token ids or texts, not tensors".into()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::synth::{self, SynthDtype};

    fn bert_nano() -> (tempfile::TempDir, Payload) {
        let dir = tempfile::tempdir().unwrap();
        synth::write_package(synth::preset("bert-nano").unwrap(), 3, SynthDtype::F32, dir.path(), &mut |_, _| {})
            .unwrap();
        let model = Model::load(dir.path()).unwrap();
        (dir, Payload::Model(Arc::new(model)))
    }

    fn tokens(seqs: &[Vec<u32>]) -> Inputs {
        Inputs::Tokens(TokenBatch::from_sequences(seqs).unwrap())
    }

    #[test]
    fn a_token_request_becomes_work_with_the_default_output() {
        let (_dir, payload) = bert_nano();
        let work = payload.prepare(tokens(&[vec![1, 2, 3], vec![4, 5]]), &[], 8).unwrap();
        assert_eq!((work.batch.batch, work.batch.seq), (2, 3));
        assert_eq!(work.outputs, payload.model().unwrap().spec.default_outputs());
        assert_eq!(work.bytes, payload.bytes());
        assert!(work.model.is_some() && work.exec_ms.is_none() && work.generation.is_none());
    }

    #[test]
    fn requests_the_model_cannot_run_are_refused_before_the_scheduler() {
        let (_dir, payload) = bert_nano();
        let err = |r: Result<Work, RuntimeError>| r.err().expect("refused").to_string();
        assert!(err(payload.prepare(tokens(&vec![vec![1]; 3]), &[], 2)).contains("max_batch of 2"));
        assert!(err(payload.prepare(tokens(&[vec![1]]), &["nope".into()], 8)).contains("nope"));
        // Token ids past the vocabulary and sequences past the positions are the model's to refuse.
        assert!(payload.prepare(tokens(&[vec![1 << 20]]), &[], 8).is_err());
        assert!(payload.prepare(tokens(&[vec![1; 1000]]), &[], 8).is_err());
    }

    #[test]
    fn a_profiled_function_takes_only_the_batch_size_and_names_no_outputs() {
        let payload = Payload::Profile(Profile { weight_bytes: 1 << 20, exec_ms: 4.0, class: None });
        let work = payload.prepare(Inputs::Texts(vec!["a".into(), "b".into()]), &[], 8).unwrap();
        assert_eq!((work.batch.batch, work.exec_ms, work.bytes), (2, Some(4.0), 1 << 20));
        assert!(work.model.is_none() && work.outputs.is_empty());
        assert!(payload.prepare(tokens(&[vec![1]]), &["logits".into()], 8).is_err());
        assert!(payload.prepare(tokens(&vec![vec![1]; 9]), &[], 8).is_err());
    }

    #[test]
    fn tensors_are_refused_by_a_model_that_takes_tokens() {
        let (_dir, payload) = bert_nano();
        let image = crate::engine::InputTensor { name: "pixel_values".into(), shape: vec![1, 3], data: vec![0.0; 3] };
        let err = payload.prepare(Inputs::Tensors(vec![image]), &[], 8).err().expect("refused");
        assert!(err.to_string().contains("not tensors"), "{err}");
    }
}
