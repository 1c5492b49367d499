//! The function actor: owns a deployed function's model (its host weights and tokenizer);
//! turns a request into a validated token batch and hands it to the scheduler.

use std::sync::Arc;

use actix::{Actor, Addr, Context, Handler};

use super::messages::{Generate, Infer, Inputs, Submit, Work};
use super::scheduler::SchedulerActor;
use super::RuntimeError;
use crate::engine::{EngineError, Model, OutputKind, TokenBatch};
use crate::gpu::Generation;
use crate::policy::{FunctionId, Profile};

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
}

/// Most output values one request may produce (256 MiB of `f32`): responses are built in host
/// memory, outside the device's workspace.
const MAX_OUTPUT_VALUES: usize = 1 << 26;

pub struct FunctionActor {
    id: FunctionId,
    name: String,
    payload: Payload,
    scheduler: Addr<SchedulerActor>,
}

impl FunctionActor {
    pub fn new(id: FunctionId, name: String, payload: Payload, scheduler: Addr<SchedulerActor>) -> Self {
        Self { id, name, payload, scheduler }
    }

    fn prepare(&self, inputs: Inputs, requested: &[String], max_batch: usize) -> Result<Work, RuntimeError> {
        let model = match &self.payload {
            Payload::Model(m) => m,
            Payload::Profile(p) => return Self::prepare_profiled(p, inputs, requested, max_batch),
        };
        let spec = &model.spec;
        let outputs: Vec<OutputKind> = if requested.is_empty() {
            vec![spec.default_output()]
        } else {
            requested.iter().map(|n| spec.output_by_name(n)).collect::<Result<_, _>>()?
        };
        let batch = match inputs {
            Inputs::Texts(texts) => TokenBatch::from_sequences(&spec.tokenize(&texts)?)?,
            Inputs::Tokens(batch) => batch,
        };
        spec.check_request(&batch, &outputs)?;
        if batch.batch > max_batch {
            return Err(EngineError::BadInput(format!(
                "a batch of {} exceeds the function's max_batch of {}",
                batch.batch, max_batch
            ))
            .into());
        }
        let values = spec.output_elems(&batch, &outputs);
        if values > MAX_OUTPUT_VALUES {
            return Err(EngineError::BadInput(format!(
                "the response would hold {values} values, more than the limit of {MAX_OUTPUT_VALUES}"
            ))
            .into());
        }
        Ok(Work {
            model: Some(model.clone()),
            bytes: self.payload.bytes(),
            exec_ms: None,
            batch,
            outputs,
            generation: None,
        })
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
            Inputs::Texts(texts) => TokenBatch::from_sequences(&vec![vec![0]; texts.len()])?,
            Inputs::Tokens(batch) => batch,
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
}

impl Actor for FunctionActor {
    type Context = Context<Self>;
}

impl Handler<Infer> for FunctionActor {
    type Result = ();

    fn handle(&mut self, msg: Infer, _: &mut Context<Self>) {
        let Infer { inputs, outputs, max_batch, deadline_ms, received, reply } = msg;
        match self.prepare(inputs, &outputs, max_batch) {
            Ok(work) => self.scheduler.do_send(Submit {
                function: self.id,
                name: self.name.clone(),
                work,
                received,
                deadline_ms,
                reply,
            }),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

impl FunctionActor {
    fn prepare_generation(&self, generation: Generation) -> Result<Work, RuntimeError> {
        let Payload::Model(model) = &self.payload else {
            return Err(EngineError::BadInput("a function deployed from a profile alone cannot generate".into()).into());
        };
        let batch = model.spec.check_generation(&generation.prompt, &generation.options)?;
        if !generation.stop.is_empty() && model.spec.tokenizer.is_none() {
            return Err(EngineError::BadInput("stop strings need a package with a tokenizer".into()).into());
        }
        Ok(Work {
            model: Some(model.clone()),
            bytes: self.payload.bytes(),
            exec_ms: None,
            batch,
            outputs: Vec::new(),
            generation: Some(generation),
        })
    }
}

impl Handler<Generate> for FunctionActor {
    type Result = ();

    fn handle(&mut self, msg: Generate, _: &mut Context<Self>) {
        let received = msg.generation.received;
        match self.prepare_generation(msg.generation) {
            Ok(work) => self.scheduler.do_send(Submit {
                function: self.id,
                name: self.name.clone(),
                work,
                received,
                deadline_ms: msg.deadline_ms,
                reply: msg.reply,
            }),
            Err(e) => {
                let _ = msg.reply.send(Err(e));
            }
        }
    }
}
