// faaswap's CUDA kernels, compiled once per GPU at start-up by NVRTC. Each kernel implements
// one order of a device program (src/engine/program) with exactly the semantics of the CPU
// executor (src/engine/program/exec.rs), which CI runs against the reference fixtures. All
// math FP32.

#define FULL_MASK 0xffffffffu
// NVRTC has no math.h: -inf by its bits.
#define NEG_INF __int_as_float(0xff800000)

struct Add {
    __device__ float operator()(float a, float b) const { return a + b; }
};

struct Max {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <typename F>
__device__ __forceinline__ float warp_reduce(float v, F f) {
    for (int o = 16; o > 0; o >>= 1) v = f(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Reduces over the block; every thread gets the result. `shared` holds 32 floats; the leading
// barrier lets consecutive calls reuse it.
template <typename F>
__device__ float block_reduce(float v, float identity, float* shared, F f) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_reduce(v, f);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    v = (threadIdx.x < warps) ? shared[threadIdx.x] : identity;
    if (warp == 0) v = warp_reduce(v, f);
    if (threadIdx.x == 0) shared[0] = v;
    __syncthreads();
    return shared[0];
}

__device__ float block_sum(float v, float* shared) { return block_reduce(v, 0.0f, shared, Add()); }

__device__ float block_max(float v, float* shared) { return block_reduce(v, NEG_INF, shared, Max()); }

// One block per row.
extern "C" __global__ void embed(const unsigned int* ids, const unsigned int* types, const float* word,
                                 const float* pos, const float* token_type, int t, int start, int width,
                                 float* out) {
    int r = blockIdx.x;
    size_t id = ids[r];
    size_t p = (size_t)(start + r % t);
    size_t ty = types ? types[r] : 0;
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        float v = word[id * width + j];
        if (pos) v += pos[p * width + j];
        if (types && token_type) v += token_type[ty * width + j];
        out[(size_t)r * width + j] = v;
    }
}

// F16 (dtype 1) or BF16 (dtype 2) bits as a float, exactly (every such value is a float).
__device__ float half_to_float(unsigned short h, int dtype) {
    if (dtype == 2) return __uint_as_float(((unsigned int)h) << 16);
    unsigned int sign = ((unsigned int)h & 0x8000u) << 16;
    unsigned int exp = ((unsigned int)h >> 10) & 0x1fu;
    unsigned int mant = (unsigned int)h & 0x3ffu;
    if (exp == 0) {
        float v = (float)mant * 5.9604644775390625e-8f;  // subnormal: mant * 2^-24
        return sign ? -v : v;
    }
    if (exp == 31) return __uint_as_float(sign | 0x7f800000u | (mant << 13));
    return __uint_as_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

// `embed` over tables stored in F16 or BF16 (`dtype` as for half_to_float).
extern "C" __global__ void embed_half(const unsigned int* ids, const unsigned int* types,
                                      const unsigned short* word, const unsigned short* pos,
                                      const unsigned short* token_type, int dtype, int t, int start,
                                      int width, float* out) {
    int r = blockIdx.x;
    size_t id = ids[r];
    size_t p = (size_t)(start + r % t);
    size_t ty = types ? types[r] : 0;
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        float v = half_to_float(word[id * width + j], dtype);
        if (pos) v += half_to_float(pos[p * width + j], dtype);
        if (types && token_type) v += half_to_float(token_type[ty * width + j], dtype);
        out[(size_t)r * width + j] = v;
    }
}

// A float as F16 (dtype 1) or BF16 (dtype 2) bits, rounded to nearest, ties to even (as the
// CPU executor's `Dtype::narrow`); finite inputs only reach it (outputs are checked).
__device__ unsigned short float_to_half(float f, int dtype) {
    unsigned int x = __float_as_uint(f);
    if (dtype == 2) return (unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
    unsigned int sign = (x >> 16) & 0x8000u;
    unsigned int a = x & 0x7fffffffu;
    if (a >= 0x47800000u) return (unsigned short)(sign | 0x7c00u);  // 65536 and up: infinity
    if (a < 0x38800000u) {                                           // under 2^-14: subnormal
        unsigned int m = __float2uint_rn(__uint_as_float(a) * 16777216.0f);  // units of 2^-24
        return (unsigned short)(sign | m);
    }
    unsigned int r = a - 0x38000000u;  // rebias the exponent from 127 to 15
    r += 0x0fffu + ((r >> 13) & 1u);
    return (unsigned short)(sign | (r >> 13));
}

// `Op::Narrow`: n floats to half elements.
extern "C" __global__ void narrow_half(const float* src, long long n, int dtype, unsigned short* out) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        out[i] = float_to_half(src[i], dtype);
    }
}

// `Op::Widen`: n half elements to floats.
extern "C" __global__ void widen_half(const unsigned short* src, long long n, int dtype, float* out) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        out[i] = half_to_float(src[i], dtype);
    }
}

// One block per row. Each thread only reads and writes its own columns, so `out` may be `x`
// or `residual`.
extern "C" __global__ void layer_norm(const float* x, const float* bias, const float* residual,
                                      const float* gamma, const float* beta, int width, float eps,
                                      float* out) {
    __shared__ float shared[32];
    size_t row = (size_t)blockIdx.x * width;
    float sum = 0.0f;
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        float v = x[row + j];
        if (bias) v += bias[j];
        if (residual) v += residual[row + j];
        out[row + j] = v;
        sum += v;
    }
    float mean = block_sum(sum, shared) / width;
    float sq = 0.0f;
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        float d = out[row + j] - mean;
        sq += d * d;
    }
    float inv = 1.0f / sqrtf(block_sum(sq, shared) / width + eps);
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        out[row + j] = (out[row + j] - mean) * inv * gamma[j] + beta[j];
    }
}

// act: 0 none, 1 GELU (erf), 2 GELU (tanh), 3 ReLU, 4 tanh.
extern "C" __global__ void bias_act(const float* x, const float* bias, const float* residual, long long total,
                                    int width, int act, float* out) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        float v = x[i] + bias[i % width];
        if (act == 1) {
            v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
        } else if (act == 2) {
            v = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
        } else if (act == 3) {
            v = fmaxf(v, 0.0f);
        } else if (act == 4) {
            v = tanhf(v);
        }
        if (residual) v += residual[i];
        out[i] = v;
    }
}

// Grid (q_len, heads), one block per score row, in place. Keys first..visible-1 are in view
// (window 0: no sliding window).
extern "C" __global__ void softmax(float* scores, int q_len, int kv_len, const unsigned int* mask, int causal,
                                   int window) {
    __shared__ float shared[32];
    int i = blockIdx.x, h = blockIdx.y;
    float* row = scores + ((size_t)h * q_len + i) * kv_len;
    int visible = causal ? kv_len - q_len + i + 1 : kv_len;
    int first = window > 0 ? max(visible - window, 0) : 0;
    float m = NEG_INF;
    for (int j = threadIdx.x; j < kv_len; j += blockDim.x) {
        bool counts = j >= first && j < visible && (!mask || mask[j] != 0);
        if (counts) m = fmaxf(m, row[j]);
    }
    m = block_max(m, shared);
    if (m == NEG_INF) {
        float w = 1.0f / (float)max(visible - first, 1);
        for (int j = threadIdx.x; j < kv_len; j += blockDim.x) row[j] = j >= first && j < visible ? w : 0.0f;
        return;
    }
    float sum = 0.0f;
    for (int j = threadIdx.x; j < kv_len; j += blockDim.x) {
        bool counts = j >= first && j < visible && (!mask || mask[j] != 0);
        float e = counts ? expf(row[j] - m) : 0.0f;
        row[j] = e;
        sum += e;
    }
    float inv = 1.0f / block_sum(sum, shared);
    for (int j = threadIdx.x; j < kv_len; j += blockDim.x) row[j] *= inv;
}

// Rows of qkv are q_heads query vectors, then heads key and heads value vectors.
extern "C" __global__ void kv_append(const float* qkv, float* k, float* v, int batch, int t, int q_heads, int heads,
                                     int d, int capacity, int start) {
    long long total = (long long)batch * t * heads * d;
    int e = heads * d, qw = q_heads * d;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        int dd = idx % d;
        int h = (idx / d) % heads;
        int i = (idx / ((long long)d * heads)) % t;
        int b = idx / ((long long)d * heads * t);
        const float* row = qkv + ((size_t)b * t + i) * (qw + 2 * e);
        size_t at = (((size_t)b * heads + h) * capacity + start + i) * d + dd;
        k[at] = row[qw + h * d + dd];
        v[at] = row[qw + e + h * d + dd];
    }
}

extern "C" __global__ void zero_rows(float* x, const unsigned int* mask, long long total, int width) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        if (mask[i / width] == 0) x[i] = 0.0f;
    }
}

// Grid (rows, vectors): one block per vector of `width`, at x + row * ld + vector * width, in
// place or into out (same layout). Sums in F32 as transformers' RMSNorm does.
extern "C" __global__ void rms_norm(const float* x, int ld, int width, const float* gamma, float eps, float* out) {
    __shared__ float shared[32];
    size_t at = (size_t)blockIdx.x * ld + (size_t)blockIdx.y * width;
    float sq = 0.0f;
    for (int j = threadIdx.x; j < width; j += blockDim.x) sq += x[at + j] * x[at + j];
    float inv = 1.0f / sqrtf(block_sum(sq, shared) / width + eps);
    for (int j = threadIdx.x; j < width; j += blockDim.x) out[at + j] = gamma[j] * (x[at + j] * inv);
}

// Grid (rows, vectors), head_dim / 2 threads at most per block (looping past): each thread turns
// pairs (i, i + head_dim / 2) of one vector by position * inv_freq[i].
extern "C" __global__ void rope(float* x, int ld, int head_dim, int t, int start, const float* inv_freq) {
    float* v = x + (size_t)blockIdx.x * ld + (size_t)blockIdx.y * head_dim;
    float position = (float)(start + blockIdx.x % t);
    int half = head_dim / 2;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float s, c;
        sincosf(position * inv_freq[i], &s, &c);
        float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
    }
}

// out[r, i] = silu(x[r, i]) * x[r, width + i].
extern "C" __global__ void silu_mul(const float* x, long long total, int width, float* out) {
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        long long r = idx / width, i = idx % width;
        float g = x[r * 2 * width + i];
        out[idx] = g / (1.0f + expf(-g)) * x[r * 2 * width + width + i];
    }
}
