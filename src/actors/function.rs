//! The function actor: owns a deployed function's model (its host weights and tokenizer);
//! turns a request into a validated token batch and hands it to the scheduler.

use std::sync::Arc;

use actix::{Actor, Addr, Context, Handler, ResponseFuture};
use tokio::sync::oneshot;

use super::messages::{Completed, Infer, Inputs, Submit, Work};
use super::scheduler::SchedulerActor;
use super::RuntimeError;
use crate::engine::{Model, OutputKind, TokenBatch};
use crate::policy::FunctionId;

pub struct FunctionActor {
    id: FunctionId,
    name: String,
    model: Arc<Model>,
    scheduler: Addr<SchedulerActor>,
}

impl FunctionActor {
    pub fn new(
        id: FunctionId,
        name: String,
        model: Arc<Model>,
        scheduler: Addr<SchedulerActor>,
    ) -> Self {
        Self {
            id,
            name,
            model,
            scheduler,
        }
    }

    fn prepare(&self, msg: Infer) -> Result<Work, RuntimeError> {
        let spec = &self.model.spec;
        let outputs: Vec<OutputKind> = if msg.outputs.is_empty() {
            vec![spec.default_output()]
        } else {
            msg.outputs
                .iter()
                .map(|n| spec.output_by_name(n))
                .collect::<Result<_, _>>()?
        };
        let batch = match msg.inputs {
            Inputs::Texts(texts) => TokenBatch::from_sequences(&spec.tokenize(&texts)?)?,
            Inputs::Tokens(batch) => batch,
        };
        spec.check_request(&batch, &outputs)?;
        Ok(Work {
            model: self.model.clone(),
            batch,
            outputs,
        })
    }
}

impl Actor for FunctionActor {
    type Context = Context<Self>;
}

impl Handler<Infer> for FunctionActor {
    type Result = ResponseFuture<Result<Completed, RuntimeError>>;

    fn handle(&mut self, msg: Infer, _: &mut Context<Self>) -> Self::Result {
        let received = msg.received;
        let work = match self.prepare(msg) {
            Ok(w) => w,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let (tx, rx) = oneshot::channel();
        self.scheduler.do_send(Submit {
            function: self.id,
            name: self.name.clone(),
            work,
            received,
            reply: tx,
        });
        Box::pin(async move { rx.await.unwrap_or(Err(RuntimeError::Stopped)) })
    }
}
