//! Task heads on an encoder's packed hidden states, as transformers' `*For*` classes have them:
//! extractive question answering (a start and an end logit per token), token classification
//! (a label's logit per token) and sequence classification (a dense layer and activation on the
//! first token, then a label's logit per sequence). Each plans its weights as the last layer of
//! the model, emits its orders after the encoder's, and spreads its output over the batch.

use super::encoder::{unpack, EncoderRun};
use super::mlp::dense;
use crate::engine::batch::TokenBatch;
use crate::engine::io::{OutputKind, OutputSpec, Produced};
use crate::engine::layout::Span;
use crate::engine::plan::PlanBuilder;
use crate::engine::program::{Act, Gemm, Op};

/// What a package computes on top of its encoder, from its `architectures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// The bare encoder: `last_hidden_state`.
    Body,
    QuestionAnswering,
    SequenceClassification,
    TokenClassification,
}

impl Task {
    /// The task of a transformers class of the family whose classes start with `stem`
    /// (`BertForQuestionAnswering` with stem `Bert`).
    pub fn of_class(stem: &str, class: &str) -> Option<Self> {
        match class.strip_prefix(stem)? {
            "Model" | "ForMaskedLM" | "ForPreTraining" => Some(Self::Body),
            "ForQuestionAnswering" => Some(Self::QuestionAnswering),
            "ForSequenceClassification" => Some(Self::SequenceClassification),
            "ForTokenClassification" => Some(Self::TokenClassification),
            _ => None,
        }
    }
}

/// Where a family keeps its heads' tensors.
#[derive(Debug, Clone, Copy)]
pub struct HeadNames {
    /// The question-answering projection (`qa_outputs`), at the file's top level.
    pub qa: &'static str,
    /// The token classifier (`classifier`), at the top level.
    pub token: &'static str,
    /// The sequence classifier's first dense layer: BERT's pooler (`pooler.dense`, inside the
    /// encoder's prefix), RoBERTa's `classifier.dense`, DistilBERT's `pre_classifier`.
    pub sequence_pre: &'static str,
    /// Whether `sequence_pre` sits inside the encoder's prefix (BERT's pooler does).
    pub sequence_pre_in_body: bool,
    /// The activation after it: tanh (BERT's pooler, RoBERTa) or ReLU (DistilBERT).
    pub sequence_act: Act,
    /// The sequence classifier's output layer (`classifier`, RoBERTa's `classifier.out_proj`).
    pub sequence_out: &'static str,
}

#[derive(Debug, Clone)]
pub enum Head {
    Body,
    QuestionAnswering { w: Span, b: Span },
    TokenClassification { w: Span, b: Span, labels: usize },
    SequenceClassification { pre_w: Span, pre_b: Span, act: Act, w: Span, b: Span, labels: usize },
}

impl Head {
    /// Plans the head's weights as a layer of their own after the encoder's.
    pub fn plan(b: &mut PlanBuilder, task: Task, names: &HeadNames, hidden: usize, labels: usize) -> Self {
        if task == Task::Body {
            return Self::Body;
        }
        b.layer("head");
        let linear = |b: &mut PlanBuilder, name: &str, out: usize| {
            (b.linear_in_out(format!("{name}.weight"), out, hidden), b.tensor(format!("{name}.bias"), &[out]))
        };
        let head = match task {
            Task::Body => unreachable!("returned above"),
            Task::QuestionAnswering => {
                b.unprefixed(true);
                let (w, b_) = linear(b, names.qa, 2);
                Self::QuestionAnswering { w, b: b_ }
            }
            Task::TokenClassification => {
                b.unprefixed(true);
                let (w, b_) = linear(b, names.token, labels);
                Self::TokenClassification { w, b: b_, labels }
            }
            Task::SequenceClassification => {
                b.unprefixed(!names.sequence_pre_in_body);
                let (pre_w, pre_b) = linear(b, names.sequence_pre, hidden);
                b.unprefixed(true);
                let (w, b_) = linear(b, names.sequence_out, labels);
                Self::SequenceClassification { pre_w, pre_b, act: names.sequence_act, w, b: b_, labels }
            }
        };
        b.unprefixed(false);
        head
    }

    /// The outputs it gives, and those a request that names none gets.
    pub fn outputs(&self, hidden: usize) -> (Vec<OutputSpec>, Vec<OutputKind>) {
        match *self {
            Self::Body => {
                (vec![OutputSpec::per_token(OutputKind::LastHiddenState, hidden)], vec![OutputKind::LastHiddenState])
            }
            Self::QuestionAnswering { .. } => (
                vec![
                    OutputSpec::per_position(OutputKind::StartLogits),
                    OutputSpec::per_position(OutputKind::EndLogits),
                ],
                vec![OutputKind::StartLogits, OutputKind::EndLogits],
            ),
            Self::TokenClassification { labels, .. } => {
                (vec![OutputSpec::per_token(OutputKind::Logits, labels)], vec![OutputKind::Logits])
            }
            Self::SequenceClassification { labels, .. } => {
                (vec![OutputSpec::per_sequence(OutputKind::Logits, labels)], vec![OutputKind::Logits])
            }
        }
    }

    /// Appends its orders to the encoder's; returns where the program's output is.
    pub fn emit(&self, run: &mut EncoderRun, hidden: usize) -> (usize, usize) {
        let (x, n, h) = (run.x, run.tokens, hidden);
        let ops = &mut run.ops;
        let wait = |ops: &mut Vec<Op>| {
            let last = ops.iter().filter(|o| matches!(o, Op::WaitLayer(_))).count();
            ops.push(Op::WaitLayer(last));
        };
        match *self {
            Self::Body => (x, n * h),
            Self::QuestionAnswering { w, b } => {
                let out = run.regions.take(n * 2);
                wait(ops);
                dense(ops, (x, n, h), (w, b), (out, 2), Act::None, None, out);
                (out, n * 2)
            }
            Self::TokenClassification { w, b, labels } => {
                let out = run.regions.take(n * labels);
                wait(ops);
                dense(ops, (x, n, h), (w, b), (out, labels), Act::None, None, out);
                (out, n * labels)
            }
            Self::SequenceClassification { pre_w, pre_b, act, w, b, labels } => {
                let rows = run.sequences.len();
                let pooled = run.regions.take(rows * h);
                let out = run.regions.take(rows * labels);
                wait(ops);
                // The first token of each sequence (`[CLS]`, `<s>`) through the first layer.
                for (i, &(first, _)) in run.sequences.iter().enumerate() {
                    ops.push(Op::Gemm(Gemm::linear_in_out(x + first * h, 1, h, pre_w.offset, h, pooled + i * h)));
                }
                ops.push(Op::BiasAct {
                    x: pooled,
                    bias: pre_b.offset,
                    rows,
                    width: h,
                    act,
                    residual: None,
                    out: pooled,
                });
                dense(ops, (pooled, rows, h), (w, b), (out, labels), Act::None, None, out);
                (out, rows * labels)
            }
        }
    }

    /// Its outputs over the padded batch from what its program produced (zeros at padding for
    /// per-token outputs).
    pub fn assemble(&self, batch: &TokenBatch, data: Vec<f32>, hidden: usize) -> Vec<Produced> {
        let (b, s) = (batch.batch, batch.seq);
        match *self {
            Self::Body => vec![Produced {
                kind: OutputKind::LastHiddenState,
                shape: vec![b, s, hidden],
                data: unpack(batch, &data, hidden),
            }],
            Self::QuestionAnswering { .. } => {
                let both = unpack(batch, &data, 2);
                let (start, end) = both.chunks_exact(2).map(|p| (p[0], p[1])).unzip();
                vec![
                    Produced { kind: OutputKind::StartLogits, shape: vec![b, s], data: start },
                    Produced { kind: OutputKind::EndLogits, shape: vec![b, s], data: end },
                ]
            }
            Self::TokenClassification { labels, .. } => {
                vec![Produced {
                    kind: OutputKind::Logits,
                    shape: vec![b, s, labels],
                    data: unpack(batch, &data, labels),
                }]
            }
            Self::SequenceClassification { labels, .. } => {
                vec![Produced { kind: OutputKind::Logits, shape: vec![b, labels], data }]
            }
        }
    }

    /// Values of all its outputs for a batch.
    pub fn output_elems(&self, batch: &TokenBatch, hidden: usize) -> usize {
        let tokens = batch.batch * batch.seq;
        match *self {
            Self::Body => tokens * hidden,
            Self::QuestionAnswering { .. } => tokens * 2,
            Self::TokenClassification { labels, .. } => tokens * labels,
            Self::SequenceClassification { labels, .. } => batch.batch * labels,
        }
    }
}
