//! What a model family is to the rest of faaswap: one `Architecture` — its inputs and outputs,
//! the limits a request is checked against, the forward pass written as a device `Program`, and
//! how that program's output becomes response tensors — plus, for a generative family, a
//! `Decoder`. Families live in `models/`, one file each, and are found through `registry`;
//! nothing outside them knows a family's name.

use serde_json::Value;

use super::batch::TokenBatch;
use super::io::{IoSpec, OutputKind, Produced};
use super::program::Program;

pub trait Architecture: Send + Sync + std::fmt::Debug {
    /// `config.json`'s `model_type`.
    fn model_type(&self) -> &'static str;

    /// The checked configuration, for summaries (`faaswap inspect`, the functions API).
    fn config(&self) -> Value;

    /// The tensors it takes and produces (the default output first).
    fn io(&self) -> &IoSpec;

    fn vocab_size(&self) -> usize;

    fn max_positions(&self) -> usize;

    /// Token type ids it takes (`token_type_ids` values below this); 1 when it takes none.
    fn type_vocab_size(&self) -> usize {
        1
    }

    /// The width of its hidden states (what sentence pooling reads).
    fn hidden_size(&self) -> usize;

    /// The names of a classification head's labels (`id2label`), in order.
    fn labels(&self) -> Option<&[String]> {
        None
    }

    /// Its forward pass over a checked batch, as a device program, for `outputs` (of those
    /// `io()` lists; none: the defaults): a family may leave out work no asked output needs.
    fn forward(&self, batch: &TokenBatch, outputs: &[OutputKind]) -> Program;

    /// The outputs `forward(batch, outputs)`'s program produced — at least those asked — over
    /// the padded batch (zeros at padding where it runs only attended tokens).
    fn assemble(&self, batch: &TokenBatch, outputs: &[OutputKind], data: Vec<f32>) -> Vec<Produced>;

    /// Values `assemble` returns for a batch (what answering costs outside the workspace).
    fn output_elems(&self, batch: &TokenBatch, outputs: &[OutputKind]) -> usize;

    /// Its decoder, when it generates.
    fn as_decoder(&self) -> Option<&dyn Decoder> {
        None
    }
}

/// A generative family: what the decode loop (`generate`) needs.
pub trait Decoder: Send + Sync {
    /// Tokens that end a generation (may be empty).
    fn eos_ids(&self) -> &[u32];

    /// One forward step of a generation: `ids` (one sequence) at positions `start..`, in a KV
    /// cache of `capacity` positions left in the workspace between steps; the program outputs
    /// the last position's logits.
    fn step(&self, ids: &[u32], start: usize, capacity: usize) -> Program;
}
