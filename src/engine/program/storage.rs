//! Programs over half weights. A family writes its program without knowing how its matrices
//! are stored; `annotate` tells each embedding order its tables' dtype from the layout (every
//! device reads half tables row by row), and `widen` lowers a program for a device whose GEMMs
//! read F32 weights only: each half matrix a GEMM reads is widened into the workspace right
//! after its layer's wait, and the GEMM reads it there. A matrix read only within its own layer
//! shares one scratch region with the other layers' (the next layer's widening comes after the
//! last read, in stream order); one read again after a later wait (GPT-2's tied LM head reads
//! the embedding table at the end) keeps a region of its own.
//!
//! `native` lowers for the other way a GPU computes on half weights: each GEMM that reads a
//! half matrix rounds its activations to the matrix's dtype (`Op::Narrow`) and multiplies half
//! by half with F32 accumulation (`Gemm::inputs`: `cublasGemmStridedBatchedEx` on tensor
//! cores). The CPU executor runs the same orders with the same roundings, so CI checks what the
//! GPU computes and measures the error it makes against F32 compute.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Gemm, Op, Program, Ptr};
use crate::engine::layout::{TensorSlot, WeightLayout, ALIGN_ELEMS};

/// How products over half weights are computed (`settings.compute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compute {
    /// F32 arithmetic on the widened weights: the reference's results to F32 noise.
    #[default]
    F32,
    /// Half activations times half weights, F32 accumulation: faster on tensor cores, with
    /// the error of rounding each product's activations (BENCHMARKS.md has it per model).
    Native,
}

impl Compute {
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Native => "native",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Self::F32, Self::Native].into_iter().find(|c| c.name() == name)
    }
}

/// Sets each `Embed`'s table dtype from the layout.
pub fn annotate(program: &mut Program, layout: &WeightLayout) {
    for op in &mut program.ops {
        if let Op::Embed { word, tables, .. } = op {
            *tables = layout.tensor_at(*word).map_or(crate::engine::Dtype::F32, |t| t.dtype);
        }
    }
}

/// The half tensors GEMMs read: tensor start → (tensor, last op index reading it).
fn half_reads<'l>(program: &Program, layout: &'l WeightLayout) -> BTreeMap<usize, (&'l TensorSlot, usize)> {
    let mut reads = BTreeMap::new();
    for (i, op) in program.ops.iter().enumerate() {
        // A native GEMM reads its half operands itself.
        if let Op::Gemm(g) = op {
            if g.inputs.is_half() {
                continue;
            }
            for p in [g.a, g.b] {
                if let Ptr::W(o) = p {
                    if let Some(t) = layout.tensor_at(o).filter(|t| t.dtype.is_half()) {
                        assert_eq!(t.span.offset, o, "half tensor {} is addressed inside", t.name);
                        reads.insert(o, (t, i));
                    }
                }
            }
        }
    }
    reads
}

/// `program` with every GEMM that reads a half matrix of the weights as A run `native` (see the
/// module): its B rounded into a scratch region after the program's own, then one half × half
/// product. Anything else that reads half weights is widened as `widen` does.
pub fn native(program: &Program, layout: &WeightLayout) -> Program {
    let reads = half_reads(program, layout);
    if reads.is_empty() {
        return program.clone();
    }
    let base = program.work_elems.next_multiple_of(ALIGN_ELEMS);
    let mut scratch = 0;
    let mut ops = Vec::with_capacity(program.ops.len() * 2);
    for op in &program.ops {
        match op {
            Op::Gemm(g)
                if g.batch == 1 && matches!(g.b, Ptr::A(_)) && matches!(g.a, Ptr::W(o) if reads.contains_key(&o)) =>
            {
                let (Ptr::W(o), Ptr::A(b_at)) = (g.a, g.b) else { unreachable!("matched above") };
                let dtype = reads[&o].0.dtype;
                let (b_rows, b_cols) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
                let elems = (b_cols - 1) * g.ldb + b_rows;
                ops.push(Op::Narrow { src: b_at, elems, dtype, dst: base });
                scratch = scratch.max(dtype.slots(elems));
                ops.push(Op::Gemm(Gemm { b: Ptr::A(base), inputs: dtype, ..*g }));
            }
            other => ops.push(other.clone()),
        }
    }
    let lowered = Program { ops, work_elems: base + scratch.next_multiple_of(ALIGN_ELEMS), ..program.clone() };
    widen(&lowered, layout)
}

/// `program` with every half matrix a GEMM reads widened into the workspace (see the module).
/// A program that reads none comes back as it is.
pub fn widen(program: &Program, layout: &WeightLayout) -> Program {
    let reads = half_reads(program, layout);
    if reads.is_empty() {
        return program.clone();
    }
    let layer_of = |slot: usize| layout.layers.partition_point(|l| l.span.end() <= slot);
    // Where each layer's wait is, and where the next wait after it is.
    let waits: Vec<(usize, usize)> = program
        .ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| if let Op::WaitLayer(l) = op { Some((*l, i)) } else { None })
        .collect();
    let wait_of =
        |layer: usize| waits.iter().find(|(l, _)| *l == layer).map(|&(_, i)| i).expect("read layers are waited for");
    let next_wait = |after: usize| waits.iter().map(|&(_, i)| i).find(|&i| i > after).unwrap_or(usize::MAX);
    let aligned = |n: usize| n.next_multiple_of(ALIGN_ELEMS);
    let base = aligned(program.work_elems);

    // Scratch offsets per layer (shared), and persistent regions after the scratch.
    let mut in_layer: BTreeMap<usize, usize> = BTreeMap::new();
    let mut placed: BTreeMap<usize, (bool, usize)> = BTreeMap::new();
    let mut persistent = 0;
    for (&start, &(t, last)) in &reads {
        let elems: usize = t.shape.iter().product();
        let wait = wait_of(layer_of(start));
        if last < next_wait(wait) {
            let used = in_layer.entry(wait).or_default();
            placed.insert(start, (false, *used));
            *used += aligned(elems);
        } else {
            placed.insert(start, (true, persistent));
            persistent += aligned(elems);
        }
    }
    let scratch = in_layer.values().copied().max().unwrap_or(0);
    let region = |start: usize| {
        let (own, at) = placed[&start];
        base + if own { scratch + at } else { at }
    };

    let mut ops = Vec::with_capacity(program.ops.len() + reads.len());
    for (i, op) in program.ops.iter().enumerate() {
        match op {
            Op::Gemm(g) if !g.inputs.is_half() => {
                let mut g = *g;
                for p in [&mut g.a, &mut g.b] {
                    if let Ptr::W(o) = *p {
                        if reads.contains_key(&o) {
                            *p = Ptr::A(region(o));
                        }
                    }
                }
                ops.push(Op::Gemm(g));
            }
            other => ops.push(other.clone()),
        }
        if let Op::WaitLayer(_) = op {
            for (&start, &(t, _)) in reads.iter().filter(|(&s, _)| wait_of(layer_of(s)) == i) {
                let elems = t.shape.iter().product();
                ops.push(Op::Widen { src: start, elems, dtype: t.dtype, dst: region(start) });
            }
        }
    }
    Program { ops, work_elems: base + scratch + persistent, ..program.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::program::exec;
    use crate::engine::synth::{self, SynthDtype};
    use crate::engine::{fixture, Dtype, GenerateOptions, Model, TokenBatch};

    /// Whether any F32 GEMM of `program` reads a half matrix of the weights.
    fn reads_half(program: &Program, layout: &WeightLayout) -> bool {
        !half_reads(program, layout).is_empty()
    }

    fn run(model: &Model, p: &Program) -> Vec<f32> {
        let mut work = vec![0f32; p.work_elems];
        exec::run(p, &model.resident(), &model.spec.layout, &mut work).unwrap()
    }

    /// What the GPU runs (half matrices widened into the workspace) gives what the CPU runs
    /// (half matrices read block by block), for an encoder and for a decoder whose LM head
    /// reads the embedding table again at the end.
    #[test]
    fn widened_programs_answer_as_native_ones() {
        let dir = tempfile::tempdir().unwrap();
        synth::write_package(synth::preset("gpt2-nano").unwrap(), 5, SynthDtype::Bf16, dir.path(), &mut |_, _| {})
            .unwrap();
        let batch = TokenBatch::from_sequences(&[vec![3, 7, 11, 2, 5], vec![9, 4, 1]]).unwrap();
        for model in [Model::load(&fixture("tiny_bert_bf16")).unwrap(), Model::load(dir.path()).unwrap()] {
            assert_eq!(model.spec.layout.matrix_dtype(), Dtype::Bf16);
            let native = model.spec.forward_program(&batch, &[]);
            assert!(reads_half(&native, &model.spec.layout));
            let widened = widen(&native, &model.spec.layout);
            assert!(!reads_half(&widened, &model.spec.layout), "no GEMM reads half weights after widening");
            let widens = widened.ops.iter().filter(|o| matches!(o, Op::Widen { .. })).count();
            assert!(widens > 0);
            let d = crate::engine::max_abs_diff(&run(&model, &native), &run(&model, &widened));
            assert!(d <= 1e-6, "{}: widened differs by {d}", model.spec.dir.display());
            // Each layer's matrices share one scratch region: far less than the matrices.
            let half_elems: usize = model
                .spec
                .layout
                .tensors
                .iter()
                .filter(|t| t.dtype.is_half())
                .map(|t| t.shape.iter().product::<usize>())
                .sum();
            assert!(widened.work_elems - native.work_elems < half_elems, "scratch is shared");
        }
        // Generation through widened programs, as the CUDA back end runs it.
        let model = Model::load(dir.path()).unwrap();
        let opts = GenerateOptions { max_new_tokens: 6, ..Default::default() };
        let want = model.generate(&[5, 9, 2], &opts, &mut |_| true).unwrap();
        let mut work = vec![0f32; model.spec.widened_workspace_elems(1, 3, 9)];
        let got = model
            .spec
            .generate_with(&[5, 9, 2], &opts, &mut |_| true, &mut |p| {
                exec::run(&widen(p, &model.spec.layout), &model.resident(), &model.spec.layout, &mut work)
            })
            .unwrap();
        assert_eq!(got.tokens, want);
    }

    /// `native` rounds each weight product's activations to the weights' dtype: what the GPU's
    /// half × half products compute, within the error that rounding makes.
    #[test]
    fn native_programs_round_activations_and_stay_close() {
        let model = Model::load(&fixture("tiny_bert_bf16")).unwrap();
        let batch = TokenBatch::from_sequences(&[vec![3, 7, 11, 2, 5, 9, 40, 41], vec![9, 4, 1]]).unwrap();
        let exact = model.spec.forward_program(&batch, &[]);
        let lowered = native(&exact, &model.spec.layout);
        let narrows = lowered.ops.iter().filter(|o| matches!(o, Op::Narrow { .. })).count();
        let half_gemms = lowered.ops.iter().filter(|o| matches!(o, Op::Gemm(g) if g.inputs == Dtype::Bf16)).count();
        assert_eq!(narrows, half_gemms);
        assert_eq!(half_gemms, 2 * 4, "every weight product of both layers");
        assert!(!lowered.ops.iter().any(|o| matches!(o, Op::Widen { .. })), "nothing left to widen");
        let (a, b) = (run(&model, &exact), run(&model, &lowered));
        let d = crate::engine::max_abs_diff(&a, &b);
        let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let cos = dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt());
        assert!(d > 0.0 && d < 0.2, "rounded activations move the output a little: {d}");
        assert!(cos > 0.999, "cosine {cos}");
        // A model held in F32 has nothing to compute natively.
        let f32_model = Model::load(&fixture("tiny_bert")).unwrap();
        let p = f32_model.spec.forward_program(&batch, &[]);
        assert_eq!(native(&p, &f32_model.spec.layout), p);
    }

    #[test]
    fn narrowing_rounds_to_nearest_even() {
        // 1 + 2^-8 is halfway between two BF16 values: it rounds to the even one (1.0); a hair
        // above rounds up.
        assert_eq!(Dtype::Bf16.narrow(1.0 + 2f32.powi(-8)), 0x3f80);
        assert_eq!(Dtype::Bf16.narrow(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3f81);
        assert_eq!(Dtype::F16.narrow(65504.0), 0x7bff);
        assert_eq!(Dtype::F16.narrow(1e-7), 0x0002, "a subnormal");
        for x in [0.0f32, -1.5, 3.140625, 1e-3] {
            assert_eq!(Dtype::Bf16.widen(Dtype::Bf16.narrow(x)), half::bf16::from_f32(x).to_f32());
        }
    }

    #[test]
    fn a_model_in_f32_is_left_as_it_is() {
        let model = Model::load(&fixture("tiny_bert")).unwrap();
        let p = model.spec.forward_program(&TokenBatch::from_sequences(&[vec![1, 2]]).unwrap(), &[]);
        assert_eq!(widen(&p, &model.spec.layout), p);
    }
}
