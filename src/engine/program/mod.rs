//! Device programs: a forward pass written out as a flat list of kernel and GEMM orders over
//! two memory regions, the model's packed weights (`W`) and an activation workspace (`A`).
//! Every device executes the list as it is: the CUDA back end maps each order to one kernel
//! launch or one cuBLAS call, and `exec` runs it on the CPU with the same semantics — which is
//! how CI checks every offset, stride and transpose of the GPU path without a GPU.
//!
//! GEMMs follow cuBLAS exactly (column-major, `C = α·op(A)·op(B) + β·C`, strided batches).
//! Row-major tensors are passed as their column-major transposes, so `Y[n, out] = X[n, in] ·
//! W[in, out]` is the cuBLAS product `Yᵀ = Wᵀ·Xᵀ` with `m = out, n = rows, k = in`.

pub mod exec;
pub mod storage;

use super::config::Activation;
use super::layout::Dtype;

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
    Tanh,
}

impl From<Activation> for Act {
    fn from(a: Activation) -> Self {
        match a {
            Activation::GeluErf => Self::GeluErf,
            Activation::GeluTanh => Self::GeluTanh,
            Activation::Relu => Self::Relu,
            Activation::Tanh => Self::Tanh,
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
    /// How A and B are stored: F32, or both F16/BF16 (`cublasGemmStridedBatchedEx` with F32
    /// accumulation and an F32 C — the `native` compute of `storage::native`).
    pub inputs: Dtype,
}

impl Gemm {
    /// `Y[rows, out] = X[rows, in] · W[in, out]` with row-major `X` in the workspace and `W` in
    /// the weights stored `[in, out]` (`PlanBuilder::linear_in_out`, `Conv1D` files).
    pub fn linear_in_out(x: usize, rows: usize, in_dim: usize, w: usize, out_dim: usize, y: usize) -> Self {
        Self { trans_a: false, lda: out_dim, ..Self::linear(x, rows, in_dim, w, out_dim, y) }
    }

    /// `Y[rows, out] = X[rows, in] · Wᵀ` with row-major `X` in the workspace and `W[out, in]` in
    /// the weights (PyTorch's `Linear` layout): the cuBLAS product `Yᵀ = op(A)·Xᵀ` with A the
    /// column-major `[in, out]` view of W, transposed. Each output's weights are one row, so a
    /// product of a few tokens reads the matrix front to back.
    pub fn linear(x: usize, rows: usize, in_dim: usize, w: usize, out_dim: usize, y: usize) -> Self {
        Self {
            trans_a: true,
            trans_b: false,
            m: out_dim,
            n: rows,
            k: in_dim,
            alpha: 1.0,
            a: Ptr::W(w),
            lda: in_dim,
            stride_a: 0,
            b: Ptr::A(x),
            ldb: in_dim,
            stride_b: 0,
            beta: 0.0,
            c: y,
            ldc: out_dim,
            stride_c: 0,
            batch: 1,
            inputs: Dtype::F32,
        }
    }
}

/// Scaled dot-product attention of one sequence for every head: `out = softmax(q·kᵀ·scale)·v`.
/// Queries are rows of `q` (stride `q_ld`), keys and values rows of `k`/`v` (stride `kv_ld`);
/// query head `h` starts `h·head_dim` into a query row and reads key/value head `h / group`,
/// which starts `(h / group)·kv_head_stride` into the keys and values (`group` query heads share
/// one key/value head: grouped-query attention; 1 for multi-head). Key `j` counts when
/// `mask[j] != 0` (no mask: all), when causal, `j < kv_len - q_len + i + 1` for query `i`, and
/// with a sliding `window`, the last `window` of those only (see [`Op::Softmax`]). Writes
/// `out[row][h·head_dim..]` with row stride `out_ld`. `scores` is scratch for
/// `heads·q_len·kv_len` elements.
///
/// Devices run it as [`Attention::lower`] says (per query head of a group, two strided-batched
/// GEMMs around a softmax) or anything equal to it: the CPU runs consecutive attentions (a
/// batch's sequences) side by side, which the orders of each, sharing one `scores`, would forbid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attention {
    pub q: usize,
    pub q_ld: usize,
    pub k: usize,
    pub v: usize,
    pub kv_ld: usize,
    pub kv_head_stride: usize,
    pub heads: usize,
    pub group: usize,
    pub head_dim: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub mask: Option<usize>,
    pub causal: bool,
    pub window: Option<usize>,
    pub scores: usize,
    pub out: usize,
    pub out_ld: usize,
}

impl Attention {
    /// The orders the GPU launches: for each of the `group` query heads that share a key/value
    /// head, the heads `i, i + group, i + 2·group, …` (one per key/value head) as one batch of
    /// two strided GEMMs around a softmax.
    pub fn lower(&self) -> Vec<Op> {
        let &Self {
            q,
            q_ld,
            k,
            v,
            kv_ld,
            kv_head_stride,
            heads,
            group,
            head_dim: d,
            q_len,
            kv_len,
            mask,
            causal,
            window,
            scores,
            out,
            out_ld,
        } = self;
        let kv_heads = heads / group;
        let per_call = kv_heads * q_len * kv_len;
        (0..group)
            .flat_map(|i| {
                let scores = scores + i * per_call;
                [
                    // Scoresᵀ[kv, q] = Kᵀ[d, kv]ᵀ · Qᵀ[d, q], scaled.
                    Op::Gemm(Gemm {
                        trans_a: true,
                        trans_b: false,
                        m: kv_len,
                        n: q_len,
                        k: d,
                        alpha: 1.0 / (d as f32).sqrt(),
                        a: Ptr::A(k),
                        lda: kv_ld,
                        stride_a: kv_head_stride,
                        b: Ptr::A(q + i * d),
                        ldb: q_ld,
                        stride_b: group * d,
                        beta: 0.0,
                        c: scores,
                        ldc: kv_len,
                        stride_c: q_len * kv_len,
                        batch: kv_heads,
                        inputs: Dtype::F32,
                    }),
                    Op::Softmax { scores, heads: kv_heads, q_len, kv_len, mask, causal, window },
                    // Outᵀ[d, q] = Vᵀ[d, kv] · Pᵀ[kv, q].
                    Op::Gemm(Gemm {
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
                        c: out + i * d,
                        ldc: out_ld,
                        stride_c: group * d,
                        batch: kv_heads,
                        inputs: Dtype::F32,
                    }),
                ]
            })
            .collect()
    }
}

/// One order of a device program. Offsets are in `f32` elements; `A` offsets name the
/// workspace, `W` offsets the weights. Inputs (token ids, masks) sit in the workspace as `u32`.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Execution must not read layer `l`'s weights before this point; while the model is being
    /// copied in, the compute stream waits here for the copy of that layer.
    WaitLayer(usize),
    /// `out[r] = word[ids[r]] (+ pos[start + r % t]) (+ token_type[types[r]])`, rows of `width`;
    /// the tables are stored in `tables` (F32, or F16/BF16 read and widened row by row). Models
    /// with rotary positions have no position table.
    Embed {
        ids: usize,
        types: Option<usize>,
        word: usize,
        pos: Option<usize>,
        token_type: Option<usize>,
        tables: Dtype,
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
    /// RMSNorm: `out = x / √(mean(x²) + eps) · gamma` over vectors of `width`: `rows` rows of
    /// `vectors` consecutive vectors each, rows `ld` apart, in `x` and `out` alike (one vector per
    /// row for a model's hidden states; a row's attention heads for Qwen3's per-head norms).
    /// `out` may be `x`.
    RmsNorm {
        x: usize,
        rows: usize,
        ld: usize,
        vectors: usize,
        width: usize,
        gamma: usize,
        eps: f32,
        out: usize,
    },
    /// Rotary position embedding, in place, on `vectors` consecutive head vectors of `head_dim`
    /// at the start of each of `rows` rows (`ld` apart): row `r` is at position `start + r % t`,
    /// and pair `(i, i + head_dim/2)` turns by `position · inv_freq[i]` (the `rotate_half`
    /// convention), angles and their sines and cosines in F32. `inv_freq` is `head_dim/2` F32
    /// values in the workspace (a program input).
    Rope {
        x: usize,
        rows: usize,
        ld: usize,
        vectors: usize,
        head_dim: usize,
        t: usize,
        start: usize,
        inv_freq: usize,
    },
    /// SwiGLU: `out[r, i] = silu(x[r, i]) · x[r, width + i]` for `x[rows, 2·width]` (gate, then
    /// up), `out[rows, width]` elsewhere.
    SiluMul {
        x: usize,
        rows: usize,
        width: usize,
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
    /// `mask[j] != 0` (no mask: all) and, when causal, `j < kv_len - q_len + i + 1` for query `i`
    /// — and, with a sliding `window`, `j ≥ kv_len - q_len + i + 1 - window`; keys that do not
    /// count get 0. A row with no key that counts becomes uniform over the visible keys (what
    /// the CPU engine does).
    Softmax {
        scores: usize,
        heads: usize,
        q_len: usize,
        kv_len: usize,
        mask: Option<usize>,
        causal: bool,
        window: Option<usize>,
    },
    Attention(Attention),
    /// Appends the keys and values of `t` new rows per batch item of `qkv[batch·t, (q_heads +
    /// 2·heads)·d]` (queries, then keys, then values) to caches laid out `[batch, heads,
    /// capacity, d]`, at positions `start..start + t`. `heads` counts the key/value heads.
    KvAppend {
        qkv: usize,
        k: usize,
        v: usize,
        batch: usize,
        t: usize,
        q_heads: usize,
        heads: usize,
        head_dim: usize,
        capacity: usize,
        start: usize,
    },
    /// Widens `elems` F16/BF16 elements of the weights (the half tensor at slot `src`) into the
    /// workspace at `dst`, exactly. Devices whose kernels read F32 weights only run a program
    /// lowered by `storage::widen`, which adds these after each layer's wait.
    Widen {
        src: usize,
        elems: usize,
        dtype: Dtype,
        dst: usize,
    },
    /// Rounds `elems` F32 values of the workspace at `src` to F16/BF16 (to nearest, ties to
    /// even) at `dst`, two to a slot: the activations a `native` GEMM reads.
    Narrow {
        src: usize,
        elems: usize,
        dtype: Dtype,
        dst: usize,
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::exec::{self, Resident};
    use super::*;
    use crate::engine::synth::{self, SynthDtype};
    use crate::engine::{fixture, GenerateOptions, Model, SamplingParams, TokenBatch};

    fn synthetic(preset: &str, dir: &Path) -> Model {
        let p = synth::preset(preset).unwrap();
        synth::write_package(p, 11, SynthDtype::F32, dir, &mut |_, _| {}).unwrap();
        Model::load(dir).unwrap()
    }

    /// Right padding, and left padding (the first query of the first sequence sees no key but
    /// padding): each sequence of the batch answers as it does alone, and nothing is NaN.
    fn check_batches_equal_single_runs(model: &Model, tol: f32) {
        let vocab = model.spec.arch.vocab_size() as u32;
        let seqs = vec![vec![3 % vocab, 7 % vocab, 11 % vocab, 2, 5 % vocab], vec![9 % vocab, 4, 1]];
        let right = TokenBatch::from_sequences(&seqs).unwrap();
        let left = TokenBatch::from_tensors(
            2,
            3,
            vec![0, 5, 6, 7, 8, 9],
            Some(vec![false, true, true, true, true, true]),
            None,
        )
        .unwrap();
        for (batch, alone) in [(right, seqs), (left, vec![vec![5, 6], vec![7, 8, 9]])] {
            let kind = model.spec.default_outputs()[0];
            let out = &model.infer(&batch, &[kind]).unwrap()[0];
            assert!(out.data.iter().all(|x| x.is_finite()), "{}: not finite", out.name);
            let width = out.data.len() / (batch.batch * batch.seq);
            for (b, seq) in alone.iter().enumerate() {
                let single =
                    &model.infer(&TokenBatch::from_sequences(std::slice::from_ref(seq)).unwrap(), &[kind]).unwrap()[0];
                // The attended positions of row b (the last `len` for left padding).
                let positions: Vec<usize> = (0..batch.seq).filter(|&p| batch.mask[b * batch.seq + p]).collect();
                for (i, &p) in positions.iter().enumerate() {
                    let got = &out.data[(b * batch.seq + p) * width..][..width];
                    let want = &single.data[i * width..][..width];
                    // Positions past the first differ in where they sit (left padding shifts
                    // them); compare right-padded rows exactly, left-padded ones only when
                    // the model ignores positions of padding (not these families): skip.
                    if positions[0] == 0 {
                        let d = crate::engine::max_abs_diff(got, want);
                        assert!(d < tol, "{}: row {b} position {p} differs by {d}", model.spec.dir.display());
                    }
                }
            }
        }
    }

    #[test]
    fn bert_batches_answer_as_their_sequences_alone() {
        check_batches_equal_single_runs(&Model::load(&fixture("tiny_bert")).unwrap(), 1e-4);
        let dir = tempfile::tempdir().unwrap();
        check_batches_equal_single_runs(&synthetic("bert-nano", dir.path()), 1e-4);
    }

    #[test]
    fn gpt2_batches_answer_as_their_sequences_alone() {
        check_batches_equal_single_runs(&Model::load(&fixture("tiny_gpt2")).unwrap(), 1e-4);
        let dir = tempfile::tempdir().unwrap();
        check_batches_equal_single_runs(&synthetic("gpt2-nano", dir.path()), 1e-4);
    }

    #[test]
    fn generation_is_one_prefill_and_one_program_per_further_token() {
        let model = Model::load(&fixture("tiny_gpt2")).unwrap();
        let prompt = [5, 9, 2];
        for sampling in
            [SamplingParams::default(), SamplingParams { temperature: Some(0.8), seed: Some(3), ..Default::default() }]
        {
            let opts = GenerateOptions { max_new_tokens: 12, sampling, stop_at_eos: false };
            let want = model.generate(&prompt, &opts, &mut |_| true).unwrap();
            let mut programs = 0;
            let mut work = vec![0f32; model.spec.workspace_elems(1, prompt.len(), prompt.len() + 12)];
            let got = model
                .spec
                .generate_with(&prompt, &opts, &mut |_| true, &mut |p| {
                    programs += 1;
                    exec::run(p, &model.resident(), &model.spec.layout, &mut work)
                })
                .unwrap();
            assert_eq!(got.tokens, want);
            assert_eq!(programs, 12, "one prefill and one step per further token");
        }
    }

    /// The CPU runs a batch's attentions side by side; the GPU launches each one's lowering.
    /// Both must give the same result for every family (right and left padding, prefill and
    /// decode with a cache).
    #[test]
    fn attention_runs_as_its_lowering_does() {
        let lowered = |p: &Program| Program {
            ops: p
                .ops
                .iter()
                .flat_map(|o| match o {
                    Op::Attention(at) => at.lower().to_vec(),
                    other => vec![other.clone()],
                })
                .collect(),
            ..p.clone()
        };
        let left = TokenBatch::from_tensors(
            2,
            4,
            vec![0, 5, 6, 7, 8, 9, 3, 1],
            Some(vec![false, true, true, true, true, true, true, true]),
            None,
        )
        .unwrap();
        let right = TokenBatch::from_sequences(&[vec![3, 7, 11, 2, 5], vec![9, 4, 1]]).unwrap();
        for name in ["tiny_bert", "tiny_gpt2"] {
            let model = Model::load(&fixture(name)).unwrap();
            for batch in [&left, &right] {
                let program = model.spec.forward_program(batch, &[]);
                let attentions = program.ops.iter().filter(|o| matches!(o, Op::Attention(_))).count();
                assert!(attentions >= 2 * batch.batch, "{name}: one attention per sequence and layer");
                let run = |p: &Program| {
                    let mut work = vec![0f32; p.work_elems];
                    exec::run(p, &model.resident(), &model.spec.layout, &mut work).unwrap()
                };
                let (native, reference) = (run(&program), run(&lowered(&program)));
                let d = crate::engine::max_abs_diff(&native, &reference);
                assert!(d < 1e-5, "{name}: side by side differs from the lowering by {d}");
            }
        }
    }

    #[test]
    fn every_weight_read_follows_its_layer_wait() {
        // The executor panics on a read before the layer's wait; a program that waited for
        // nothing must therefore fail, and the real one pass (checked above).
        let model = Model::load(&fixture("tiny_bert")).unwrap();
        let batch = TokenBatch::from_sequences(&[vec![1, 2]]).unwrap();
        let mut program = model.spec.forward_program(&batch, &[]);
        let waits = program.ops.iter().filter(|o| matches!(o, Op::WaitLayer(_))).count();
        assert_eq!(waits, model.spec.layout.layers.len(), "one wait per layer");
        program.ops.retain(|o| !matches!(o, Op::WaitLayer(_)));
        let mut work = vec![0f32; program.work_elems];
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            exec::run(&program, &Resident::new(model.weights(), &model.spec.layout), &model.spec.layout, &mut work)
        }));
        assert!(result.is_err(), "reading unwaited weights must fail");
    }
}
