//! What the encoder families (BERT, RoBERTa, XLM-RoBERTa, DistilBERT) share: an encoder body
//! (`nn::encoder`) with the task head its `architectures` names (`nn::heads`), as one
//! `Architecture`. Each family file reads its own config into an `EncoderShape`, names its
//! tensors and calls `EncoderModel::load`.

use serde_json::{json, Value};

use crate::engine::arch::Architecture;
use crate::engine::batch::TokenBatch;
use crate::engine::config::ConfigReader;
use crate::engine::error::Result;
use crate::engine::io::{IoSpec, OutputKind, Produced};
use crate::engine::nn::encoder::{Encoder, EncoderNames, EncoderShape};
use crate::engine::nn::heads::{Head, HeadNames, Task};
use crate::engine::plan::PlanBuilder;
use crate::engine::program::Program;
use crate::engine::registry::{Family, Loaded};

/// Most labels a classification head may have (a bound on what a config can size).
pub const MAX_LABELS: usize = 1 << 16;

/// How a family's encoder and heads are named and read.
pub struct EncoderFamily {
    /// Its row of the registry (`model_type`, the classes it serves).
    pub family: &'static Family,
    /// The transformers class stem (`Bert`, `XLMRoberta`): classes are `{stem}Model`,
    /// `{stem}ForSequenceClassification`, ….
    pub stem: &'static str,
    pub names: EncoderNames,
    pub heads: HeadNames,
}

#[derive(Debug)]
pub struct EncoderModel {
    model_type: &'static str,
    /// The family's checked config, for summaries.
    config: Value,
    architecture: String,
    id2label: Option<Vec<String>>,
    encoder: Encoder,
    head: Head,
    io: IoSpec,
}

impl EncoderModel {
    /// Chooses the head from `architectures` and plans the weights.
    pub fn load(r: &ConfigReader<'_>, family: &EncoderFamily, shape: EncoderShape, config: Value) -> Result<Loaded> {
        let (architecture, task) = task(r, family)?;
        let id2label = match task {
            Task::SequenceClassification | Task::TokenClassification => Some(labels(r)?),
            _ => None,
        };
        let hidden = shape.hidden_size;
        let token_types = shape.type_vocab_size.is_some_and(|t| t > 1);
        let mut b = PlanBuilder::new(r.storage);
        let encoder = Encoder::plan(&mut b, shape, &family.names);
        let n_labels = id2label.as_ref().map_or(0, Vec::len);
        let head = Head::plan(&mut b, task, &family.heads, hidden, n_labels);
        let (plan, layout) = b.finish();
        let (outputs, defaults) = head.outputs(hidden);
        let io = IoSpec::tokens(token_types, outputs).with_defaults(defaults);
        let arch = Self { model_type: family.family.model_type, config, architecture, id2label, encoder, head, io };
        Ok(Loaded { arch: Box::new(arch), plan, layout })
    }
}

/// The class `architectures` names (its first entry; the bare model when absent) and its task.
fn task(r: &ConfigReader<'_>, family: &EncoderFamily) -> Result<(String, Task)> {
    let bare = format!("{}Model", family.stem);
    let class = match r.get("architectures") {
        None | Some(Value::Null) => return Ok((bare, Task::Body)),
        Some(Value::Array(a)) if a.is_empty() => return Ok((bare, Task::Body)),
        Some(Value::Array(a)) => match &a[0] {
            Value::String(s) => s.clone(),
            other => return Err(r.err(format!("architectures must list class names, found {other}"))),
        },
        Some(other) => return Err(r.err(format!("architectures must be a list of class names, found {other}"))),
    };
    let (model_type, architectures) = (family.family.model_type, family.family.architectures);
    match Task::of_class(family.stem, &class).filter(|_| architectures.contains(&class.as_str())) {
        Some(task) => Ok((class, task)),
        None => Err(r.err(format!(
            "architectures {class:?} is not supported for model_type {:?} (supported: {})",
            model_type,
            architectures.join(", ")
        ))),
    }
}

/// The labels of a classification head: `id2label` (keys `"0"` … `"n-1"`), else `num_labels`
/// generic ones (`LABEL_i`), else two, as transformers defaults.
fn labels(r: &ConfigReader<'_>) -> Result<Vec<String>> {
    if let Some(v) = r.get("id2label").filter(|v| !v.is_null()) {
        let map = v.as_object().ok_or_else(|| r.err(format!("id2label must be an object, found {v}")))?;
        if map.is_empty() || map.len() > MAX_LABELS {
            return Err(r.err(format!("id2label has {} labels, expected 1..={MAX_LABELS}", map.len())));
        }
        let mut labels = vec![None; map.len()];
        for (k, v) in map {
            // Keys are indices as transformers writes them ("0", "1", …): "01" or "+1" would
            // name an index twice and leave another without a label.
            let i =
                k.parse::<usize>().ok().filter(|&i| i < labels.len() && i.to_string() == *k).ok_or_else(|| {
                    r.err(format!("id2label key {k:?} is not an index below its {} labels", map.len()))
                })?;
            let name = v.as_str().ok_or_else(|| r.err(format!("id2label[{k:?}] must be a string, found {v}")))?;
            labels[i] = Some(name.to_string());
        }
        let labels: Vec<String> = labels.into_iter().map(|l| l.expect("keys are distinct indices")).collect();
        if let Some(n) = r.opt_size("num_labels", MAX_LABELS)? {
            if n != labels.len() {
                return Err(r.err(format!("num_labels {n} differs from the {} labels of id2label", labels.len())));
            }
        }
        return Ok(labels);
    }
    let n = r.opt_size("num_labels", MAX_LABELS)?.unwrap_or(2);
    Ok((0..n).map(|i| format!("LABEL_{i}")).collect())
}

impl Architecture for EncoderModel {
    fn model_type(&self) -> &'static str {
        self.model_type
    }

    fn config(&self) -> Value {
        let mut v = json!({"model_type": self.model_type, "architecture": self.architecture});
        v[self.model_type] = self.config.clone();
        if let Some(labels) = &self.id2label {
            v["id2label"] = json!(labels);
        }
        v
    }

    fn io(&self) -> &IoSpec {
        &self.io
    }

    fn vocab_size(&self) -> usize {
        self.encoder.shape.vocab_size
    }

    fn max_positions(&self) -> usize {
        self.encoder.shape.max_tokens()
    }

    fn type_vocab_size(&self) -> usize {
        self.encoder.shape.type_vocab_size.unwrap_or(1)
    }

    fn hidden_size(&self) -> usize {
        self.encoder.shape.hidden_size
    }

    fn labels(&self) -> Option<&[String]> {
        self.id2label.as_deref()
    }

    fn forward(&self, batch: &TokenBatch, _outputs: &[OutputKind]) -> Program {
        let mut run = self.encoder.forward(batch);
        let output = self.head.emit(&mut run, self.hidden_size());
        Program { ops: run.ops, work_elems: run.regions.used(), inputs: run.inputs, output }
    }

    fn assemble(&self, batch: &TokenBatch, _outputs: &[OutputKind], data: Vec<f32>) -> Vec<Produced> {
        self.head.assemble(batch, data, self.hidden_size())
    }

    fn output_elems(&self, batch: &TokenBatch, _outputs: &[OutputKind]) -> usize {
        self.head.output_elems(batch, self.hidden_size())
    }
}
