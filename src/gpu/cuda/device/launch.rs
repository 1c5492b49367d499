//! Each program order as one kernel launch or one cuBLAS call on the compute stream.

use cudarc::cublas::{result as blas, sys as blas_sys};

use super::{kernel_fault, CudaDevice, Failure};
use crate::engine::program::{Act, Op, Ptr};
use crate::engine::Dtype;
use crate::gpu::cuda::kernels::Arg;

/// cuBLAS's operation for a transposed or plain operand.
fn blas_op(transposed: bool) -> blas_sys::cublasOperation_t {
    if transposed {
        blas_sys::cublasOperation_t::CUBLAS_OP_T
    } else {
        blas_sys::cublasOperation_t::CUBLAS_OP_N
    }
}

/// The kernels' code for a half dtype (`half_to_float` in kernels.cu).
fn half_code(d: Dtype) -> i32 {
    match d {
        Dtype::F16 => 1,
        Dtype::Bf16 => 2,
        Dtype::F32 => unreachable!("F32 tables take the F32 kernels"),
    }
}

impl CudaDevice {
    fn ptr(&self, p: Ptr, weights: u64) -> u64 {
        match p {
            Ptr::W(o) => weights + o as u64 * 4,
            Ptr::A(o) => self.work + o as u64 * 4,
        }
    }

    fn a(&self, offset: usize) -> Arg {
        Arg::Ptr(self.work + offset as u64 * 4)
    }

    fn w(weights: u64, offset: usize) -> Arg {
        Arg::Ptr(weights + offset as u64 * 4)
    }

    pub(super) fn launch(&self, op: &Op, weights: u64) -> Result<(), Failure> {
        let k = &self.kernels;
        let s = self.compute;
        let opt_a = |o: Option<usize>| o.map_or(Arg::Ptr(0), |o| self.a(o));
        let opt_w = |o: Option<usize>| o.map_or(Arg::Ptr(0), |o| Self::w(weights, o));
        let block = |width: usize| (width.div_ceil(32) * 32).clamp(32, 256) as u32;
        let grid = |total: usize| (total.div_ceil(256).clamp(1, 1 << 16) as u32, 1, 1);
        let i = |v: usize| Arg::I32(v as i32);
        match *op {
            Op::WaitLayer(_) => Ok(()),
            Op::Embed { ids, types, word, pos, token_type, tables, rows, t, start, width, out } if tables.is_half() => {
                k.launch(
                    "embed_half",
                    (rows as u32, 1, 1),
                    block(width),
                    s,
                    &[
                        self.a(ids),
                        opt_a(types),
                        Self::w(weights, word),
                        opt_w(pos),
                        opt_w(token_type),
                        Arg::I32(half_code(tables)),
                        i(t),
                        i(start),
                        i(width),
                        self.a(out),
                    ],
                )
                .map_err(kernel_fault)
            }
            Op::Widen { src, elems, dtype, dst } => k
                .launch(
                    "widen_half",
                    grid(elems),
                    256,
                    s,
                    &[Self::w(weights, src), Arg::I64(elems as i64), Arg::I32(half_code(dtype)), self.a(dst)],
                )
                .map_err(kernel_fault),
            Op::Narrow { src, elems, dtype, dst } => k
                .launch(
                    "narrow_half",
                    grid(elems),
                    256,
                    s,
                    &[self.a(src), Arg::I64(elems as i64), Arg::I32(half_code(dtype)), self.a(dst)],
                )
                .map_err(kernel_fault),
            Op::Gemm(g) if g.inputs.is_half() => {
                let half = match g.inputs {
                    Dtype::F16 => blas_sys::cudaDataType::CUDA_R_16F,
                    _ => blas_sys::cudaDataType::CUDA_R_16BF,
                };
                let (alpha, beta) = (g.alpha, g.beta);
                // SAFETY: as for the F32 GEMM below; A and B are half elements at their slots
                // (the CPU executor reads them the same way in CI), C is F32, and α, β are F32
                // host scalars as CUBLAS_COMPUTE_32F requires.
                unsafe {
                    blas::gemm_strided_batched_ex(
                        self.blas,
                        blas_op(g.trans_a),
                        blas_op(g.trans_b),
                        g.m as i32,
                        g.n as i32,
                        g.k as i32,
                        (&alpha as *const f32).cast(),
                        self.ptr(g.a, weights) as *const std::ffi::c_void,
                        half,
                        g.lda as i32,
                        g.stride_a as i64,
                        self.ptr(g.b, weights) as *const std::ffi::c_void,
                        half,
                        g.ldb as i32,
                        g.stride_b as i64,
                        (&beta as *const f32).cast(),
                        (self.work + g.c as u64 * 4) as *mut std::ffi::c_void,
                        blas_sys::cudaDataType::CUDA_R_32F,
                        g.ldc as i32,
                        g.stride_c as i64,
                        g.batch as i32,
                        blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                        blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                    )
                }
                .map_err(Failure::Blas)
            }
            Op::Embed { ids, types, word, pos, token_type, tables: _, rows, t, start, width, out } => k
                .launch(
                    "embed",
                    (rows as u32, 1, 1),
                    block(width),
                    s,
                    &[
                        self.a(ids),
                        opt_a(types),
                        Self::w(weights, word),
                        opt_w(pos),
                        opt_w(token_type),
                        i(t),
                        i(start),
                        i(width),
                        self.a(out),
                    ],
                )
                .map_err(kernel_fault),
            Op::LayerNorm { x, bias, residual, gamma, beta, rows, width, eps, out } => k
                .launch(
                    "layer_norm",
                    (rows as u32, 1, 1),
                    block(width),
                    s,
                    &[
                        self.a(x),
                        opt_w(bias),
                        opt_a(residual),
                        Self::w(weights, gamma),
                        Self::w(weights, beta),
                        i(width),
                        Arg::F32(eps),
                        self.a(out),
                    ],
                )
                .map_err(kernel_fault),
            Op::BiasAct { x, bias, rows, width, act, residual, out } => {
                let act = match act {
                    Act::None => 0,
                    Act::GeluErf => 1,
                    Act::GeluTanh => 2,
                    Act::Relu => 3,
                    Act::Tanh => 4,
                };
                k.launch(
                    "bias_act",
                    grid(rows * width),
                    256,
                    s,
                    &[
                        self.a(x),
                        Self::w(weights, bias),
                        opt_a(residual),
                        Arg::I64((rows * width) as i64),
                        i(width),
                        Arg::I32(act),
                        self.a(out),
                    ],
                )
                .map_err(kernel_fault)
            }
            Op::Softmax { scores, heads, q_len, kv_len, mask, causal, window } => k
                .launch(
                    "softmax",
                    (q_len as u32, heads as u32, 1),
                    block(kv_len),
                    s,
                    &[
                        self.a(scores),
                        i(q_len),
                        i(kv_len),
                        opt_a(mask),
                        Arg::I32(i32::from(causal)),
                        i(window.unwrap_or(0)),
                    ],
                )
                .map_err(kernel_fault),
            Op::RmsNorm { x, rows, ld, vectors, width, gamma, eps, out } => k
                .launch(
                    "rms_norm",
                    (rows as u32, vectors as u32, 1),
                    block(width),
                    s,
                    &[self.a(x), i(ld), i(width), Self::w(weights, gamma), Arg::F32(eps), self.a(out)],
                )
                .map_err(kernel_fault),
            Op::Rope { x, rows, ld, vectors, head_dim, t, start, inv_freq } => k
                .launch(
                    "rope",
                    (rows as u32, vectors as u32, 1),
                    block(head_dim / 2),
                    s,
                    &[self.a(x), i(ld), i(head_dim), i(t), i(start), self.a(inv_freq)],
                )
                .map_err(kernel_fault),
            Op::SiluMul { x, rows, width, out } => k
                .launch(
                    "silu_mul",
                    grid(rows * width),
                    256,
                    s,
                    &[self.a(x), Arg::I64((rows * width) as i64), i(width), self.a(out)],
                )
                .map_err(kernel_fault),
            // Attention is its three orders, launched in turn.
            Op::Attention(at) => at.lower().iter().try_for_each(|op| self.launch(op, weights)),
            Op::KvAppend { qkv, k: kc, v, batch, t, q_heads, heads, head_dim, capacity, start } => k
                .launch(
                    "kv_append",
                    grid(batch * t * heads * head_dim),
                    256,
                    s,
                    &[
                        self.a(qkv),
                        self.a(kc),
                        self.a(v),
                        i(batch),
                        i(t),
                        i(q_heads),
                        i(heads),
                        i(head_dim),
                        i(capacity),
                        i(start),
                    ],
                )
                .map_err(kernel_fault),
            Op::ZeroRows { x, mask, rows, width } => k
                .launch(
                    "zero_rows",
                    grid(rows * width),
                    256,
                    s,
                    &[self.a(x), self.a(mask), Arg::I64((rows * width) as i64), i(width)],
                )
                .map_err(kernel_fault),
            Op::Gemm(g) => {
                let (alpha, beta) = (g.alpha, g.beta);
                // SAFETY: every operand lies in the weights or the workspace (the programs are
                // the ones the CPU executor runs in CI, bounds-checking each access); α and β
                // are host scalars read before the call returns.
                unsafe {
                    blas::sgemm_strided_batched(
                        self.blas,
                        blas_op(g.trans_a),
                        blas_op(g.trans_b),
                        g.m as i32,
                        g.n as i32,
                        g.k as i32,
                        &alpha,
                        self.ptr(g.a, weights) as *const f32,
                        g.lda as i32,
                        g.stride_a as i64,
                        self.ptr(g.b, weights) as *const f32,
                        g.ldb as i32,
                        g.stride_b as i64,
                        &beta,
                        (self.work + g.c as u64 * 4) as *mut f32,
                        g.ldc as i32,
                        g.stride_c as i64,
                        g.batch as i32,
                    )
                }
                .map_err(Failure::Blas)
            }
        }
    }
}
