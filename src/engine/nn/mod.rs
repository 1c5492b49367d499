//! Shared layers, written as program orders: a family's forward pass is these, in its own
//! order, over its own spans. Each helper emits the same orders whatever device runs them.
//!
//! - `Regions`: the workspace, handed out region by region;
//! - `embed`: token (and type) embeddings plus positions;
//! - `norm`: LayerNorm with an optional bias and residual folded in;
//! - `attention`: scaled dot-product attention of one sequence, every head, with masks;
//! - `mlp`: a dense layer with its bias, activation and residual;
//! - `kv`: a decoder's key/value cache in the workspace;
//! - `encoder`: the post-LayerNorm encoder the BERT-like families share;
//! - `heads`: task heads on an encoder (question answering, sequence and token classification).

pub mod attention;
pub mod decoder;
pub mod embed;
pub mod encoder;
pub mod heads;
pub mod kv;
pub mod mlp;
pub mod norm;

use super::layout::ALIGN_ELEMS;

/// Hands out workspace offsets, each region aligned like the weight layout (256 bytes).
#[derive(Debug, Default)]
pub struct Regions {
    next: usize,
}

impl Regions {
    pub fn take(&mut self, elems: usize) -> usize {
        let at = self.next;
        self.next += elems.div_ceil(ALIGN_ELEMS) * ALIGN_ELEMS;
        at
    }

    /// Workspace elements handed out so far.
    pub fn used(&self) -> usize {
        self.next
    }
}

/// `u32` words of a boolean mask, as programs read masks from the workspace.
pub fn mask_words(mask: &[bool]) -> Vec<u32> {
    mask.iter().map(|&m| u32::from(m)).collect()
}
