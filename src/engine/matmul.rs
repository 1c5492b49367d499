//! Matrix products on the CPU through the `gemm` crate, behind strided views whose bounds are
//! checked before the unsafe call.

use gemm::Parallelism;

/// A read-only strided matrix view: element (r, c) is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        check_bounds(data.len(), rows, cols, rs, cs);
        Self { data, rows, cols, rs, cs }
    }

    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// The transposed view of the same elements.
    pub fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }
}

/// A mutable strided matrix view.
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatMut<'a> {
    pub fn strided(data: &'a mut [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        check_bounds(data.len(), rows, cols, rs, cs);
        Self { data, rows, cols, rs, cs }
    }

    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }
}

fn check_bounds(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) {
    if rows > 0 && cols > 0 {
        let last = (rows - 1) * rs + (cols - 1) * cs;
        assert!(last < len, "matrix view {rows}x{cols} (rs {rs}, cs {cs}) overruns {len} elements");
    }
}

/// Whether a product may spread over the rayon pool. Products inside an already parallel loop
/// (attention heads) run single-threaded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    Pool,
    Single,
}

/// Below this many multiply-adds a product runs on the calling thread: waking the pool costs
/// more than it saves (measured on MiniLM batch 1, whose products are 6–9 M multiply-adds).
const POOL_MIN_MACS: usize = 1 << 20;

/// `dst = scale · a · b`, or `dst += scale · a · b` when `accumulate`.
pub fn matmul(dst: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool, scale: f32, threads: Threads) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert_eq!((dst.rows, dst.cols), (a.rows, b.cols), "output shape differs");
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    let macs = dst.rows * dst.cols * a.cols;
    let parallelism = match threads {
        Threads::Pool if macs >= POOL_MIN_MACS => Parallelism::Rayon(0),
        _ => Parallelism::None,
    };
    // SAFETY: the three views were bounds-checked at construction, so every element gemm reads
    // or writes (rows × cols at the given strides) lies inside its slice; `dst` is borrowed
    // mutably, so it cannot alias `a` or `b`; strides fit in isize because they index slices.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            a.cols,
            dst.data.as_mut_ptr(),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn matches_naive_product_plain_and_transposed() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut got = vec![0.0; m * n];
        matmul(
            MatMut::row_major(&mut got, m, n),
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            false,
            1.0,
            Threads::Pool,
        );
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5);
        }
        // b stored transposed ([n, k], like a PyTorch Linear weight) gives the same product.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut got_t = vec![1.0; m * n];
        matmul(
            MatMut::row_major(&mut got_t, m, n),
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&bt, n, k).t(),
            true,
            2.0,
            Threads::Single,
        );
        for (g, w) in got_t.iter().zip(&want) {
            assert!((g - (1.0 + 2.0 * w)).abs() < 1e-5);
        }
    }

    #[test]
    #[should_panic(expected = "overruns")]
    fn rejects_views_past_the_slice() {
        let data = [0.0f32; 5];
        let _ = MatRef::row_major(&data, 2, 3);
    }
}
