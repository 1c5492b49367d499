//! What the decoder families (GPT-2, the Llama family) share around their forward pass: one
//! pass over `t` new tokens per sequence with a KV cache, the rows that get logits, and how
//! inference and a decode step call it.

use crate::engine::batch::TokenBatch;
use crate::engine::io::{IoSpec, OutputKind, OutputSpec, Produced};
use crate::engine::program::Program;

/// Which rows get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows<'a> {
    /// Every position: `[batch·t, vocab]` (the inference output `logits`).
    All,
    /// One position of each batch item, counted among its `t` new tokens: `[batch, vocab]`
    /// (what sampling needs, and the inference output `last_logits`).
    Last(&'a [usize]),
}

impl LogitRows<'_> {
    /// Rows of logits the pass writes.
    pub fn rows(&self, batch: usize, t: usize) -> usize {
        match self {
            LogitRows::All => batch * t,
            LogitRows::Last(_) => batch,
        }
    }
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
    pub logits: LogitRows<'a>,
}

/// The inputs and outputs of a decoder: token ids in, every position's logits (the default) or
/// each sequence's last position's only (`last_logits`, a vocabulary row per sequence instead
/// of one per token: what a client that samples needs, at a fraction of the bytes).
pub fn io(vocab: usize) -> IoSpec {
    IoSpec::tokens(
        false,
        vec![OutputSpec::per_token(OutputKind::Logits, vocab), OutputSpec::per_sequence(OutputKind::LastLogits, vocab)],
    )
}

/// Each sequence's last attended position (the last, where none is).
pub fn last_positions(batch: &TokenBatch) -> Vec<usize> {
    batch.mask.chunks(batch.seq).map(|m| m.iter().rposition(|&a| a).unwrap_or(batch.seq - 1)).collect()
}

/// Whether `outputs` need every position's logits.
fn wants_all(outputs: &[OutputKind]) -> bool {
    outputs.is_empty() || outputs.contains(&OutputKind::Logits)
}

/// The inference pass over a checked batch, from position 0, its padding masked: every
/// position's logits when `outputs` ask for them, else the last attended position's.
pub fn forward(batch: &TokenBatch, outputs: &[OutputKind], pass: impl FnOnce(&Pass<'_>) -> Program) -> Program {
    let last = last_positions(batch);
    let logits = if wants_all(outputs) { LogitRows::All } else { LogitRows::Last(&last) };
    pass(&Pass { batch: batch.batch, ids: &batch.ids, start: 0, capacity: batch.seq, key_mask: &batch.mask, logits })
}

/// A decode step: `ids` (one sequence) at positions `start..` in a cache of `capacity`, the last
/// position's logits out.
pub fn step(ids: &[u32], start: usize, capacity: usize, pass: impl FnOnce(&Pass<'_>) -> Program) -> Program {
    let mask = vec![true; capacity];
    let last = [ids.len() - 1];
    pass(&Pass { batch: 1, ids, start, capacity, key_mask: &mask, logits: LogitRows::Last(&last) })
}

/// The outputs `forward`'s program made: `logits` `[batch, seq, vocab]` and `last_logits`
/// `[batch, vocab]` (rows of the former when both are asked).
pub fn assemble(batch: &TokenBatch, vocab: usize, outputs: &[OutputKind], data: Vec<f32>) -> Vec<Produced> {
    let last = |data: Vec<f32>| Produced { kind: OutputKind::LastLogits, shape: vec![batch.batch, vocab], data };
    if !wants_all(outputs) {
        return vec![last(data)];
    }
    let mut out = Vec::with_capacity(2);
    if outputs.contains(&OutputKind::LastLogits) {
        let mut rows = Vec::with_capacity(batch.batch * vocab);
        for (b, p) in last_positions(batch).into_iter().enumerate() {
            let at = (b * batch.seq + p) * vocab;
            rows.extend_from_slice(&data[at..at + vocab]);
        }
        out.push(last(rows));
    }
    out.push(Produced { kind: OutputKind::Logits, shape: vec![batch.batch, batch.seq, vocab], data });
    out
}

/// Values `assemble` returns for `outputs`.
pub fn output_elems(batch: &TokenBatch, vocab: usize, outputs: &[OutputKind]) -> usize {
    let all = if wants_all(outputs) { batch.seq * vocab } else { 0 };
    let last = if outputs.contains(&OutputKind::LastLogits) { vocab } else { 0 };
    batch.batch * (all + last)
}

/// The `Architecture` methods every decoder family has alike, inside its `impl Architecture`:
/// for a type with an `io: IoSpec` field and a `pass(&self, &Pass<'_>) -> Program`.
macro_rules! shared_architecture {
    () => {
        fn io(&self) -> &$crate::engine::io::IoSpec {
            &self.io
        }

        fn forward(
            &self,
            batch: &$crate::engine::batch::TokenBatch,
            outputs: &[$crate::engine::io::OutputKind],
        ) -> $crate::engine::program::Program {
            $crate::engine::nn::decoder::forward(batch, outputs, |p| self.pass(p))
        }

        fn assemble(
            &self,
            batch: &$crate::engine::batch::TokenBatch,
            outputs: &[$crate::engine::io::OutputKind],
            data: Vec<f32>,
        ) -> Vec<$crate::engine::io::Produced> {
            $crate::engine::nn::decoder::assemble(batch, self.vocab_size(), outputs, data)
        }

        fn output_elems(
            &self,
            batch: &$crate::engine::batch::TokenBatch,
            outputs: &[$crate::engine::io::OutputKind],
        ) -> usize {
            $crate::engine::nn::decoder::output_elems(batch, self.vocab_size(), outputs)
        }

        fn as_decoder(&self) -> Option<&dyn $crate::engine::arch::Decoder> {
            Some(self)
        }
    };
}
pub(crate) use shared_architecture;
