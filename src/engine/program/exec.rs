//! Runs a [`Program`] on the CPU: every order with the semantics the CUDA back end gives it
//! (column-major cuBLAS GEMMs, the kernels' rules for masks and padding), over the model's
//! packed weights and a workspace reserved once. This is how the `cpu` device and the command
//! line run every family, so the programs the GPU runs are the ones CI checks against the
//! reference fixtures. It enforces the swap-in contract: a weight read before its layer's
//! `WaitLayer` panics, and `WaitLayer` blocks until the layer has arrived (`WeightSource`).

use std::ops::Range;

use rayon::prelude::*;

use super::{Act, Attention, Gemm, Op, Program, Ptr};
use crate::engine::error::{EngineError, Result};
use crate::engine::layout::{Dtype, LayerSpan, TensorSlot, WeightLayout};
use crate::engine::matmul::{matmul, MatMut, MatRef, Threads};
use crate::engine::ops;
use crate::engine::skinny;

/// Where a program reads weights from: each layer's elements, once they are in place.
pub trait WeightSource: Sync {
    /// Elements of the whole packed buffer.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Layer `l`'s elements; blocks until the layer has arrived.
    fn layer(&self, l: usize) -> &[f32];
}

/// A resident model: the whole packed buffer, split into its layers.
pub struct Resident<'a> {
    pub weights: &'a [f32],
    pub layers: &'a [LayerSpan],
}

impl<'a> Resident<'a> {
    pub fn new(weights: &'a [f32], layout: &'a crate::engine::WeightLayout) -> Self {
        Self { weights, layers: &layout.layers }
    }
}

impl WeightSource for Resident<'_> {
    fn len(&self) -> usize {
        self.weights.len()
    }

    fn layer(&self, l: usize) -> &[f32] {
        let s = self.layers[l].span;
        &self.weights[s.offset..s.end()]
    }
}

/// Elementwise work below this many elements stays on the calling thread.
const PARALLEL_ELEMS: usize = 1 << 15;

/// Batched products below this many multiply-adds in all run one after another.
const PARALLEL_MACS: usize = 1 << 20;

/// Runs `program` on `weights` (laid out as `layout` says) in `work`, which must hold at least
/// `program.work_elems` elements, and returns the program's output.
pub fn run(program: &Program, weights: &dyn WeightSource, layout: &WeightLayout, work: &mut [f32]) -> Result<Vec<f32>> {
    let layers = layout.layers.as_slice();
    if work.len() < program.work_elems {
        return Err(EngineError::WorkspaceTooSmall { needed: program.work_bytes(), available: work.len() as u64 * 4 });
    }
    let work = &mut work[..program.work_elems];
    for (at, words) in &program.inputs {
        for (slot, &w) in work[*at..*at + words.len()].iter_mut().zip(words) {
            *slot = f32::from_bits(w);
        }
    }
    let mut ex = Executor { source: weights, layout, layers, arrived: vec![None; layers.len()], a: work };
    let mut ops = program.ops.as_slice();
    while let Some(op) = ops.first() {
        // A run of attentions (one per sequence of the batch) goes side by side.
        let run = ops.iter().take_while(|o| matches!(o, Op::Attention(_))).count();
        if run > 0 {
            let group: Vec<&Attention> =
                ops[..run].iter().map(|o| if let Op::Attention(at) = o { at } else { unreachable!() }).collect();
            ex.attention(&group);
            ops = &ops[run..];
        } else {
            ex.exec(op);
            ops = &ops[1..];
        }
    }
    let (at, len) = program.output;
    Ok(ex.a[at..at + len].to_vec())
}

struct Executor<'w, 'a> {
    source: &'w dyn WeightSource,
    layout: &'w WeightLayout,
    layers: &'w [LayerSpan],
    /// The layers waited for, as `WaitLayer` fetched them.
    arrived: Vec<Option<&'w [f32]>>,
    a: &'a mut [f32],
}

/// Splits `buf` into the mutable range `w` and shared views of `reads`, each of which lies
/// wholly before or after `w` (`None` where a read is `w` itself: the caller reads the output).
fn carve<'b, const N: usize>(
    buf: &'b mut [f32],
    w: Range<usize>,
    reads: [Range<usize>; N],
) -> (&'b mut [f32], [Option<&'b [f32]>; N]) {
    let (lo, rest) = buf.split_at_mut(w.start);
    let (mid, hi) = rest.split_at_mut(w.len());
    let (lo, hi): (&'b [f32], &'b [f32]) = (lo, hi);
    let views = reads.map(|r| {
        if r == w {
            None
        } else if r.end <= w.start {
            Some(&lo[r])
        } else if r.start >= w.end {
            Some(&hi[r.start - w.end..r.end - w.end])
        } else {
            panic!("workspace range {r:?} overlaps the output {w:?}")
        }
    });
    (mid, views)
}

impl<'w> Executor<'w, '_> {
    /// `len` weight elements from `offset`, which must lie in one layer already waited for.
    fn w(&self, offset: usize, len: usize) -> &'w [f32] {
        let l = self.layers.partition_point(|l| l.span.end() <= offset);
        let span =
            self.layers.get(l).map(|l| l.span).unwrap_or_else(|| panic!("weight offset {offset} is past the model"));
        assert!(offset + len <= span.end(), "weights {offset}..{} cross layer {l}", offset + len);
        let layer = self.arrived[l].unwrap_or_else(|| panic!("weights of layer {l} are read before its wait"));
        &layer[offset - span.offset..offset - span.offset + len]
    }

    fn word(&self, i: usize) -> u32 {
        self.a[i].to_bits()
    }

    /// The stored tensor starting at weight slot `offset` when it is F16 or BF16. A program
    /// addresses a half tensor only at its start (nothing indexes into it by element).
    fn half_at(&self, offset: usize) -> Option<&'w TensorSlot> {
        let t = self.layout.tensor_at(offset).filter(|t| t.dtype.is_half())?;
        assert_eq!(t.span.offset, offset, "half tensor {} is addressed inside, at slot {offset}", t.name);
        Some(t)
    }

    /// The first `elems` elements of the half tensor at slot `offset`, as stored bits.
    fn w_half(&self, offset: usize, dtype: Dtype, elems: usize) -> &'w [u16] {
        &bytemuck::cast_slice(self.w(offset, dtype.slots(elems)))[..elems]
    }

    /// Rows `0..rows` of an embedding table, as `f32` rows of `width` (widened when stored
    /// half), read by `f`.
    fn table(&self, offset: usize, dtype: Dtype, rows: usize, width: usize) -> Table<'w> {
        assert_eq!(self.layout.tensor_at(offset).map_or(Dtype::F32, |t| t.dtype), dtype, "table dtype");
        match dtype {
            Dtype::F32 => Table::F32(self.w(offset, rows * width)),
            half => Table::Half(half, self.w_half(offset, half, rows * width)),
        }
    }

    fn exec(&mut self, op: &Op) {
        match *op {
            Op::WaitLayer(l) => self.arrived[l] = Some(self.source.layer(l)),
            Op::Embed { ids, types, word, pos, token_type, tables, rows, t, start, width, out } => {
                let ids: Vec<usize> = (0..rows).map(|r| self.word(ids + r) as usize).collect();
                let types: Option<Vec<usize>> = types.map(|ty| (0..rows).map(|r| self.word(ty + r) as usize).collect());
                let max_id = ids.iter().copied().max().unwrap_or(0);
                let word_table = self.table(word, tables, max_id + 1, width);
                let max_pos = start + rows.min(t).saturating_sub(1);
                let pos_table = pos.map(|pos| self.table(pos, tables, max_pos + 1, width));
                let tt_table = match (&types, token_type) {
                    (Some(ty), Some(tt)) => {
                        Some(self.table(tt, tables, ty.iter().copied().max().unwrap_or(0) + 1, width))
                    }
                    _ => None,
                };
                let o = &mut self.a[out..out + rows * width];
                o.par_chunks_mut(width).enumerate().with_min_len(16).for_each(|(r, row)| {
                    let (id, p) = (ids[r], start + r % t);
                    word_table.row(id, width, row, false);
                    if let Some(pos_table) = &pos_table {
                        pos_table.row(p, width, row, true);
                    }
                    if let (Some(tt), Some(ty)) = (&tt_table, &types) {
                        tt.row(ty[r], width, row, true);
                    }
                });
            }
            Op::Narrow { src, elems, dtype, dst } => {
                let input = src..src + elems;
                let (out, [input]) = carve(self.a, dst..dst + dtype.slots(elems), [input]);
                let input = input.expect("Narrow writes elsewhere than it reads");
                let bits: &mut [u16] = &mut bytemuck::cast_slice_mut(out)[..elems];
                bits.iter_mut().zip(input).for_each(|(b, &x)| *b = dtype.narrow(x));
            }
            Op::Widen { src, elems, dtype, dst } => {
                let bits = self.w_half(src, dtype, elems);
                let out = &mut self.a[dst..dst + elems];
                widen_into(dtype, bits, out);
            }
            Op::LayerNorm { x, bias, residual, gamma, beta, rows, width, eps, out } => {
                let n = rows * width;
                let (gamma, beta) = (self.w(gamma, width), self.w(beta, width));
                let bias = bias.map(|b| self.w(b, width));
                let [xr, rr] = [x..x + n, residual.map_or(0..0, |r| r..r + n)];
                let (o, [xv, rv]) = carve(self.a, out..out + n, [xr, rr]);
                let rv = residual.map(|_| rv);
                let run = |r: usize, row: &mut [f32]| {
                    // x + bias + residual, in that order (the CUDA kernel's), into the output
                    // row, which may be the input or the residual.
                    let xs = xv.map(|v| &v[r * width..][..width]);
                    let rs = rv.map(|v| v.map(|v| &v[r * width..][..width]));
                    match (xs, rs, bias) {
                        (Some(xs), Some(None), Some(b)) => {
                            row.iter_mut().zip(xs).zip(b).for_each(|((o, a), b)| *o += a + b)
                        }
                        (Some(xs), Some(None), None) => row.iter_mut().zip(xs).for_each(|(o, a)| *o += a),
                        _ => {
                            if let Some(xs) = xs {
                                row.copy_from_slice(xs);
                            }
                            if let Some(b) = bias {
                                row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
                            }
                            if let Some(Some(rs)) = rs {
                                row.iter_mut().zip(rs).for_each(|(o, r)| *o += r);
                            }
                        }
                    }
                    ops::layer_norm(row, width, gamma, beta, eps);
                };
                if n >= PARALLEL_ELEMS {
                    o.par_chunks_mut(width).enumerate().for_each(|(r, row)| run(r, row));
                } else {
                    o.chunks_mut(width).enumerate().for_each(|(r, row)| run(r, row));
                }
            }
            Op::Gemm(g) => self.gemm(&g),
            Op::BiasAct { x, bias, rows, width, act, residual, out } => {
                let n = rows * width;
                let bias = self.w(bias, width);
                let [xr, rr] = [x..x + n, residual.map_or(0..0, |r| r..r + n)];
                let (o, [xv, rv]) = carve(self.a, out..out + n, [xr, rr]);
                let rv = residual.map(|_| rv);
                let run = |r: usize, row: &mut [f32]| {
                    if xv.is_none() && rv.is_none() {
                        // In place, no residual: the common case (a dense layer's activation).
                        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                        activate(row, act);
                        return;
                    }
                    // `scratch` holds act(x + bias) for one row, so the output may be the input
                    // or the residual.
                    let mut scratch = [0f32; 1024];
                    for (c, chunk) in row.chunks_mut(scratch.len()).enumerate() {
                        let at = r * width + c * scratch.len();
                        let s = &mut scratch[..chunk.len()];
                        match xv {
                            Some(xs) => s.copy_from_slice(&xs[at..at + chunk.len()]),
                            None => s.copy_from_slice(chunk),
                        }
                        s.iter_mut().zip(&bias[c * 1024..]).for_each(|(v, b)| *v += b);
                        activate(s, act);
                        match rv {
                            Some(Some(res)) => {
                                chunk.iter_mut().zip(s.iter()).zip(&res[at..]).for_each(|((o, v), r)| *o = v + r)
                            }
                            Some(None) => chunk.iter_mut().zip(s.iter()).for_each(|(o, v)| *o += v),
                            None => chunk.copy_from_slice(s),
                        }
                    }
                };
                if n >= PARALLEL_ELEMS {
                    o.par_chunks_mut(width).enumerate().for_each(|(r, row)| run(r, row));
                } else {
                    o.chunks_mut(width).enumerate().for_each(|(r, row)| run(r, row));
                }
            }
            Op::Softmax { scores, heads, q_len, kv_len, mask, causal, window } => {
                let mask: Option<Vec<bool>> = mask.map(|m| (0..kv_len).map(|j| self.word(m + j) != 0).collect());
                let rows = &mut self.a[scores..scores + heads * q_len * kv_len];
                let run = |(idx, row): (usize, &mut [f32])| {
                    ops::masked_softmax(row, mask.as_deref(), visible_keys(idx % q_len, q_len, kv_len, causal, window));
                };
                if rows.len() >= PARALLEL_ELEMS {
                    rows.par_chunks_mut(kv_len).enumerate().for_each(run);
                } else {
                    rows.chunks_mut(kv_len).enumerate().for_each(run);
                }
            }
            Op::Attention(at) => {
                for op in at.lower() {
                    self.exec(&op);
                }
            }
            Op::KvAppend { qkv, k, v, batch, t, q_heads, heads, head_dim: d, capacity, start } => {
                let (q_width, e) = (q_heads * d, heads * d);
                for bi in 0..batch {
                    for i in 0..t {
                        let row = qkv + (bi * t + i) * (q_width + 2 * e);
                        for h in 0..heads {
                            let at = ((bi * heads + h) * capacity + start + i) * d;
                            let (kh, vh) = (row + q_width + h * d, row + q_width + e + h * d);
                            self.a.copy_within(kh..kh + d, k + at);
                            self.a.copy_within(vh..vh + d, v + at);
                        }
                    }
                }
            }
            Op::RmsNorm { x, rows, ld, vectors, width, gamma, eps, out } => {
                let gamma = self.w(gamma, width);
                let span = (rows.max(1) - 1) * ld + vectors * width;
                if rows == 0 {
                    return;
                }
                let run = |row: &mut [f32]| {
                    row[..vectors * width].chunks_exact_mut(width).for_each(|v| ops::rms_norm(v, gamma, eps))
                };
                if x != out {
                    let input = x..x + span;
                    let (o, [xv]) = carve(self.a, out..out + span, [input]);
                    o.copy_from_slice(xv.expect("RmsNorm writes elsewhere than it reads"));
                }
                let o = &mut self.a[out..out + span];
                if rows * vectors * width >= PARALLEL_ELEMS {
                    o.par_chunks_mut(ld).for_each(run);
                } else {
                    o.chunks_mut(ld).for_each(run);
                }
            }
            Op::Rope { x, rows, ld, vectors, head_dim, t, start, inv_freq } => {
                let half = head_dim / 2;
                let freqs = inv_freq..inv_freq + half;
                let (o, [freqs]) = carve(self.a, x..x + (rows.max(1) - 1) * ld + vectors * head_dim, [freqs]);
                let freqs = freqs.expect("Rope's frequencies are not its rows");
                o.chunks_mut(ld).enumerate().for_each(|(r, row)| {
                    let position = (start + r % t) as f32;
                    for (i, &f) in freqs.iter().enumerate() {
                        let (sin, cos) = (position * f).sin_cos();
                        for v in row[..vectors * head_dim].chunks_exact_mut(head_dim) {
                            let (a, b) = (v[i], v[i + half]);
                            v[i] = a * cos - b * sin;
                            v[i + half] = b * cos + a * sin;
                        }
                    }
                });
            }
            Op::SiluMul { x, rows, width, out } => {
                let input = x..x + rows * 2 * width;
                let (o, [xv]) = carve(self.a, out..out + rows * width, [input]);
                let xv = xv.expect("SiluMul writes elsewhere than it reads");
                let run = |(r, row): (usize, &mut [f32])| {
                    let (gate, up) = xv[r * 2 * width..(r + 1) * 2 * width].split_at(width);
                    row.iter_mut().zip(gate).zip(up).for_each(|((o, &g), &u)| *o = ops::silu(g) * u);
                };
                if rows * width >= PARALLEL_ELEMS {
                    o.par_chunks_mut(width).enumerate().for_each(run);
                } else {
                    o.chunks_mut(width).enumerate().for_each(run);
                }
            }
            Op::ZeroRows { x, mask, rows, width } => {
                for r in 0..rows {
                    if self.word(mask + r) == 0 {
                        self.a[x + r * width..x + (r + 1) * width].fill(0.0);
                    }
                }
            }
        }
    }

    /// Consecutive attentions, every (attention, head) pair as its own job: softmax(q·kᵀ·scale)
    /// into a scratch row block, times v, then copied into place. Runs them as their lowering
    /// does where one's output overlaps another's input (no program does that).
    fn attention(&mut self, group: &[&Attention]) {
        let rows_end = |at: usize, rows: usize, ld: usize, width: usize| at + (rows.max(1) - 1) * ld + width;
        let reads = |g: &Attention| {
            let kv_end = (g.heads / g.group - 1) * g.kv_head_stride + g.head_dim;
            [
                g.q..rows_end(g.q, g.q_len, g.q_ld, g.heads * g.head_dim),
                g.k..rows_end(g.k, g.kv_len, g.kv_ld, kv_end),
                g.v..rows_end(g.v, g.kv_len, g.kv_ld, kv_end),
            ]
        };
        let overlaps = |a: &Range<usize>, b: &Range<usize>| a.start < b.end && b.start < a.end;
        let writes: Vec<Range<usize>> =
            group.iter().map(|g| g.out..rows_end(g.out, g.q_len, g.out_ld, g.heads * g.head_dim)).collect();
        if group.iter().flat_map(|g| reads(g)).any(|r| writes.iter().any(|w| overlaps(&r, w))) {
            for g in group {
                self.exec(&Op::Attention(**g));
            }
            return;
        }
        let a: &[f32] = self.a;
        let masks: Vec<Option<Vec<bool>>> =
            group.iter().map(|g| g.mask.map(|m| (0..g.kv_len).map(|j| a[m + j].to_bits() != 0).collect())).collect();
        let jobs: Vec<(usize, usize)> =
            group.iter().enumerate().flat_map(|(i, g)| (0..g.heads).map(move |h| (i, h))).collect();
        let head = |&(i, h): &(usize, usize)| {
            let g = group[i];
            let d = g.head_dim;
            let mut scores = vec![0f32; g.q_len * g.kv_len];
            let q = MatRef::strided(&a[g.q + h * d..], g.q_len, d, g.q_ld, 1);
            let k = MatRef::strided(&a[g.k + h / g.group * g.kv_head_stride..], g.kv_len, d, g.kv_ld, 1);
            let scale = 1.0 / (d as f32).sqrt();
            matmul(MatMut::row_major(&mut scores, g.q_len, g.kv_len), q, k.t(), false, scale, Threads::Single);
            for (r, row) in scores.chunks_exact_mut(g.kv_len).enumerate() {
                let visible = visible_keys(r, g.q_len, g.kv_len, g.causal, g.window);
                ops::masked_softmax(row, masks[i].as_deref(), visible);
            }
            let v = MatRef::strided(&a[g.v + h / g.group * g.kv_head_stride..], g.kv_len, d, g.kv_ld, 1);
            let mut out = vec![0f32; g.q_len * d];
            let p = MatRef::row_major(&scores, g.q_len, g.kv_len);
            matmul(MatMut::row_major(&mut out, g.q_len, d), p, v, false, 1.0, Threads::Single);
            out
        };
        let work: usize = group.iter().map(|g| g.heads * g.head_dim * g.q_len * g.kv_len).sum();
        let outs: Vec<Vec<f32>> = if work < PARALLEL_ELEMS * 4 {
            jobs.iter().map(head).collect()
        } else {
            jobs.par_iter().map(head).collect()
        };
        for (&(i, h), out) in jobs.iter().zip(&outs) {
            let g = group[i];
            for (r, row) in out.chunks_exact(g.head_dim).enumerate() {
                let at = g.out + r * g.out_ld + h * g.head_dim;
                self.a[at..at + g.head_dim].copy_from_slice(row);
            }
        }
    }

    /// `cublasSgemmStridedBatched`, column-major: `C = α·op(A)·op(B) + β·C` for β 0 or 1 (the
    /// programs use no other). A column-major `rows × cols` matrix with leading dimension `ld`
    /// is the strided view with row stride 1 and column stride `ld`; its transpose swaps them.
    fn gemm(&mut self, g: &Gemm) {
        assert!(g.beta == 0.0 || g.beta == 1.0, "β {} is not 0 or 1", g.beta);
        if let Ptr::W(o) = g.b {
            assert!(self.half_at(o).is_none(), "a GEMM reads half weights as B");
        }
        let half_a = if let Ptr::W(o) = g.a { self.half_at(o) } else { None };
        if g.inputs.is_half() {
            // `native`: B is half bits in the workspace, A a half matrix of the weights.
            let t =
                half_a.filter(|t| t.dtype == g.inputs).expect("a native GEMM reads a half weight of its dtype as A");
            let Ptr::A(b_at) = g.b else { panic!("a native GEMM reads B from the workspace") };
            let (b_rows, b_cols) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
            let b_len = (b_cols - 1) * g.ldb + b_rows;
            let bits: &[u16] = &bytemuck::cast_slice(&self.a[b_at..b_at + g.inputs.slots(b_len)])[..b_len];
            let mut b = vec![0f32; b_len];
            widen_into(g.inputs, bits, &mut b);
            return self.gemm_half_a(g, t, Some(&b));
        }
        if let Some(t) = half_a {
            return self.gemm_half_a(g, t, None);
        }
        let (a_rows, a_cols) = if g.trans_a { (g.k, g.m) } else { (g.m, g.k) };
        let (b_rows, b_cols) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
        let extent =
            |rows: usize, cols: usize, ld: usize| if rows == 0 || cols == 0 { 0 } else { (cols - 1) * ld + rows };
        let (a_len, b_len) = (extent(a_rows, a_cols, g.lda), extent(b_rows, b_cols, g.ldb));
        let c_len = extent(g.m, g.n, g.ldc);
        let span = |p: Ptr, stride: usize, len: usize| match p {
            Ptr::W(o) => (true, o, (g.batch - 1) * stride + len),
            Ptr::A(o) => (false, o, (g.batch - 1) * stride + len),
        };
        let (a_w, a_at, a_all) = span(g.a, g.stride_a, a_len);
        let (b_w, b_at, b_all) = span(g.b, g.stride_b, b_len);
        let c_all = (g.batch - 1) * g.stride_c + c_len;
        let (aw, bw) = (a_w.then(|| self.w(a_at, a_all)), b_w.then(|| self.w(b_at, b_all)));
        let a_range = if a_w { 0..0 } else { a_at..a_at + a_all };
        let b_range = if b_w { 0..0 } else { b_at..b_at + b_all };
        let (c, [av, bv]) = carve(self.a, g.c..g.c + c_all, [a_range, b_range]);
        let a = aw.or(av).expect("A is not the output");
        let b = bw.or(bv).expect("B is not the output");
        if aw.is_some() && few_tokens(g) {
            return skinny_product(g, skinny::Weights::F32(a), b, c);
        }
        if aw.is_some() && few_tokens_in_out(g) {
            return streamed(g, a, b, c);
        }
        let item = |p: usize, c: &mut [f32], threads: Threads| {
            let a = view(&a[p * g.stride_a..], a_rows, a_cols, g.lda, g.trans_a);
            let b = view(&b[p * g.stride_b..], b_rows, b_cols, g.ldb, g.trans_b);
            matmul(MatMut::strided(c, g.m, g.n, 1, g.ldc), a, b, g.beta == 1.0, g.alpha, threads);
        };
        // Products this small run faster one after another than spread over the pool.
        let parallel = g.batch * g.m * g.n * g.k >= PARALLEL_MACS;
        if g.batch == 1 {
            item(0, c, Threads::Pool);
        } else if !parallel {
            for p in 0..g.batch {
                item(p, &mut c[p * g.stride_c..], Threads::Single);
            }
        } else if g.stride_c >= c_len {
            // Disjoint outputs: the batch's products run side by side.
            c.par_chunks_mut(g.stride_c).take(g.batch).enumerate().for_each(|(p, c)| item(p, c, Threads::Single));
        } else {
            // Interleaved outputs (each head's columns of one matrix): products side by side
            // into scratch, then written in place (β = 0 only: nothing of C is read).
            assert_eq!(g.beta, 0.0, "interleaved batched outputs are written, not accumulated");
            let parts: Vec<Vec<f32>> = (0..g.batch)
                .into_par_iter()
                .map(|p| {
                    let mut part = vec![0f32; g.m * g.n];
                    let a = view(&a[p * g.stride_a..], a_rows, a_cols, g.lda, g.trans_a);
                    let b = view(&b[p * g.stride_b..], b_rows, b_cols, g.ldb, g.trans_b);
                    matmul(MatMut::strided(&mut part, g.m, g.n, 1, g.m), a, b, false, g.alpha, Threads::Single);
                    part
                })
                .collect();
            for (p, part) in parts.iter().enumerate() {
                for (j, col) in part.chunks_exact(g.m).enumerate() {
                    let at = p * g.stride_c + j * g.ldc;
                    c[at..at + g.m].copy_from_slice(col);
                }
            }
        }
    }
}

impl<'w> Executor<'w, '_> {
    /// A GEMM whose A is a half matrix of the weights: A is widened block by block (columns of
    /// its stored column-major form, at most `HALF_BLOCK` elements) into scratch, and each block
    /// multiplied as it comes — along K when A is not transposed (accumulating into C), along M
    /// when it is (filling C's rows). A model held in half is never widened whole; a matrix that
    /// fits one block is multiplied exactly as its F32 copy would be.
    /// `b`: B already widened (a `native` GEMM's rounded activations), else read from the
    /// workspace.
    fn gemm_half_a(&mut self, g: &Gemm, t: &TensorSlot, b: Option<&[f32]>) {
        assert_eq!(g.batch, 1, "half weights in a batched GEMM");
        let (a_rows, a_cols) = if g.trans_a { (g.k, g.m) } else { (g.m, g.k) };
        let (b_rows, b_cols) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
        let extent =
            |rows: usize, cols: usize, ld: usize| if rows == 0 || cols == 0 { 0 } else { (cols - 1) * ld + rows };
        let a_len = extent(a_rows, a_cols, g.lda);
        let numel: usize = t.shape.iter().product();
        assert!(a_len <= numel, "GEMM reads {a_len} elements of {} ({numel})", t.name);
        let bits = self.w_half(t.span.offset, t.dtype, a_len);
        let Ptr::A(b_at) = g.b else { unreachable!("B is in the workspace (checked)") };
        let b_len = extent(b_rows, b_cols, g.ldb);
        let c_range = g.c..g.c + extent(g.m, g.n, g.ldc);
        let (c, b) = match b {
            Some(b) => (&mut self.a[c_range], b),
            None => {
                let b_range = b_at..b_at + b_len;
                let (c, [b]) = carve(self.a, c_range, [b_range]);
                (c, b.expect("B is not the output"))
            }
        };
        if few_tokens(g) {
            return skinny_product(g, skinny::Weights::Half(t.dtype, bits), b, c);
        }
        let per_block = (HALF_BLOCK / g.lda.max(1)).max(1);
        SCRATCH.with_borrow_mut(|scratch| {
            for c0 in (0..a_cols).step_by(per_block) {
                let cols = per_block.min(a_cols - c0);
                let len = extent(a_rows, cols, g.lda);
                if scratch.len() < len {
                    scratch.resize(len, 0.0);
                }
                widen_into(t.dtype, &bits[c0 * g.lda..c0 * g.lda + len], &mut scratch[..len]);
                let a = view(&scratch[..len], a_rows, cols, g.lda, g.trans_a);
                if g.trans_a {
                    // Rows c0.. of C from rows c0.. of op(A).
                    let bv = view(b, b_rows, b_cols, g.ldb, g.trans_b);
                    let c = MatMut::strided(&mut c[c0..], cols, g.n, 1, g.ldc);
                    matmul(c, a, bv, g.beta == 1.0, g.alpha, Threads::Pool);
                } else {
                    // Rows c0.. of op(B) against columns c0.. of A, summed into C.
                    let bv = if g.trans_b {
                        view(&b[c0 * g.ldb..], g.n, cols, g.ldb, true)
                    } else {
                        view(&b[c0..], cols, g.n, g.ldb, false)
                    };
                    let c = MatMut::strided(c, g.m, g.n, 1, g.ldc);
                    matmul(c, a, bv, g.beta == 1.0 || c0 > 0, g.alpha, Threads::Pool);
                }
            }
        });
    }
}

/// Weight matrices smaller than this are left to the general product (they sit in L2 anyway).
const SKINNY_MIN_ELEMS: usize = 1 << 17;

/// Whether `g` multiplies a large weight matrix (A, `[out, in]` read transposed) by at most
/// `skinny::MAX_TOKENS` tokens, on a machine that runs `skinny`'s kernels.
fn few_tokens(g: &Gemm) -> bool {
    g.batch == 1 && g.trans_a && g.n <= skinny::MAX_TOKENS && g.m * g.k >= SKINNY_MIN_ELEMS && skinny::supported()
}

/// Whether `g` multiplies a large `[in, out]` weight matrix (A, not transposed: the encoders'
/// layout) by a few tokens: the product goes through `streamed`.
fn few_tokens_in_out(g: &Gemm) -> bool {
    g.batch == 1 && !g.trans_a && g.n <= skinny::MAX_N && g.m * g.k >= SKINNY_MIN_ELEMS
}

/// Elements of a weight matrix touched, then multiplied, at a time (256 KiB).
const STREAM_BLOCK: usize = 1 << 16;

/// `C = α·A·op(B) (+ C)` for a weight matrix `A` (column-major, not transposed) and a few columns
/// of `B` (tokens): the GEMM kernel reads `A` 64 floats at a time at a stride of a whole column,
/// which the prefetchers do not follow, so a product of a few tokens streams the weights from
/// the last-level cache at a fraction of the memory's speed. Here each part of `A`'s rows (one
/// per thread) is multiplied in blocks of columns that are first read in order — which brings
/// them into L2 at full speed — then multiplied from there, into scratch that is copied into C.
fn streamed(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    let threads = rayon::current_num_threads().max(1);
    let part = g.m.div_ceil(threads).next_multiple_of(64).min(g.m);
    let parts: Vec<(usize, Vec<f32>)> = (0..g.m)
        .step_by(part)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|r0| {
            let rows = part.min(g.m - r0);
            let mut out = vec![0f32; rows * g.n];
            let cols_per_block = (STREAM_BLOCK / rows).max(1);
            for k0 in (0..g.k).step_by(cols_per_block) {
                let cols = cols_per_block.min(g.k - k0);
                let mut sum = 0f32;
                for j in k0..k0 + cols {
                    // One read per cache line, in order.
                    sum += a[j * g.lda + r0..j * g.lda + r0 + rows].iter().step_by(16).sum::<f32>();
                }
                std::hint::black_box(sum);
                let av = MatRef::strided(&a[k0 * g.lda + r0..], rows, cols, 1, g.lda);
                let bv = if g.trans_b {
                    view(&b[k0 * g.ldb..], g.n, cols, g.ldb, true)
                } else {
                    view(&b[k0..], cols, g.n, g.ldb, false)
                };
                matmul(MatMut::strided(&mut out, rows, g.n, 1, rows), av, bv, k0 > 0, g.alpha, Threads::Single);
            }
            (r0, out)
        })
        .collect();
    for (r0, out) in parts {
        let rows = out.len() / g.n;
        for (j, col) in out.chunks_exact(rows).enumerate() {
            let dst = &mut c[j * g.ldc + r0..j * g.ldc + r0 + rows];
            if g.beta == 1.0 {
                dst.iter_mut().zip(col).for_each(|(d, v)| *d += v);
            } else {
                dst.copy_from_slice(col);
            }
        }
    }
}

/// `g` through the few-token kernel, A as stored.
fn skinny_product(g: &Gemm, a: skinny::Weights<'_>, b: &[f32], c: &mut [f32]) {
    let p = skinny::Product {
        m: g.m,
        n: g.n,
        k: g.k,
        w: a,
        ldw: g.lda,
        x: b,
        ldx: g.ldb,
        trans_x: g.trans_b,
        alpha: g.alpha,
        accumulate: g.beta == 1.0,
    };
    skinny::run(&p, c, g.ldc);
}

/// Elements of a half matrix widened at a time by a GEMM (4 MiB of `f32`).
const HALF_BLOCK: usize = 1 << 20;

thread_local! {
    /// The widened block of a half GEMM, kept between calls (no allocation per product).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Half bits to `f32`, side by side for large runs.
fn widen_into(dtype: Dtype, bits: &[u16], out: &mut [f32]) {
    let run = |(o, b): (&mut [f32], &[u16])| o.iter_mut().zip(b).for_each(|(o, &b)| *o = dtype.widen(b));
    if out.len() >= PARALLEL_ELEMS {
        out.par_chunks_mut(PARALLEL_ELEMS / 4).zip(bits.par_chunks(PARALLEL_ELEMS / 4)).for_each(run);
    } else {
        run((out, bits));
    }
}

/// An embedding table as `Op::Embed` reads it.
enum Table<'w> {
    F32(&'w [f32]),
    Half(Dtype, &'w [u16]),
}

impl Table<'_> {
    /// Writes (or adds, when `add`) row `r` into `out`.
    fn row(&self, r: usize, width: usize, out: &mut [f32], add: bool) {
        match self {
            Table::F32(t) => {
                let src = &t[r * width..][..width];
                if add {
                    out.iter_mut().zip(src).for_each(|(o, s)| *o += s);
                } else {
                    out.copy_from_slice(src);
                }
            }
            Table::Half(dtype, t) => {
                let src = &t[r * width..][..width];
                if add {
                    out.iter_mut().zip(src).for_each(|(o, &s)| *o += dtype.widen(s));
                } else {
                    out.iter_mut().zip(src).for_each(|(o, &s)| *o = dtype.widen(s));
                }
            }
        }
    }
}

/// A column-major `rows × cols` matrix with leading dimension `ld` (row stride 1, column
/// stride `ld`), transposed when `trans`.
fn view(data: &[f32], rows: usize, cols: usize, ld: usize, trans: bool) -> MatRef<'_> {
    let m = MatRef::strided(data, rows, cols, 1, ld);
    if trans {
        m.t()
    } else {
        m
    }
}

/// The keys query `i` of `q_len` sees among `kv_len` (the rule `Op::Softmax` states).
fn visible_keys(i: usize, q_len: usize, kv_len: usize, causal: bool, window: Option<usize>) -> Range<usize> {
    let end = if causal { kv_len - q_len + i + 1 } else { kv_len };
    window.map_or(0, |w| end.saturating_sub(w))..end
}

fn activate(x: &mut [f32], act: Act) {
    match act {
        Act::None => {}
        Act::GeluErf => ops::activate(x, crate::engine::Activation::GeluErf),
        Act::GeluTanh => ops::activate(x, crate::engine::Activation::GeluTanh),
        Act::Relu => ops::activate(x, crate::engine::Activation::Relu),
        Act::Tanh => ops::activate(x, crate::engine::Activation::Tanh),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::layout::PlannedTensor;
    use crate::engine::program::Program;

    /// A product of a few tokens over a large weight goes the few-token way (where the machine
    /// has it); its result is the sum's, with B as it is and transposed, and with β = 1.
    #[test]
    fn few_token_products_equal_sums() {
        let (k, m, n) = (300, 512, 5);
        assert!(m * k >= SKINNY_MIN_ELEMS && n <= skinny::MAX_N);
        let layout = WeightLayout::build(&[PlannedTensor::new("w", &[m, k], 0)], &["w".to_string()]);
        let weights: Vec<f32> = (0..layout.total_elems).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let x: Vec<f32> = (0..n * k).map(|i| ((i * 104_729) % 1000) as f32 / 250.0 - 2.0).collect();
        // Y[n, m] = X[n, k] · W, W held [m, k] (read by `skinny`) or [k, m] (by `streamed`),
        // summed by hand in f64.
        for out_in in [true, false] {
            let w = |c: usize, j: usize| if out_in { weights[c * k + j] } else { weights[j * m + c] };
            let want: Vec<f32> = (0..n * m)
                .map(|i| {
                    let (r, c) = (i / m, i % m);
                    (0..k).map(|j| f64::from(x[r * k + j]) * f64::from(w(c, j))).sum::<f64>() as f32
                })
                .collect();
            check_few_token_product(&layout, &weights, &x, (k, m, n), out_in, &want);
        }
    }

    fn check_few_token_product(
        layout: &WeightLayout,
        weights: &[f32],
        x: &[f32],
        (k, m, n): (usize, usize, usize),
        out_in: bool,
        want: &[f32],
    ) {
        for (trans_b, beta) in [(false, 0.0), (true, 0.0), (false, 1.0)] {
            let mut g =
                if out_in { Gemm::linear(0, n, k, 0, m, n * k) } else { Gemm::linear_in_out(0, n, k, 0, m, n * k) };
            let xs: Vec<f32> = if trans_b {
                // Xᵀ stored [k, n]: B = Xᵀ read transposed.
                g.trans_b = true;
                g.ldb = n;
                (0..k * n).map(|i| x[(i % n) * k + i / n]).collect()
            } else {
                x.to_vec()
            };
            g.beta = beta;
            let program = Program {
                ops: vec![Op::WaitLayer(0), Op::Gemm(g)],
                work_elems: n * k + n * m,
                inputs: vec![(0, xs.iter().map(|v| v.to_bits()).collect())],
                output: (n * k, n * m),
            };
            let mut work = vec![0f32; program.work_elems];
            work[n * k..].fill(1.0);
            let got = run(&program, &Resident::new(weights, layout), layout, &mut work).unwrap();
            for (g, w) in got.iter().zip(want) {
                let w = w + beta;
                assert!(
                    (g - w).abs() <= 1e-3 * w.abs().max(1.0),
                    "[out, in] {out_in} trans_b {trans_b} β {beta}: {g} vs {w}"
                );
            }
        }
    }
}
