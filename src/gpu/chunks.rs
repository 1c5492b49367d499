//! How a swap-in is cut into copies: chunks in first-use order that never cross a layer, so
//! the copy of each layer ends with a chunk after which execution may read that layer; and how
//! big a chunk is, chosen from a start-up measurement of copy throughput per chunk size.

use crate::engine::LayerSpan;

/// Bytes `offset..offset + len` of the packed buffer; `completes` is the layer whose copy this
/// chunk finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub offset: usize,
    pub len: usize,
    pub completes: Option<usize>,
}

/// Chunks of at most `chunk_bytes` covering every layer in order (layers tile the buffer).
pub fn plan(layers: &[LayerSpan], chunk_bytes: usize) -> Vec<Chunk> {
    assert!(chunk_bytes > 0, "chunks hold at least a byte");
    let mut chunks = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let range = layer.byte_range();
        let mut at = range.start;
        while at < range.end {
            let len = chunk_bytes.min(range.end - at);
            at += len;
            chunks.push(Chunk { offset: at - len, len, completes: (at == range.end).then_some(i) });
        }
        if range.is_empty() {
            // An empty layer is complete as soon as the one before it is.
            chunks.push(Chunk { offset: range.start, len: 0, completes: Some(i) });
        }
    }
    chunks
}

/// The chunks of one swap-in, handed out in order as execution reaches each layer.
#[derive(Debug, Clone)]
pub struct Cursor {
    chunks: Vec<Chunk>,
    next: usize,
    /// The highest layer whose copy has been handed out completely.
    complete: Option<usize>,
}

impl Cursor {
    pub fn new(chunks: Vec<Chunk>) -> Self {
        Self { chunks, next: 0, complete: None }
    }

    /// The chunks still to copy so that layers `..=upto` are complete (`usize::MAX`: all);
    /// empty when they already are.
    pub fn through(&mut self, upto: usize) -> &[Chunk] {
        let start = self.next;
        while self.next < self.chunks.len() && self.complete.is_none_or(|c| c < upto) {
            if let Some(layer) = self.chunks[self.next].completes {
                self.complete = Some(layer);
            }
            self.next += 1;
        }
        &self.chunks[start..self.next]
    }

    /// Every chunk has been handed out.
    pub fn done(&self) -> bool {
        self.next == self.chunks.len()
    }
}

/// The copy-throughput elbow: the smallest chunk size whose measured throughput is within 3%
/// of the best. Small chunks let execution start sooner; past the elbow they cost bandwidth.
pub fn choose(samples: &[(usize, f64)]) -> Option<usize> {
    let best = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    samples.iter().filter(|s| s.1 >= 0.97 * best && best > 0.0).map(|s| s.0).min()
}

/// The chunk size for a swap-in. Execution waits per layer, never per chunk, so cutting a
/// layer finer only helps where the copy goes through the fixed-size pinned staging slots
/// (pageable sources); page-locked and peer sources copy each layer whole, which on the H200
/// moves 55 GB/s against 53.6 for the 4 MiB chunks the elbow picks (BENCHMARKS.md).
pub fn limit(staged: bool, staging_bytes: usize) -> usize {
    if staged {
        staging_bytes
    } else {
        usize::MAX
    }
}

/// Chunk sizes the start-up measurement tries.
pub const CANDIDATES: [usize; 6] = [1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20, 32 << 20];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Span;

    fn layers(lens: &[usize]) -> Vec<LayerSpan> {
        let mut offset = 0;
        lens.iter()
            .enumerate()
            .map(|(i, &len)| {
                let l = LayerSpan { name: format!("l{i}"), span: Span { offset, len } };
                offset += len;
                l
            })
            .collect()
    }

    #[test]
    fn chunks_tile_the_buffer_and_end_each_layer() {
        // Element lengths; 4 bytes each.
        let ls = layers(&[1000, 10, 0, 2500]);
        let chunks = plan(&ls, 1024);
        let mut at = 0;
        for c in &chunks {
            assert_eq!(c.offset, at, "contiguous, in order");
            assert!(c.len <= 1024);
            at += c.len;
        }
        assert_eq!(at, (1000 + 10 + 2500) * 4);
        let ends: Vec<(usize, usize)> =
            chunks.iter().filter_map(|c| c.completes.map(|l| (l, c.offset + c.len))).collect();
        assert_eq!(ends, vec![(0, 4000), (1, 4040), (2, 4040), (3, 14040)]);
        for c in &chunks {
            let layer = ls.iter().position(|l| l.byte_range().contains(&c.offset)).unwrap_or(2);
            if c.len > 0 {
                assert!(c.offset + c.len <= ls[layer].byte_range().end, "no chunk crosses a layer");
            }
        }
    }

    #[test]
    fn the_cursor_hands_out_each_chunk_once_and_only_as_far_as_asked() {
        let ls = layers(&[1000, 10, 0, 2500]);
        let mut c = Cursor::new(plan(&ls, 1024));
        let first: Vec<Chunk> = c.through(0).to_vec();
        assert_eq!(first.iter().map(|k| k.len).sum::<usize>(), 4000, "exactly layer 0");
        assert_eq!(first.last().unwrap().completes, Some(0));
        assert!(c.through(0).is_empty(), "layer 0 is already complete");
        // Layer 2 is empty: asking for it completes layers 1 and 2.
        let next: Vec<Option<usize>> = c.through(2).iter().map(|k| k.completes).collect();
        assert_eq!(next, vec![Some(1), Some(2)]);
        assert!(!c.done());
        let rest: usize = c.through(usize::MAX).iter().map(|k| k.len).sum();
        assert_eq!(rest, 10_000);
        assert!(c.done() && c.through(usize::MAX).is_empty());
    }

    #[test]
    fn only_staged_copies_cut_layers_into_chunks() {
        // Element lengths: 40 MiB, nothing, 12 MiB.
        let l = layers(&[10 << 20, 0, 3 << 20]);
        let whole = plan(&l, limit(false, 4 << 20));
        assert_eq!(whole.iter().map(|c| c.len).collect::<Vec<_>>(), [40 << 20, 0, 12 << 20]);
        let staged = plan(&l, limit(true, 4 << 20));
        assert!(staged.iter().all(|c| c.len <= 4 << 20));
        assert_eq!(staged.len(), 10 + 1 + 3);
    }

    #[test]
    fn the_elbow_is_the_smallest_chunk_near_the_best_rate() {
        // Illustrative figures shaped like CUDA-NOTES.md's (53.5 / 54.9 GB/s at 4 / 16 MiB).
        let samples = [(1 << 20, 40e9), (2 << 20, 48e9), (4 << 20, 53.5e9), (8 << 20, 54.2e9), (16 << 20, 54.9e9)];
        assert_eq!(choose(&samples), Some(4 << 20));
        assert_eq!(choose(&[(1 << 20, 10e9)]), Some(1 << 20));
        assert_eq!(choose(&[]), None);
        assert_eq!(choose(&[(1 << 20, 0.0)]), None);
    }
}
