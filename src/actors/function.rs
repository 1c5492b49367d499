//! The function actor: owns a deployed function's model (its host weights and tokenizer);
//! turns a request into a validated token batch and hands it to the scheduler.

use std::sync::Arc;

use actix::{Actor, Addr, Context, Handler};

use super::messages::{Infer, Inputs, Submit, Work};
use super::scheduler::SchedulerActor;
use super::RuntimeError;
use crate::engine::{EngineError, Model, OutputKind, TokenBatch};
use crate::policy::FunctionId;

/// Most output values one request may produce (256 MiB of `f32`): responses are built in host
/// memory, outside the device's workspace.
const MAX_OUTPUT_VALUES: usize = 1 << 26;

pub struct FunctionActor {
    id: FunctionId,
    name: String,
    model: Arc<Model>,
    scheduler: Addr<SchedulerActor>,
}

impl FunctionActor {
    pub fn new(id: FunctionId, name: String, model: Arc<Model>, scheduler: Addr<SchedulerActor>) -> Self {
        Self { id, name, model, scheduler }
    }

    fn prepare(&self, inputs: Inputs, requested: &[String], max_batch: usize) -> Result<Work, RuntimeError> {
        let spec = &self.model.spec;
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
        Ok(Work { model: self.model.clone(), batch, outputs })
    }
}

impl Actor for FunctionActor {
    type Context = Context<Self>;
}

impl Handler<Infer> for FunctionActor {
    type Result = ();

    fn handle(&mut self, msg: Infer, _: &mut Context<Self>) {
        let Infer { inputs, outputs, max_batch, received, reply } = msg;
        match self.prepare(inputs, &outputs, max_batch) {
            Ok(work) => {
                self.scheduler.do_send(Submit { function: self.id, name: self.name.clone(), work, received, reply })
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }
}
