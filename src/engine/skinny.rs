//! Products of a weight matrix with a few tokens — every dense layer at batch 1 and every decode
//! step: `C = α·W·X` (`+ C` when accumulating), `W` the `[m, k]` weights (PyTorch's `Linear`
//! layout: each output's `k` weights in one row) and `X` at most `MAX_N` token vectors. Such a
//! product does a few multiply-adds per weight it reads, so it runs at the speed the weights
//! stream in. A general GEMM kernel does not pack at this size and walks the weights a few cache
//! lines at a time across rows; this kernel reads four rows at a time from front to back — four
//! streams the hardware prefetchers follow, and it asks for the next four meanwhile — against
//! four tokens in registers, and sums the sixteen dot products across lanes together at the end. It reads F32, BF16 and F16 weights alike (a
//! half row is widened in registers, exactly), so a half model streams half the bytes and never
//! needs an F32 copy.
//!
//! From `WIDE_MIN_N` tokens on (a prompt's prefill) the same product runs as outer products
//! instead: the tokens, packed 64 to a group with each weight column's values contiguous, sit in
//! four registers, and each of six weight rows is read one value at a time and broadcast against
//! them — 24 multiply-adds per four loads and six broadcasts, no sums across lanes, and still no
//! copy of the weights, which a general GEMM packs on every call.
//!
//! x86-64 with AVX-512 only (`supported`); elsewhere the executor keeps the general path.

use rayon::prelude::*;

use super::layout::Dtype;

/// The most tokens (columns of `X`) the dot-product kernel takes; from `WIDE_MIN_N` on the
/// broadcast kernel runs.
pub const MAX_N: usize = 64;

/// Tokens from which the broadcast kernel runs.
pub const WIDE_MIN_N: usize = 16;

/// The most tokens a product here is worth it for: beyond, a general GEMM's packed kernel is
/// faster, its copy of the weights paid for by enough tokens (see `timing`).
pub const MAX_TOKENS: usize = 256;

/// Tokens of one broadcast tile (four vectors of 16).
const WIDE_TOKENS: usize = 64;

/// Weight rows of one broadcast tile.
const WIDE_ROWS: usize = 6;

/// Weight rows read together.
const ROWS: usize = 4;

/// Tokens one pass over the rows multiplies: 4 × 4 sums in registers, reduced together.
const TOKENS: usize = 4;

/// Multiply-adds below which a product stays on the calling thread. A decode step's products
/// (a few hundred thousand multiply-adds, each weight read once) are bound by how fast the
/// weights stream in, which every core adds to, so they are split too.
const PARALLEL_MACS: usize = 1 << 16;

/// The weights, as stored.
#[derive(Clone, Copy)]
pub enum Weights<'a> {
    F32(&'a [f32]),
    /// F16 or BF16 bits.
    Half(Dtype, &'a [u16]),
}

impl Weights<'_> {
    fn len(&self) -> usize {
        match self {
            Weights::F32(a) => a.len(),
            Weights::Half(_, a) => a.len(),
        }
    }
}

/// `C = α·W·op(X) (+ C)`, column-major as cuBLAS has it: `W[i, p]` is `w[p + i·ldw]` (row `i`
/// contiguous), `op(X)[p, j]` is `x[p + j·ldx]`, or `x[j + p·ldx]` when `trans_x`, and `C[i, j]`
/// is `c[i + j·ldc]`.
pub struct Product<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub w: Weights<'a>,
    pub ldw: usize,
    pub x: &'a [f32],
    pub ldx: usize,
    pub trans_x: bool,
    pub alpha: f32,
    pub accumulate: bool,
}

/// Whether this machine runs the kernel.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

thread_local! {
    /// The tokens repacked one after another, each `k` long (kept between calls).
    static PACKED_X: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `p` into `c` (leading dimension `ldc`), any number of tokens. Panics when the machine is
/// not `supported` or when a view overruns its slice.
pub fn run(p: &Product<'_>, c: &mut [f32], ldc: usize) {
    run_kernel(p, c, ldc, p.n >= WIDE_MIN_N);
}

/// `run` by the broadcast kernel when `wide`, else by the dot-product one (at most `MAX_N`
/// tokens).
fn run_kernel(p: &Product<'_>, c: &mut [f32], ldc: usize, wide: bool) {
    assert!(supported(), "the few-token kernel needs AVX-512");
    assert!(wide || p.n <= MAX_N, "{} tokens, more than the dot-product kernel's {MAX_N}", p.n);
    let (m, n, k) = (p.m, p.n, p.k);
    if m == 0 || n == 0 {
        return;
    }
    let extent = |rows: usize, cols: usize, ld: usize| (cols - 1) * ld + rows;
    assert!(p.ldw >= k && ldc >= m, "leading dimensions shorter than a column");
    assert!(k == 0 || extent(k, m, p.ldw) <= p.w.len(), "W overruns its slice");
    assert!(extent(m, n, ldc) <= c.len(), "C overruns its slice");
    let (x_rows, x_cols) = if p.trans_x { (n, k) } else { (k, n) };
    assert!(p.ldx >= x_rows, "X's leading dimension is shorter than a column");
    assert!(k == 0 || extent(x_rows, x_cols, p.ldx) <= p.x.len(), "X overruns its slice");
    let op_x = |j: usize, q: usize| if p.trans_x { p.x[j + q * p.ldx] } else { p.x[q + j * p.ldx] };
    PACKED_X.with_borrow_mut(|packed| {
        packed.clear();
        if wide {
            // Group g's value q of token g·64 + l at (g·k + q)·64 + l; missing tokens are 0.
            let groups = n.div_ceil(WIDE_TOKENS);
            packed.resize(groups * k * WIDE_TOKENS, 0.0);
            for j in 0..n {
                let (g, l) = (j / WIDE_TOKENS, j % WIDE_TOKENS);
                for q in 0..k {
                    packed[(g * k + q) * WIDE_TOKENS + l] = op_x(j, q);
                }
            }
        } else {
            packed.extend((0..n).flat_map(|j| (0..k).map(move |q| op_x(j, q))));
        }
        let parts = if m * n * k >= PARALLEL_MACS { rayon::current_num_threads().max(1) } else { 1 };
        let rows_per_part = m.div_ceil(parts).next_multiple_of(if wide { WIDE_ROWS } else { ROWS });
        let out = SharedOut(c.as_mut_ptr());
        let xs = &packed[..];
        let part = |r0: usize| {
            let r1 = (r0 + rows_per_part).min(m);
            // SAFETY: the machine has AVX-512 F/BW/VL (asserted above). Every element read lies in
            // its slice: W's rows r0..r1 < m of k elements at ldw (extent checked), `xs` holds
            // n × k values, C's rows r0..r1 of columns < n (extent checked). Parts write disjoint
            // row ranges of C, so no element is written by two threads, and `c` is borrowed
            // mutably for the whole call, so nothing else reads it meanwhile.
            unsafe { kernel::rows(p.w, p.ldw, xs, n, k, out.get(), ldc, r0..r1, p.alpha, p.accumulate, wide) }
        };
        if parts == 1 {
            part(0);
        } else {
            (0..m).step_by(rows_per_part).collect::<Vec<_>>().into_par_iter().for_each(part);
        }
    });
}

/// C's base pointer, shared by parts that write disjoint rows.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: only `run` builds one, over a slice it borrows mutably for the whole parallel section,
// and its parts write disjoint elements.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer (a method, so closures capture the wrapper, not the raw field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{Dtype, Weights, ROWS, TOKENS, WIDE_ROWS, WIDE_TOKENS};
    use crate::engine::lanes::{Bf16s, F16s, F32s, Lanes};

    /// Rows `rows` of C, by the broadcast kernel when `wide`.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL; `w` holds `rows` of `k` elements at `ldw`, `xs` holds the tokens packed
    /// as `run` packs them for the kernel (`n × k` values, or 64-token groups padded with 0 when
    /// `wide`), `c` rows `rows` of `n` columns at `ldc`, and nothing else touches those rows.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn rows(
        w: Weights<'_>,
        ldw: usize,
        xs: &[f32],
        n: usize,
        k: usize,
        c: *mut f32,
        ldc: usize,
        rows: Range<usize>,
        alpha: f32,
        accumulate: bool,
        wide: bool,
    ) {
        let t = Block { ldw, xs, n, k, c, ldc, alpha, accumulate };
        // SAFETY: forwarded from the caller's contract.
        unsafe {
            match (w, wide) {
                (Weights::F32(w), false) => t.rows::<F32s>(w.as_ptr(), rows),
                (Weights::Half(Dtype::Bf16, w), false) => t.rows::<Bf16s>(w.as_ptr(), rows),
                (Weights::Half(Dtype::F16, w), false) => t.rows::<F16s>(w.as_ptr(), rows),
                (Weights::F32(w), true) => t.wide_rows::<F32s>(w.as_ptr(), rows),
                (Weights::Half(Dtype::Bf16, w), true) => t.wide_rows::<Bf16s>(w.as_ptr(), rows),
                (Weights::Half(Dtype::F16, w), true) => t.wide_rows::<F16s>(w.as_ptr(), rows),
                (Weights::Half(Dtype::F32, _), _) => unreachable!("F32 weights are not half"),
            }
        }
    }

    /// What every block of rows shares.
    struct Block<'x> {
        ldw: usize,
        /// Token `j`'s `k` values start at `xs[j * k]`.
        xs: &'x [f32],
        n: usize,
        k: usize,
        c: *mut f32,
        ldc: usize,
        alpha: f32,
        accumulate: bool,
    }

    impl Block<'_> {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn rows<L: Lanes>(&self, w: *const L::Elem, rows: Range<usize>) {
            let mut i = rows.start;
            while i < rows.end {
                let count = (rows.end - i).min(ROWS);
                for j0 in (0..self.n).step_by(TOKENS) {
                    // The first pass over these rows reads them from memory; it asks for the
                    // next rows' bytes meanwhile.
                    let prefetch = j0 == 0 && i + ROWS < rows.end;
                    // SAFETY: forwarded from the caller's contract, for rows i..i+count.
                    unsafe {
                        match (self.n - j0).min(TOKENS) {
                            1 => self.tile::<L, 1>(w, i, count, j0, prefetch),
                            2 => self.tile::<L, 2>(w, i, count, j0, prefetch),
                            3 => self.tile::<L, 3>(w, i, count, j0, prefetch),
                            _ => self.tile::<L, TOKENS>(w, i, count, j0, prefetch),
                        }
                    };
                }
                i += count;
            }
        }

        /// Rows `i..i + count` against the `T` tokens `j0..j0 + T` (at most `ROWS` rows; missing
        /// ones repeat the first and are not written).
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn tile<L: Lanes, const T: usize>(
            &self,
            w: *const L::Elem,
            i: usize,
            count: usize,
            j0: usize,
            prefetch: bool,
        ) {
            let tokens = T;
            let row = |r: usize| w.wrapping_add((i + if r < count { r } else { 0 }) * self.ldw);
            let rows: [*const L::Elem; ROWS] = std::array::from_fn(row);
            let next: [*const L::Elem; ROWS] = std::array::from_fn(|r| w.wrapping_add((i + ROWS + r) * self.ldw));
            let xs: [&[f32]; T] = std::array::from_fn(|j| &self.xs[(j0 + j) * self.k..(j0 + j + 1) * self.k]);
            // acc[r * TOKENS + j]: row r against token j, in 16 lanes.
            let mut acc = [_mm512_setzero_ps(); ROWS * TOKENS];
            let mut p = 0;
            while p < self.k {
                let lanes = (self.k - p).min(16);
                let mask: __mmask16 = if lanes == 16 { 0xffff } else { ((1u32 << lanes) - 1) as __mmask16 };
                // SAFETY: lanes p..p+lanes of rows that exist (caller's contract).
                let ws = rows.map(|r| unsafe { L::load(r.wrapping_add(p), mask) });
                if prefetch {
                    for r in next {
                        _mm_prefetch::<_MM_HINT_T0>(r.wrapping_add(p).cast::<i8>());
                    }
                }
                for (j, x) in xs.iter().enumerate() {
                    // SAFETY: lanes p..p+lanes of a token's k values (a checked slice).
                    let x = unsafe { _mm512_maskz_loadu_ps(mask, x.as_ptr().add(p)) };
                    for (r, w) in ws.iter().enumerate() {
                        acc[r * TOKENS + j] = _mm512_fmadd_ps(*w, x, acc[r * TOKENS + j]);
                    }
                }
                p += 16;
            }
            let mut sums = [0f32; ROWS * TOKENS];
            // SAFETY: `sums` holds 16 floats.
            unsafe { _mm512_storeu_ps(sums.as_mut_ptr(), reduce16(&acc)) };
            for r in 0..count {
                for j in 0..tokens {
                    let at = self.c.wrapping_add(i + r + (j0 + j) * self.ldc);
                    let mut v = self.alpha * sums[r * TOKENS + j];
                    // SAFETY: C[i + r, j0 + j] is a row of this part (caller's contract).
                    unsafe {
                        if self.accumulate {
                            v += *at;
                        }
                        *at = v;
                    }
                }
            }
        }

        /// Rows `rows` by the broadcast kernel: six rows at a time against each 64-token group,
        /// the rows' values staying in L1 from one group to the next.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn wide_rows<L: Lanes>(&self, w: *const L::Elem, rows: Range<usize>) {
            let mut i = rows.start;
            while i < rows.end {
                let count = (rows.end - i).min(WIDE_ROWS);
                for g in 0..self.n.div_ceil(WIDE_TOKENS) {
                    let tokens = (self.n - g * WIDE_TOKENS).min(WIDE_TOKENS);
                    // SAFETY: forwarded from the caller's contract, for rows i..i+count and group g.
                    unsafe {
                        match tokens.div_ceil(16) {
                            1 => self.wide_tile::<L, 1>(w, i, count, g, tokens),
                            2 => self.wide_tile::<L, 2>(w, i, count, g, tokens),
                            3 => self.wide_tile::<L, 3>(w, i, count, g, tokens),
                            _ => self.wide_tile::<L, 4>(w, i, count, g, tokens),
                        }
                    }
                }
                i += count;
            }
        }

        /// Rows `i..i + count` (at most six; missing ones repeat the first and are not written)
        /// against the `tokens` of group `g`, in `V` vectors of 16.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn wide_tile<L: Lanes, const V: usize>(
            &self,
            w: *const L::Elem,
            i: usize,
            count: usize,
            g: usize,
            tokens: usize,
        ) {
            let rows: [*const L::Elem; WIDE_ROWS] =
                std::array::from_fn(|r| w.wrapping_add((i + if r < count { r } else { 0 }) * self.ldw));
            let group = &self.xs[g * self.k * WIDE_TOKENS..(g + 1) * self.k * WIDE_TOKENS];
            // acc[r][v]: row r against tokens 16v..16v+16 of the group.
            let mut acc = [[_mm512_setzero_ps(); V]; WIDE_ROWS];
            for p in 0..self.k {
                let column = &group[p * WIDE_TOKENS..p * WIDE_TOKENS + V * 16];
                // SAFETY: 16 values at 16v of a checked slice of V·16.
                let x: [__m512; V] = std::array::from_fn(|v| unsafe { _mm512_loadu_ps(column.as_ptr().add(16 * v)) });
                for (r, row) in rows.iter().enumerate() {
                    // SAFETY: value p < k of a row that exists (caller's contract).
                    let b = unsafe { L::splat(row.wrapping_add(p)) };
                    for v in 0..V {
                        acc[r][v] = _mm512_fmadd_ps(x[v], b, acc[r][v]);
                    }
                }
            }
            let mut lanes = [0f32; 16];
            for (r, acc) in acc.iter().enumerate().take(count) {
                for (v, a) in acc.iter().enumerate() {
                    // SAFETY: `lanes` holds 16 floats.
                    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *a) };
                    for (l, &sum) in lanes.iter().enumerate().take(tokens.saturating_sub(16 * v).min(16)) {
                        let j = g * WIDE_TOKENS + 16 * v + l;
                        let at = self.c.wrapping_add(i + r + j * self.ldc);
                        let mut value = self.alpha * sum;
                        // SAFETY: C[i + r, j] is a row of this part and j < n (caller's contract).
                        unsafe {
                            if self.accumulate {
                                value += *at;
                            }
                            *at = value;
                        }
                    }
                }
            }
        }
    }

    /// Lane `i` of the result is the sum of `v[i]`'s 16 lanes: a tree of interleaving adds (45
    /// instructions for 16 sums, against about 8 for each one alone).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn reduce16(v: &[__m512; 16]) -> __m512 {
        // Within each 128-bit block: [v2i.a, v2i+1.a, v2i.b, v2i+1.b].
        let l1: [__m512; 8] = std::array::from_fn(|i| {
            _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]))
        });
        // Within each 128-bit block: the block's partial sums of v4j .. v4j+3.
        let l2: [__m512; 4] = std::array::from_fn(|j| {
            let (a, b) = (_mm512_castps_pd(l1[2 * j]), _mm512_castps_pd(l1[2 * j + 1]));
            _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)))
        });
        // Blocks: [l2[2h] 0+2, l2[2h] 1+3, l2[2h+1] 0+2, l2[2h+1] 1+3].
        let half = |a: __m512, b: __m512| {
            _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(a, b), _mm512_shuffle_f32x4::<0xEE>(a, b))
        };
        let (e, f) = (half(l2[0], l2[1]), half(l2[2], l2[3]));
        _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(e, f), _mm512_shuffle_f32x4::<0xDD>(e, f))
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    use super::Weights;

    /// Never called: `supported` is false off x86-64.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn rows(
        _: Weights<'_>,
        _: usize,
        _: &[f32],
        _: usize,
        _: usize,
        _: *mut f32,
        _: usize,
        _: std::ops::Range<usize>,
        _: f32,
        _: bool,
        _: bool,
    ) {
        unreachable!("the few-token kernel runs on x86-64 only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(i: usize, salt: usize) -> f32 {
        ((i * 7919 + salt * 104_729) % 2001) as f32 / 1000.0 - 1.0
    }

    /// The kernel against sums in f64, over shapes with row and lane tails, every token-block
    /// size, both layouts of X, β 0 and 1, α ≠ 1, and all three weight dtypes.
    #[test]
    fn products_equal_sums_in_f64() {
        if !supported() {
            eprintln!("skipped: no AVX-512 on this machine");
            return;
        }
        for (m, k, n, ldw) in [
            (5, 3, 1, 5),
            (33, 17, 7, 20),
            (100, 64, 13, 64),
            (384, 96, 16, 96),
            (70, 300, 64, 310),
            (13, 40, 100, 41),
            (50, 33, 150, 33),
        ] {
            for dtype in Dtype::ALL {
                let w32: Vec<f32> = (0..ldw * m).map(|i| value(i, 1)).collect();
                let bits: Vec<u16> = w32.iter().map(|&v| dtype.narrow(v)).collect();
                // The weights as the kernel sees them: rounded to the dtype.
                let w_eff: Vec<f32> =
                    if dtype == Dtype::F32 { w32.clone() } else { bits.iter().map(|&b| dtype.widen(b)).collect() };
                let weights = if dtype == Dtype::F32 { Weights::F32(&w32) } else { Weights::Half(dtype, &bits) };
                for trans_x in [false, true] {
                    let ldx = if trans_x { n + 2 } else { k + 3 };
                    let x: Vec<f32> = (0..ldx * if trans_x { k } else { n }).map(|i| value(i, 2)).collect();
                    let op_x = |p: usize, j: usize| if trans_x { x[j + p * ldx] } else { x[p + j * ldx] };
                    for accumulate in [false, true] {
                        let ldc = m + 1;
                        let mut c: Vec<f32> = (0..ldc * n).map(|i| value(i, 3)).collect();
                        let before = c.clone();
                        let alpha = 0.5;
                        let p = Product { m, n, k, w: weights, ldw, x: &x, ldx, trans_x, alpha, accumulate };
                        run(&p, &mut c, ldc);
                        for j in 0..n {
                            for i in 0..ldc {
                                let got = c[i + j * ldc];
                                if i >= m {
                                    assert_eq!(got, before[i + j * ldc], "row {i} past m was written");
                                    continue;
                                }
                                let sum: f64 =
                                    (0..k).map(|q| f64::from(w_eff[q + i * ldw]) * f64::from(op_x(q, j))).sum();
                                let want = f64::from(alpha) * sum
                                    + if accumulate { f64::from(before[i + j * ldc]) } else { 0.0 };
                                assert!(
                                    (f64::from(got) - want).abs() <= 1e-5 * (k as f64).sqrt().max(1.0),
                                    "{dtype:?} m {m} k {k} n {n} trans_x {trans_x} β {accumulate}: \
                                     C[{i}, {j}] = {got}, want {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_view_past_its_slice_is_refused() {
        if !supported() {
            eprintln!("skipped: no AVX-512 on this machine");
            return;
        }
        let w = vec![0f32; 10];
        let x = vec![0f32; 4];
        let mut c = vec![0f32; 8];
        let p = Product {
            m: 4,
            n: 2,
            k: 2,
            w: Weights::F32(&w),
            ldw: 3,
            x: &x,
            ldx: 2,
            trans_x: false,
            alpha: 1.0,
            accumulate: false,
        };
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&p, &mut c, 4)));
        assert!(refused.is_err(), "W needs 11 elements, has 10");
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use crate::engine::matmul::{matmul, MatMut, MatRef, Threads};

    #[test]
    #[ignore]
    fn time_against_gemm() {
        // SmolLM2-135M's products (gate+up, down, q+k+v, o) at decode and prefill sizes.
        let shapes = [(3072, 576), (576, 1536), (960, 576), (576, 576)];
        for n in [1, 4, 16, 32, 64, 128, 256, 512] {
            for (m, k) in shapes {
                let layers = 24;
                let w: Vec<f32> = (0..m * k * layers).map(|i| (i % 7) as f32 * 0.1).collect();
                let x: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
                let mut c = vec![0f32; m * n];
                let iters = (20_000 / n).clamp(10, 200);
                let timed = |c: &mut Vec<f32>, wide: bool| {
                    let t0 = std::time::Instant::now();
                    for it in 0..iters {
                        let w = &w[(it % layers) * m * k..][..m * k];
                        let p = Product {
                            m,
                            n,
                            k,
                            w: Weights::F32(w),
                            ldw: k,
                            x: &x,
                            ldx: k,
                            trans_x: false,
                            alpha: 1.0,
                            accumulate: false,
                        };
                        run_kernel(&p, c, m, wide);
                    }
                    t0.elapsed().as_secs_f64() / iters as f64 * 1e6
                };
                let dot = if n <= MAX_N { timed(&mut c, false) } else { f64::NAN };
                let wide = timed(&mut c, true);
                let t0 = std::time::Instant::now();
                for it in 0..iters {
                    let w = &w[(it % layers) * m * k..][..m * k];
                    matmul(
                        MatMut::strided(&mut c, m, n, 1, m),
                        MatRef::strided(w, k, m, 1, k).t(),
                        MatRef::strided(&x, k, n, 1, k),
                        false,
                        1.0,
                        Threads::Pool,
                    );
                }
                let gemm = t0.elapsed().as_secs_f64() / iters as f64 * 1e6;
                let gflops = |us: f64| 2.0 * (m * n * k) as f64 / us / 1e3;
                eprintln!(
                    "m {m} k {k} n {n}: dot {dot:.1} µs ({:.0} GFLOP/s), broadcast {wide:.1} µs ({:.0}), gemm {gemm:.1} µs ({:.0})",
                    gflops(dot),
                    gflops(wide),
                    gflops(gemm)
                );
            }
        }
    }
}
