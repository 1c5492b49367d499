//! The order in which an accelerator device issues one job's work on its two streams: the
//! swap-in's chunks and per-layer events on the copy stream, the program's launches and
//! per-layer waits on the compute stream. Plain code, so the ordering rules — a wait is issued
//! only after its event was recorded, a layer's event only after its last chunk, every chunk
//! once — are checked by unit tests; the CUDA device only carries the steps out.

use super::chunks::{Chunk, Cursor};
use crate::engine::program::{Op, Program};

/// One thing a device issues, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step<'a> {
    /// Record the job's start on the compute stream; the copy stream waits for it (so a copy
    /// never overwrites memory an earlier job still reads).
    Start,
    /// Write `program.inputs[i]` to the workspace (compute stream).
    Upload(usize),
    /// One chunk of the swap-in (copy stream).
    Copy(Chunk),
    /// Record layer `l`'s event after its last chunk (copy stream).
    LayerCopied(usize),
    /// Record the end-of-copy event after the last chunk (copy stream).
    AllCopied,
    /// The compute stream waits for layer `l`'s event.
    Await(usize),
    /// One order of the program (compute stream).
    Launch(&'a Op),
    /// All of the program's orders as one captured graph (compute stream; warm runs only).
    Replay,
    /// Read the output back once both streams have drained.
    Finish,
}

/// How a swap-in is issued: `eager` sources (page-locked host memory, a peer GPU) have every
/// chunk issued before the first launch; a pageable source is staged chunk by chunk on the
/// host, so its chunks are issued as execution reaches each layer.
pub struct Swap<'c> {
    pub chunks: &'c mut Cursor,
    pub eager: bool,
}

/// The steps of one job: `program`, with `swap` copied in underneath, or replayed as a graph
/// when `replay` (only without a swap).
pub fn steps<'a>(program: &'a Program, swap: Option<Swap<'_>>, replay: bool) -> Vec<Step<'a>> {
    let mut out = vec![Step::Start];
    out.extend((0..program.inputs.len()).map(Step::Upload));
    let Some(swap) = swap else {
        if replay {
            out.push(Step::Replay);
        } else {
            out.extend(program.ops.iter().filter(|o| !matches!(o, Op::WaitLayer(_))).map(Step::Launch));
        }
        out.push(Step::Finish);
        return out;
    };
    let issue = |out: &mut Vec<Step<'a>>, upto: usize, chunks: &mut Cursor| {
        let was_done = chunks.done();
        for &c in chunks.through(upto) {
            out.push(Step::Copy(c));
            if let Some(layer) = c.completes {
                out.push(Step::LayerCopied(layer));
            }
        }
        if chunks.done() && !was_done {
            out.push(Step::AllCopied);
        }
    };
    if swap.eager {
        issue(&mut out, usize::MAX, swap.chunks);
    }
    for op in &program.ops {
        match op {
            Op::WaitLayer(l) => {
                issue(&mut out, *l, swap.chunks);
                out.push(Step::Await(*l));
            }
            _ => out.push(Step::Launch(op)),
        }
    }
    // The whole model is resident afterwards, read or not.
    issue(&mut out, usize::MAX, swap.chunks);
    out.push(Step::Finish);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::engine::{fixture, Model, TokenBatch};
    use crate::gpu::chunks;

    /// Checks the stream rules on a step list and returns the launches in order.
    fn check<'a>(steps: &[Step<'a>], chunks: &[Chunk], total_bytes: usize) -> Vec<&'a Op> {
        assert_eq!(steps.first(), Some(&Step::Start));
        assert_eq!(steps.last(), Some(&Step::Finish));
        assert_eq!(steps.iter().filter(|s| **s == Step::Finish).count(), 1);
        let mut copied = 0usize;
        let mut recorded: HashSet<usize> = HashSet::new();
        let mut all = false;
        let mut launches = Vec::new();
        let mut last_chunk_layer = None;
        for s in steps {
            match *s {
                Step::Copy(c) => {
                    assert!(!all, "no chunk after the end-of-copy event");
                    assert_eq!(c.offset, copied, "chunks in order, each once");
                    copied += c.len;
                    last_chunk_layer = c.completes.or(last_chunk_layer);
                }
                Step::LayerCopied(l) => {
                    assert_eq!(last_chunk_layer, Some(l), "a layer's event follows its last chunk");
                    assert!(recorded.insert(l), "each layer's event once");
                }
                Step::AllCopied => {
                    assert_eq!(copied, total_bytes, "the end-of-copy event follows every chunk");
                    all = true;
                }
                Step::Await(l) => assert!(recorded.contains(&l), "a wait is issued after its event is recorded"),
                Step::Launch(op) => launches.push(op),
                _ => {}
            }
        }
        if !chunks.is_empty() {
            assert!(all && copied == total_bytes, "the whole model is copied");
        }
        launches
    }

    #[test]
    fn swaps_are_issued_in_order_with_every_wait_after_its_event() {
        let model = Model::load(&fixture("tiny_gpt2")).unwrap();
        let program = model.spec.forward_program(&TokenBatch::from_sequences(&[vec![1, 2, 3]]).unwrap(), &[]);
        let layers = &model.spec.layout.layers;
        let total = model.spec.layout.total_bytes();
        let plain: Vec<&Op> = program.ops.iter().filter(|o| !matches!(o, Op::WaitLayer(_))).collect();
        for chunk_bytes in [4096, 64 << 10, 64 << 20] {
            let planned = chunks::plan(layers, chunk_bytes);
            for eager in [true, false] {
                let mut cursor = Cursor::new(planned.clone());
                let s = steps(&program, Some(Swap { chunks: &mut cursor, eager }), false);
                assert_eq!(check(&s, &planned, total), plain, "every order once, in program order");
                let awaits = s.iter().filter(|x| matches!(x, Step::Await(_))).count();
                assert_eq!(awaits, layers.len(), "one wait per layer");
                let first_launch = s.iter().position(|x| matches!(x, Step::Launch(_))).unwrap();
                let copies_before = s[..first_launch].iter().filter(|x| matches!(x, Step::Copy(_))).count();
                if eager {
                    assert_eq!(copies_before, planned.len(), "eager sources issue every chunk first");
                } else {
                    // Staged: only layer 0's chunks before the first launch.
                    let layer0 = planned.iter().position(|c| c.completes == Some(0)).unwrap() + 1;
                    assert_eq!(copies_before, layer0, "pageable sources are staged as execution needs them");
                }
            }
        }
    }

    #[test]
    fn warm_runs_launch_or_replay_without_copies_or_waits() {
        let model = Model::load(&fixture("tiny_bert")).unwrap();
        let program = model.spec.forward_program(&TokenBatch::from_sequences(&[vec![1, 2]]).unwrap(), &[]);
        let eager = steps(&program, None, false);
        assert_eq!(check(&eager, &[], 0).len(), program.ops.len() - model.spec.layout.layers.len());
        assert!(!eager.iter().any(|s| matches!(s, Step::Copy(_) | Step::Await(_) | Step::Replay)));
        let replay = steps(&program, None, true);
        let uploads = program.inputs.len();
        assert_eq!(replay.len(), 1 + uploads + 2, "start, uploads, replay, finish");
        assert_eq!(replay[1 + uploads], Step::Replay);
    }
}
