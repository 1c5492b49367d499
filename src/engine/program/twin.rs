//! The CPU twin of the device back ends: runs a [`Program`] with the exact semantics the CUDA
//! kernels and cuBLAS give each order (column-major GEMMs included), in plain scalar loops.
//! It exists so that the GPU path's programs are checked against the CPU engine in CI, and it
//! enforces the swap-in contract: reading a layer's weights before its `WaitLayer` panics.

use super::{Act, Gemm, Op, Program, Ptr};
use crate::engine::layout::LayerSpan;
use crate::engine::{fast_math, ops};

/// Runs `program` against `weights` (the packed buffer, split into `layers`) on a fresh
/// workspace and returns its output. The workspace is exactly `program.work_elems` long, so
/// any order that reaches past it panics.
pub fn run(program: &Program, weights: &[f32], layers: &[LayerSpan]) -> Vec<f32> {
    Workspace::default().run(program, weights, layers)
}

/// A workspace kept between programs, as a device keeps it (a generation's KV cache lives in
/// it from one step to the next).
#[derive(Debug, Default)]
pub struct Workspace {
    work: Vec<f32>,
}

impl Workspace {
    pub fn run(&mut self, program: &Program, weights: &[f32], layers: &[LayerSpan]) -> Vec<f32> {
        let mut work = std::mem::take(&mut self.work);
        work.resize(program.work_elems, f32::NAN);
        for (at, words) in &program.inputs {
            for (slot, &w) in work[*at..*at + words.len()].iter_mut().zip(words) {
                *slot = f32::from_bits(w);
            }
        }
        let mut twin = Twin { w: weights, ready: 0, layers, a: work };
        for op in &program.ops {
            twin.exec(op);
        }
        let (at, len) = program.output;
        let out = twin.a[at..at + len].to_vec();
        self.work = twin.a;
        out
    }
}

struct Twin<'a> {
    w: &'a [f32],
    /// Weight elements execution may read so far.
    ready: usize,
    layers: &'a [LayerSpan],
    a: Vec<f32>,
}

impl Twin<'_> {
    fn w(&self, i: usize) -> f32 {
        assert!(i < self.ready, "weight element {i} is read before its layer was waited for");
        self.w[i]
    }

    fn word(&self, i: usize) -> u32 {
        self.a[i].to_bits()
    }

    fn get(&self, p: Ptr, i: usize) -> f32 {
        match p {
            Ptr::W(o) => self.w(o + i),
            Ptr::A(o) => self.a[o + i],
        }
    }

    fn exec(&mut self, op: &Op) {
        match *op {
            Op::WaitLayer(l) => self.ready = self.ready.max(self.layers[l].span.end()),
            Op::Embed { ids, types, word, pos, token_type, rows, t, start, width, out } => {
                for r in 0..rows {
                    let id = self.word(ids + r) as usize;
                    let p = start + r % t;
                    for j in 0..width {
                        let mut v = self.w(word + id * width + j) + self.w(pos + p * width + j);
                        if let (Some(types), Some(tt)) = (types, token_type) {
                            v += self.w(tt + self.word(types + r) as usize * width + j);
                        }
                        self.a[out + r * width + j] = v;
                    }
                }
            }
            Op::LayerNorm { x, bias, residual, gamma, beta, rows, width, eps, out } => {
                for r in 0..rows {
                    let row: Vec<f32> = (0..width)
                        .map(|j| {
                            let mut v = self.a[x + r * width + j];
                            if let Some(b) = bias {
                                v += self.w(b + j);
                            }
                            if let Some(res) = residual {
                                v += self.a[res + r * width + j];
                            }
                            v
                        })
                        .collect();
                    let mean = row.iter().sum::<f32>() / width as f32;
                    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / width as f32;
                    let inv = 1.0 / (var + eps).sqrt();
                    for (j, v) in row.iter().enumerate() {
                        self.a[out + r * width + j] = (v - mean) * inv * self.w(gamma + j) + self.w(beta + j);
                    }
                }
            }
            Op::Gemm(g) => self.gemm(&g),
            Op::BiasAct { x, bias, rows, width, act, residual, out } => {
                for i in 0..rows * width {
                    let mut v = activate(self.a[x + i] + self.w(bias + i % width), act);
                    if let Some(res) = residual {
                        v += self.a[res + i];
                    }
                    self.a[out + i] = v;
                }
            }
            Op::Softmax { scores, heads, q_len, kv_len, mask, causal } => {
                for h in 0..heads {
                    for i in 0..q_len {
                        let row = scores + (h * q_len + i) * kv_len;
                        let visible = if causal { kv_len - q_len + i + 1 } else { kv_len };
                        let counts = |j: usize| j < visible && mask.is_none_or(|m| self.word(m + j) != 0);
                        let max = (0..kv_len)
                            .filter(|&j| counts(j))
                            .map(|j| self.a[row + j])
                            .fold(f32::NEG_INFINITY, f32::max);
                        if max == f32::NEG_INFINITY {
                            for j in 0..kv_len {
                                self.a[row + j] = if j < visible { 1.0 / visible.max(1) as f32 } else { 0.0 };
                            }
                            continue;
                        }
                        let e: Vec<f32> = (0..kv_len)
                            .map(|j| if counts(j) { fast_math::exp(self.a[row + j] - max) } else { 0.0 })
                            .collect();
                        let inv = 1.0 / e.iter().sum::<f32>();
                        for (j, v) in e.iter().enumerate() {
                            self.a[row + j] = v * inv;
                        }
                    }
                }
            }
            Op::KvAppend { qkv, k, v, batch, t, heads, head_dim: d, capacity, start } => {
                let e = heads * d;
                for bi in 0..batch {
                    for i in 0..t {
                        let row = qkv + (bi * t + i) * 3 * e;
                        for h in 0..heads {
                            let at = ((bi * heads + h) * capacity + start + i) * d;
                            for dd in 0..d {
                                self.a[k + at + dd] = self.a[row + e + h * d + dd];
                                self.a[v + at + dd] = self.a[row + 2 * e + h * d + dd];
                            }
                        }
                    }
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

    /// `cublasSgemmStridedBatched`, column-major. With β = 0, C is not read (as in cuBLAS).
    fn gemm(&mut self, g: &Gemm) {
        for p in 0..g.batch {
            let (a, b) = (offset(g.a, p * g.stride_a), offset(g.b, p * g.stride_b));
            let c = g.c + p * g.stride_c;
            let mut out = vec![0f32; g.m * g.n];
            for j in 0..g.n {
                for i in 0..g.m {
                    let mut sum = 0f32;
                    for l in 0..g.k {
                        let x = self.get(a, if g.trans_a { l + i * g.lda } else { i + l * g.lda });
                        let y = self.get(b, if g.trans_b { j + l * g.ldb } else { l + j * g.ldb });
                        sum += x * y;
                    }
                    out[i + j * g.m] = sum;
                }
            }
            for j in 0..g.n {
                for i in 0..g.m {
                    let at = c + i + j * g.ldc;
                    let old = if g.beta == 0.0 { 0.0 } else { g.beta * self.a[at] };
                    self.a[at] = g.alpha * out[i + j * g.m] + old;
                }
            }
        }
    }
}

fn offset(p: Ptr, by: usize) -> Ptr {
    match p {
        Ptr::W(o) => Ptr::W(o + by),
        Ptr::A(o) => Ptr::A(o + by),
    }
}

fn activate(v: f32, act: Act) -> f32 {
    match act {
        Act::None => v,
        Act::GeluErf => ops::gelu_erf(v),
        Act::GeluTanh => ops::gelu_tanh(v),
        Act::Relu => v.max(0.0),
    }
}
