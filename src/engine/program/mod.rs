//! Device programs: a forward pass written out as a flat list of kernel and GEMM orders over
//! two memory regions, the model's packed weights (`W`) and an activation workspace (`A`).
//! Accelerator back ends execute the list as it is (the CUDA back end maps each order to one
//! kernel launch or one cuBLAS call); `twin` executes it on the CPU with the same semantics,
//! which is how CI checks every offset, stride and transpose of the GPU path without a GPU.
//!
//! GEMMs follow cuBLAS exactly (column-major, `C = α·op(A)·op(B) + β·C`, strided batches).
//! Row-major tensors are passed as their column-major transposes, so `Y[n, out] = X[n, in] ·
//! W[in, out]` is the cuBLAS product `Yᵀ = Wᵀ·Xᵀ` with `m = out, n = rows, k = in`.

mod bert;
mod gpt2;
#[cfg(test)]
pub mod twin;

pub use bert::bert_forward;
pub use gpt2::{gpt2_forward, Gpt2Pass, LogitRows};

use super::config::Activation;

/// An operand of a GEMM: an element offset into the weights or into the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ptr {
    W(usize),
    A(usize),
}

/// The activation applied by [`Op::BiasAct`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    None,
    GeluErf,
    GeluTanh,
    Relu,
}

impl From<Activation> for Act {
    fn from(a: Activation) -> Self {
        match a {
            Activation::GeluErf => Self::GeluErf,
            Activation::GeluTanh => Self::GeluTanh,
            Activation::Relu => Self::Relu,
        }
    }
}

/// One `cublasSgemmStridedBatched` call; matrices are column-major with leading dimensions
/// `ld*`, batch `i` of each operand starts `i·stride*` elements after the first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub a: Ptr,
    pub lda: usize,
    pub stride_a: usize,
    pub b: Ptr,
    pub ldb: usize,
    pub stride_b: usize,
    pub beta: f32,
    /// Workspace offset of C.
    pub c: usize,
    pub ldc: usize,
    pub stride_c: usize,
    pub batch: usize,
}

impl Gemm {
    /// `Y[rows, out] = X[rows, in] · W[in, out]` with row-major `X` in the workspace and `W` in
    /// the weights (stored `[in, out]`, see `layout::Source::Transposed`).
    pub fn linear(x: usize, rows: usize, in_dim: usize, w: usize, out_dim: usize, y: usize) -> Self {
        Self {
            trans_a: false,
            trans_b: false,
            m: out_dim,
            n: rows,
            k: in_dim,
            alpha: 1.0,
            a: Ptr::W(w),
            lda: out_dim,
            stride_a: 0,
            b: Ptr::A(x),
            ldb: in_dim,
            stride_b: 0,
            beta: 0.0,
            c: y,
            ldc: out_dim,
            stride_c: 0,
            batch: 1,
        }
    }
}

/// One order of a device program. Offsets are in `f32` elements; `A` offsets name the
/// workspace, `W` offsets the weights. Inputs (token ids, masks) sit in the workspace as `u32`.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Execution must not read layer `l`'s weights before this point; while the model is being
    /// copied in, the compute stream waits here for the copy of that layer.
    WaitLayer(usize),
    /// `out[r] = word[ids[r]] + pos[start + r % t] (+ token_type[types[r]])`, rows of `width`.
    Embed {
        ids: usize,
        types: Option<usize>,
        word: usize,
        pos: usize,
        token_type: Option<usize>,
        rows: usize,
        t: usize,
        start: usize,
        width: usize,
        out: usize,
    },
    /// `out = LayerNorm(x (+ bias) (+ residual))` per row; `out` may be `x` or `residual`.
    LayerNorm {
        x: usize,
        bias: Option<usize>,
        residual: Option<usize>,
        gamma: usize,
        beta: usize,
        rows: usize,
        width: usize,
        eps: f32,
        out: usize,
    },
    Gemm(Gemm),
    /// `out = act(x + bias) (+ residual)` elementwise over `[rows, width]`; `out` may alias.
    BiasAct {
        x: usize,
        bias: usize,
        rows: usize,
        width: usize,
        act: Act,
        residual: Option<usize>,
        out: usize,
    },
    /// Softmax of each score row `[heads][q_len][kv_len]` in place. Key `j` counts when
    /// `mask[j] != 0` (no mask: all) and, when causal, `j < kv_len - q_len + i + 1` for query `i`;
    /// keys that do not count get 0. A row with no key that counts becomes uniform over the
    /// visible keys (what the CPU engine does).
    Softmax {
        scores: usize,
        heads: usize,
        q_len: usize,
        kv_len: usize,
        mask: Option<usize>,
        causal: bool,
    },
    /// Appends the keys and values of `t` new rows per batch item of `qkv[batch·t, 3·heads·d]`
    /// to caches laid out `[batch, heads, capacity, d]`, at positions `start..start + t`.
    KvAppend {
        qkv: usize,
        k: usize,
        v: usize,
        batch: usize,
        t: usize,
        heads: usize,
        head_dim: usize,
        capacity: usize,
        start: usize,
    },
    /// Zeroes the rows of `x[rows, width]` whose `mask` is 0 (padding in BERT's output).
    ZeroRows {
        x: usize,
        mask: usize,
        rows: usize,
        width: usize,
    },
}

/// A forward pass ready to run: upload `inputs`, run `ops`, read `output` back.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub ops: Vec<Op>,
    /// Workspace elements the program touches.
    pub work_elems: usize,
    /// `u32` words written to the workspace at an offset before the run.
    pub inputs: Vec<(usize, Vec<u32>)>,
    /// Workspace offset and length of the result.
    pub output: (usize, usize),
}

impl Program {
    /// Workspace bytes the program needs.
    pub fn work_bytes(&self) -> u64 {
        self.work_elems as u64 * 4
    }
}

/// Hands out workspace offsets, each region aligned like the weight layout (256 bytes).
#[derive(Debug, Default)]
pub(crate) struct Regions {
    next: usize,
}

impl Regions {
    pub(crate) fn take(&mut self, elems: usize) -> usize {
        let at = self.next;
        self.next += elems.div_ceil(super::layout::ALIGN_ELEMS) * super::layout::ALIGN_ELEMS;
        at
    }

    pub(crate) fn used(&self) -> usize {
        self.next
    }
}

/// Attention of one sequence's queries over its keys for every head, as two strided-batched
/// GEMMs around a softmax. Queries are rows of `q` (stride `q_ld`), keys and values rows of
/// `k`/`v` (stride `kv_ld`); head `h` starts `h·d` into a query row and `h·kv_head_stride` into
/// the keys and values. Writes `out[row][h·d..]` with row stride `out_ld`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_ops(
    ops: &mut Vec<Op>,
    (q, q_ld): (usize, usize),
    (k, v, kv_ld, kv_head_stride): (usize, usize, usize, usize),
    (heads, d, q_len, kv_len): (usize, usize, usize, usize),
    scores: usize,
    mask: Option<usize>,
    causal: bool,
    (out, out_ld): (usize, usize),
) {
    // Scoresᵀ[kv, q] = Kᵀ[d, kv]ᵀ · Qᵀ[d, q], scaled.
    ops.push(Op::Gemm(Gemm {
        trans_a: true,
        trans_b: false,
        m: kv_len,
        n: q_len,
        k: d,
        alpha: 1.0 / (d as f32).sqrt(),
        a: Ptr::A(k),
        lda: kv_ld,
        stride_a: kv_head_stride,
        b: Ptr::A(q),
        ldb: q_ld,
        stride_b: d,
        beta: 0.0,
        c: scores,
        ldc: kv_len,
        stride_c: q_len * kv_len,
        batch: heads,
    }));
    ops.push(Op::Softmax { scores, heads, q_len, kv_len, mask, causal });
    // Outᵀ[d, q] = Vᵀ[d, kv] · Pᵀ[kv, q].
    ops.push(Op::Gemm(Gemm {
        trans_a: false,
        trans_b: false,
        m: d,
        n: q_len,
        k: kv_len,
        alpha: 1.0,
        a: Ptr::A(v),
        lda: kv_ld,
        stride_a: kv_head_stride,
        b: Ptr::A(scores),
        ldb: kv_len,
        stride_b: q_len * kv_len,
        beta: 0.0,
        c: out,
        ldc: out_ld,
        stride_c: d,
        batch: heads,
    }));
}

/// `out = act(x · W + b) (+ residual)` over `rows` rows of `x`: the GEMM writes `y`, then one
/// elementwise order adds the bias, applies the activation and adds the residual into `out`.
pub(crate) fn dense(
    ops: &mut Vec<Op>,
    (x, rows, in_dim): (usize, usize, usize),
    (w, b): (usize, usize),
    (y, out_dim): (usize, usize),
    act: Act,
    residual: Option<usize>,
    out: usize,
) {
    ops.push(Op::Gemm(Gemm::linear(x, rows, in_dim, w, out_dim, y)));
    ops.push(Op::BiasAct { x: y, bias: b, rows, width: out_dim, act, residual, out });
}

/// `u32` words of a boolean mask.
pub(crate) fn mask_words(mask: &[bool]) -> Vec<u32> {
    mask.iter().map(|&m| u32::from(m)).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::engine::synth::{self, SynthDtype};
    use crate::engine::{fixture, GenerateOptions, Model, OutputKind, SamplingParams, TokenBatch};

    fn synthetic(preset: &str, dir: &Path) -> Model {
        let p = synth::preset(preset).unwrap();
        synth::write_package(p, 11, SynthDtype::F32, dir, &mut |_, _| {}).unwrap();
        Model::load(dir).unwrap()
    }

    /// The program's output, through the same output assembly as the CPU engine.
    fn twin_infer(model: &Model, batch: &TokenBatch, outputs: &[OutputKind]) -> Vec<crate::engine::OutputTensor> {
        let program = model.spec.forward_program(batch);
        let data = twin::run(&program, model.weights(), &model.spec.layout.layers);
        model.spec.outputs_of(batch, outputs, data)
    }

    fn padded_batch(vocab: u32) -> TokenBatch {
        let seqs = vec![vec![3 % vocab, 7 % vocab, 11 % vocab, 2, 5 % vocab], vec![9 % vocab, 4, 1]];
        TokenBatch::from_sequences(&seqs).unwrap()
    }

    /// Padding on the left, as clients batch prompts for a decoder: the first query of the
    /// first sequence sees no key but padding.
    fn left_padded_batch() -> TokenBatch {
        let mask = vec![false, true, true, true, true, true];
        TokenBatch::from_tensors(2, 3, vec![0, 5, 6, 7, 8, 9], Some(mask), None).unwrap()
    }

    fn check_matches_engine(model: &Model, tol: f32) {
        let vocab = model.spec.config.vocab_size() as u32;
        for batch in
            [TokenBatch::from_sequences(&[vec![1, 2, 3, 4]]).unwrap(), padded_batch(vocab), left_padded_batch()]
        {
            let outputs = model.spec.outputs();
            let want = model.infer(&batch, &outputs).unwrap();
            let got = twin_infer(model, &batch, &outputs);
            for (w, g) in want.iter().zip(&got) {
                assert_eq!((&w.name, &w.shape), (&g.name, &g.shape));
                assert!(w.data.iter().chain(&g.data).all(|x| x.is_finite()), "{}: not finite", w.name);
                let d = crate::engine::max_abs_diff(&w.data, &g.data);
                assert!(d < tol, "{}: {} differs by {d}", model.spec.dir.display(), w.name);
            }
        }
    }

    #[test]
    fn bert_programs_match_the_cpu_engine() {
        check_matches_engine(&Model::load(&fixture("tiny_bert")).unwrap(), 1e-4);
        let dir = tempfile::tempdir().unwrap();
        check_matches_engine(&synthetic("bert-nano", dir.path()), 1e-4);
    }

    #[test]
    fn gpt2_programs_match_the_cpu_engine() {
        check_matches_engine(&Model::load(&fixture("tiny_gpt2")).unwrap(), 1e-4);
        let dir = tempfile::tempdir().unwrap();
        check_matches_engine(&synthetic("gpt2-nano", dir.path()), 1e-4);
    }

    #[test]
    fn generation_through_programs_matches_the_cpu_engine() {
        let model = Model::load(&fixture("tiny_gpt2")).unwrap();
        let prompt = [5, 9, 2];
        for sampling in
            [SamplingParams::default(), SamplingParams { temperature: Some(0.8), seed: Some(3), ..Default::default() }]
        {
            let opts = GenerateOptions { max_new_tokens: 12, sampling, stop_at_eos: false };
            let want = model.generate(&prompt, &opts, &mut |_| true).unwrap();
            let mut programs = 0;
            let mut device = twin::Workspace::default();
            let got = model
                .spec
                .generate_with(&prompt, &opts, &mut |_| true, &mut |p| {
                    programs += 1;
                    Ok(device.run(p, model.weights(), &model.spec.layout.layers))
                })
                .unwrap();
            assert_eq!(got, want);
            assert_eq!(programs, 12, "one prefill and one step per further token");
        }
    }

    #[test]
    fn every_weight_read_follows_its_layer_wait() {
        // The twin panics on a read before the layer's wait; a program that waited for nothing
        // must therefore fail, and the real one pass (checked above).
        let model = Model::load(&fixture("tiny_bert")).unwrap();
        let batch = TokenBatch::from_sequences(&[vec![1, 2]]).unwrap();
        let mut program = model.spec.forward_program(&batch);
        let waits = program.ops.iter().filter(|o| matches!(o, Op::WaitLayer(_))).count();
        assert_eq!(waits, model.spec.layout.layers.len(), "one wait per layer");
        program.ops.retain(|o| !matches!(o, Op::WaitLayer(_)));
        let layers = model.spec.layout.layers.clone();
        let weights = model.weights().to_vec();
        let result = std::panic::catch_unwind(move || twin::run(&program, &weights, &layers));
        assert!(result.is_err(), "reading unwaited weights must fail");
    }
}
