//! What the decoder families (GPT-2, the Llama family) share around their forward pass: one
//! pass over `t` new tokens per sequence with a KV cache, the rows that get logits, and how
//! inference and a decode step call it.

use crate::engine::batch::TokenBatch;
use crate::engine::io::{OutputKind, Produced};
use crate::engine::program::Program;

/// Which rows get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows {
    /// Every position: `[batch·t, vocab]` (the inference output).
    All,
    /// The last new position of each batch item: `[batch, vocab]` (what sampling needs).
    Last,
}

/// One forward pass: `t` new tokens per batch item at positions `start..start + t`.
pub struct Pass<'a> {
    pub batch: usize,
    /// `[batch, t]`.
    pub ids: &'a [u32],
    pub start: usize,
    /// Positions the cache holds.
    pub capacity: usize,
    /// `[batch, capacity]`: false at padding; entries past `start + t` are ignored.
    pub key_mask: &'a [bool],
    pub logits: LogitRows,
}

impl<'a> Pass<'a> {
    /// Every position of a checked batch, from position 0, its padding masked (inference).
    pub fn forward(batch: &'a TokenBatch) -> Self {
        Self {
            batch: batch.batch,
            ids: &batch.ids,
            start: 0,
            capacity: batch.seq,
            key_mask: &batch.mask,
            logits: LogitRows::All,
        }
    }
}

/// A decode step: `ids` (one sequence) at positions `start..` in a cache of `capacity`, the last
/// position's logits out.
pub fn step(ids: &[u32], start: usize, capacity: usize, pass: impl FnOnce(&Pass<'_>) -> Program) -> Program {
    let mask = vec![true; capacity];
    pass(&Pass { batch: 1, ids, start, capacity, key_mask: &mask, logits: LogitRows::Last })
}

/// Every position's logits `[batch, seq, vocab]`, the one tensor inference answers.
pub fn logits(batch: &TokenBatch, vocab: usize, data: Vec<f32>) -> Vec<Produced> {
    vec![Produced { kind: OutputKind::Logits, shape: vec![batch.batch, batch.seq, vocab], data }]
}
