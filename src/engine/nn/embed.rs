//! Token embeddings: word (and token type) rows of the tables, plus learned positions.

use crate::engine::program::Op;
use crate::engine::Span;

/// The embedding tables of a family that adds learned positions.
#[derive(Debug, Clone, Copy)]
pub struct Embeddings {
    pub word: Span,
    pub position: Span,
    pub token_type: Option<Span>,
    pub width: usize,
}

impl Embeddings {
    /// `out[r] = word[ids[r]] + position[start + r % t] (+ token_type[types[r]])` for `rows`
    /// rows: `t` positions per sequence from `start` (the ids and types are `u32` words in the
    /// workspace).
    #[allow(clippy::too_many_arguments)]
    pub fn op(&self, ids: usize, types: Option<usize>, rows: usize, t: usize, start: usize, out: usize) -> Op {
        Op::Embed {
            ids,
            types,
            word: self.word.offset,
            pos: Some(self.position.offset),
            token_type: self.token_type.map(|s| s.offset),
            tables: crate::engine::Dtype::F32,
            rows,
            t,
            start,
            width: self.width,
            out,
        }
    }
}
