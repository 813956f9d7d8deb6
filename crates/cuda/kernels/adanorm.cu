// The ai.adanorm ops (AdaNorm, LayerNormSimple) as CUDA kernels. Contract: ops-spec.md.
//
// Knows nothing of ONNX Runtime: raw device pointers, sizes, a stream (chosen by the host).
// Compiled by NVRTC to PTX at build time (build.rs), once per element type: the host defines
// ADANORM_F32, ADANORM_F16, ADANORM_BF16 or ADANORM_MISC to pick the entry points of one module
// (none defined: all of them, for a standalone compile).
//
// Per row of N elements, statistics in f32:
//   m  = sum(x) / N                       a first mean
//   d  = x - m,  s1 = sum(d),  s2 = sum(d*d)
//   c  = s1 / N                           corrects m; mean = m + c
//   var = (s2 - s1*c) / (N or N-1)        = sum((x - mean)^2) / divisor
//   y  = (d - c) / sigma
// m alone is only as exact as one f32 near the mean (~5e-4 at 1e4); keeping it as the pair
// (m, c) makes d - c exact to the precision of the deviations, so rows like 1e4 + noise stay
// accurate. This is the corrected two-pass algorithm of the CPU kernels, over a row that is read
// from memory once and kept in registers.
//
// Strategies (the host picks one by row length, see src/config.rs):
//   warp  : one warp per row, 4 rows per 128-thread block, up to 32 elements per lane (N <= 1024)
//   block : one block of 128..1024 threads per row, up to 32 elements per thread (N <= 32768;
//           scalar kernels up to 16, N <= 16384)
//   loop  : one block of 1024 threads per row, three passes over global memory (longer rows; the
//           second and third passes hit L2 for rows up to several MB)
// Each comes vectorised ("_v": 16-byte loads and stores, needs 16-byte aligned pointers and N a
// multiple of 16 / sizeof(T)) and scalar ("_s": any alignment, any N).

#include <cuda_fp16.h>
#include <cuda_bf16.h>

#if !defined(ADANORM_F32) && !defined(ADANORM_F16) && !defined(ADANORM_BF16) && !defined(ADANORM_MISC)
#define ADANORM_F32
#define ADANORM_F16
#define ADANORM_BF16
#define ADANORM_MISC
#endif

// Keep in sync with `KernelArgs` in src/launch.rs (#[repr(C)], same order).
struct AdaNormArgs {
    const void* x;         // rows * row_len elements of T
    void* y;               // same shape as x; may equal x
    const void* scale;     // row_len elements of T, or null
    const void* bias;      // row_len elements of T, or null
    float* mean;           // rows floats, or null
    float* inv_std;        // rows floats, or null
    long long rows;
    long long row_len;
    float epsilon;
    float c;
    float k;
    int flags;             // FLAG_*
};

#define FLAG_UNBIASED 1
#define FLAG_EPS_IN_SQRT 2
#define FLAG_ADANORM 4

// Rows handled by one 128-thread block in the warp strategy.
#define WARP_ROWS 4
// Threads per block of the loop strategy.
#define LOOP_THREADS 1024

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

// W elements moved as one load/store: 16 bytes (ld.global.v4) when W * sizeof(T) == 16.
template <typename T, int W> struct alignas(sizeof(T) * W) Pack {
    T v[W];
};

template <typename T, int W>
__device__ __forceinline__ Pack<T, W> load(const T* p) {
    return *reinterpret_cast<const Pack<T, W>*>(p);
}

template <typename T, int W>
__device__ __forceinline__ void store(T* p, const Pack<T, W>& v) {
    *reinterpret_cast<Pack<T, W>*>(p) = v;
}

// Butterfly sum: every lane ends with the same total (float addition is commutative, so both
// partners of each exchange compute the same value).
template <int K>
__device__ __forceinline__ void warp_sum(float (&v)[K]) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
#pragma unroll
        for (int k = 0; k < K; ++k) v[k] += __shfl_xor_sync(0xffffffffu, v[k], o);
    }
}

// Sum over the THREADS threads that share a row; every thread gets the total.
// THREADS > 32: one block per row. Each warp re-reduces all per-warp partials itself, which
// saves a broadcast and its second barrier; the shared array is per K, and the caller alternates
// K = 1 and K = 2, so each reuse of an array is separated by the other call's barrier.
template <int THREADS, int K>
__device__ __forceinline__ void group_sum(float (&v)[K]) {
    warp_sum<K>(v);
    if (THREADS > 32) {
        constexpr int WARPS = THREADS / 32;
        __shared__ float partial[K][WARPS];
        const int warp = threadIdx.x / 32;
        const int lane = threadIdx.x % 32;
        if (lane == 0) {
#pragma unroll
            for (int k = 0; k < K; ++k) partial[k][warp] = v[k];
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < K; ++k) v[k] = lane < WARPS ? partial[k][lane] : 0.0f;
        warp_sum<K>(v);
    }
}

// Row statistics from the f32 sums, exactly as the spec words them (no fast math: a constant
// row with epsilon 0 gives 0/0 = NaN, unbiased with N = 1 gives 0/0 = NaN).
struct RowStats {
    float c;    // correction of the first mean m
    float inv;  // 1 / sigma
};

__device__ __forceinline__ RowStats finish_stats(const AdaNormArgs& a, float s1, float s2, float n) {
    RowStats st;
    st.c = s1 / n;
    float ss = s2 - s1 * st.c;  // sum((d - c)^2); rounding can dip below 0, NaN must pass
    ss = ss < 0.0f ? 0.0f : ss;
    const float divisor = (a.flags & FLAG_UNBIASED) ? n - 1.0f : n;
    const float var = ss / divisor;
    const float sigma = (a.flags & FLAG_EPS_IN_SQRT) ? sqrtf(var + a.epsilon) : sqrtf(var) + a.epsilon;
    st.inv = 1.0f / sigma;
    return st;
}

// f32 results to W elements of T; half and bfloat16 convert in pairs (one cvt.rn.*x2.f32 each).
template <typename T, int W>
__device__ __forceinline__ void to_pack(const float* t, Pack<T, W>& out) {
#pragma unroll
    for (int j = 0; j < W; ++j) out.v[j] = from_f32<T>(t[j]);
}
template <>
__device__ __forceinline__ void to_pack<__half, 8>(const float* t, Pack<__half, 8>& out) {
    __half2* o = reinterpret_cast<__half2*>(out.v);
#pragma unroll
    for (int j = 0; j < 4; ++j) o[j] = __floats2half2_rn(t[2 * j], t[2 * j + 1]);
}
template <>
__device__ __forceinline__ void to_pack<__nv_bfloat16, 8>(const float* t, Pack<__nv_bfloat16, 8>& out) {
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(out.v);
#pragma unroll
    for (int j = 0; j < 4; ++j) o[j] = __floats2bfloat162_rn(t[2 * j], t[2 * j + 1]);
}

// One output element: y = (d - c) / sigma (d - c exact, so a constant row gives exactly 0), the
// AdaNorm factor c * (1 - k*y) * y as y * (c - (c*k)*y), then * Scale, + B (one FMA for both).
template <bool ADA, bool SCALE, bool BIAS>
__device__ __forceinline__ float output(const AdaNormArgs& a, float ck, float d, const RowStats& st,
                                        float s, float b) {
    float u = (d - st.c) * st.inv;
    if constexpr (ADA) u = u * fmaf(-ck, u, a.c);
    if constexpr (SCALE && BIAS) {
        u = fmaf(u, s, b);
    } else if constexpr (SCALE) {
        u *= s;
    } else if constexpr (BIAS) {
        u += b;
    }
    return u;
}

// The output pass of the warp / block strategy, specialised on which terms are present (the
// kernel picks one of the 8 once per row, so the per-element code has no branches) and on FULL
// (every pack of every thread is inside the row: no bounds checks either). Measured on an H200
// (BENCHMARKS.md, "CUDA kernels"): both help block kernels; warp kernels gain from the first only, FULL
// costs them registers and ~10% on f16/bf16 rows of 1024.
template <typename T, int THREADS, int LOADS, int W, bool FULL, bool RAW, bool ADA, bool SCALE, bool BIAS>
__device__ __forceinline__ void output_pass(const AdaNormArgs& a, T* y, const T* scale, const T* bias,
                                            const Pack<T, W>* raw, const float* v, float m,
                                            const RowStats& st, int avail) {
    constexpr int STEP = THREADS * W;
    const float ck = a.c * a.k;
#pragma unroll
    for (int i = 0; i < LOADS; ++i) {
        if (FULL || i * STEP < avail) {
            const int o = i * STEP;
            Pack<T, W> ps, pb, out;
            if constexpr (SCALE) ps = load<T, W>(scale + o);
            if constexpr (BIAS) pb = load<T, W>(bias + o);
            float t[W];
#pragma unroll
            for (int j = 0; j < W; ++j) {
                const float d = RAW ? to_f32(raw[i].v[j]) - m : v[i * W + j];
                t[j] = output<ADA, SCALE, BIAS>(a, ck, d, st, SCALE ? to_f32(ps.v[j]) : 1.0f,
                                                BIAS ? to_f32(pb.v[j]) : 0.0f);
            }
            to_pack<T, W>(t, out);
            store<T, W>(y + o, out);
        }
    }
}

// The loop kernel's output of W elements (runtime choices: that kernel is the long-row fallback).
template <typename T, int W>
__device__ __forceinline__ void write_pack(const AdaNormArgs& a, T* y, const T* scale, const T* bias,
                                           const float* d, const RowStats& st) {
    Pack<T, W> ps, pb, out;
    if (scale) ps = load<T, W>(scale);
    if (bias) pb = load<T, W>(bias);
    const float ck = a.c * a.k;
    const bool ada = a.flags & FLAG_ADANORM;
    float t[W];
#pragma unroll
    for (int j = 0; j < W; ++j) {
        const float s = scale ? to_f32(ps.v[j]) : 1.0f;
        const float b = bias ? to_f32(pb.v[j]) : 0.0f;
        t[j] = ada ? output<true, true, true>(a, ck, d[j], st, s, b)
                   : output<false, true, true>(a, ck, d[j], st, s, b);
    }
    to_pack<T, W>(t, out);
    store<T, W>(y, out);
}

// warp / block strategy: THREADS threads per row, each holding LOADS packs of W elements in
// registers; pack i of a thread starts at element (i * THREADS + lane) * W, so each load
// instruction of a warp is contiguous (coalesced). Offsets within a row are 32-bit and relative
// to the thread's first element, so they are immediates (rows here are <= 32768 elements).
// One row per warp (block) and no grid-stride loop: nothing is loop-invariant, so the compiler
// keeps no per-pack addresses alive across the row (the host splits huge row counts into
// several launches instead).
template <typename T, int THREADS, int LOADS, int W, bool FULL>
__device__ __forceinline__ void row_core(const AdaNormArgs& a, long long row, int lane) {
    constexpr int E = LOADS * W;
    constexpr int STEP = THREADS * W;  // elements between a thread's packs
    const int n = (int)a.row_len;
    const float nf = (float)n;
    const int avail = n - lane * W;  // pack i exists iff i * STEP < avail (N % W == 0 if W > 1)
    const T* x = static_cast<const T*>(a.x) + row * n + lane * W;

    // 16-bit types keep the row in registers as loaded (half the registers of f32 copies) and
    // convert again in each pass, which is cheap; f32 keeps x - m.
    constexpr bool RAW = sizeof(T) == 2;
    Pack<T, W> raw[RAW ? LOADS : 1];
    float v[RAW ? 1 : E];
    float sum[1] = {0.0f};
    float s[2] = {0.0f, 0.0f};
    float m;
    if constexpr (RAW) {
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            if (FULL || i * STEP < avail) {
                raw[i] = load<T, W>(x + i * STEP);
#pragma unroll
                for (int j = 0; j < W; ++j) sum[0] += to_f32(raw[i].v[j]);
            }
        }
        group_sum<THREADS, 1>(sum);
        m = sum[0] / nf;

#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            if (FULL || i * STEP < avail) {
#pragma unroll
                for (int j = 0; j < W; ++j) {
                    const float d = to_f32(raw[i].v[j]) - m;
                    s[0] += d;
                    s[1] += d * d;
                }
            }
        }
    } else {
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            if (FULL || i * STEP < avail) {
                const Pack<T, W> p = load<T, W>(x + i * STEP);
#pragma unroll
                for (int j = 0; j < W; ++j) v[i * W + j] = to_f32(p.v[j]);
            } else {
#pragma unroll
                for (int j = 0; j < W; ++j) v[i * W + j] = 0.0f;
            }
#pragma unroll
            for (int j = 0; j < W; ++j) sum[0] += v[i * W + j];
        }
        group_sum<THREADS, 1>(sum);
        m = sum[0] / nf;

#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            if (FULL || i * STEP < avail) {
#pragma unroll
                for (int j = 0; j < W; ++j) {
                    const float d = v[i * W + j] - m;
                    v[i * W + j] = d;
                    s[0] += d;
                    s[1] += d * d;
                }
            }
        }
    }
    group_sum<THREADS, 2>(s);
    const RowStats st = finish_stats(a, s[0], s[1], nf);
    if (lane == 0) {
        if (a.mean) a.mean[row] = m + st.c;
        if (a.inv_std) a.inv_std[row] = st.inv;
    }
    T* y = static_cast<T*>(a.y) + row * n + lane * W;
    const T* scale = a.scale ? static_cast<const T*>(a.scale) + lane * W : nullptr;
    const T* bias = a.bias ? static_cast<const T*>(a.bias) + lane * W : nullptr;
    const Pack<T, W>* r = raw;
    const int mode = ((a.flags & FLAG_ADANORM) ? 4 : 0) | (a.scale ? 2 : 0) | (a.bias ? 1 : 0);
#define OUTPUT_CASE(M, ADA, SCALE, BIAS)                                                         \
    case M:                                                                                        \
        output_pass<T, THREADS, LOADS, W, FULL, RAW, ADA, SCALE, BIAS>(a, y, scale, bias, r, v, m, st, avail); \
        break;
    switch (mode) {
        OUTPUT_CASE(0, false, false, false)
        OUTPUT_CASE(1, false, false, true)
        OUTPUT_CASE(2, false, true, false)
        OUTPUT_CASE(3, false, true, true)
        OUTPUT_CASE(4, true, false, false)
        OUTPUT_CASE(5, true, false, true)
        OUTPUT_CASE(6, true, true, false)
        OUTPUT_CASE(7, true, true, true)
    }
#undef OUTPUT_CASE
}

template <typename T, int THREADS, int LOADS, int W>
__device__ __forceinline__ void row_body(const AdaNormArgs& a) {
    constexpr int ROWS_PER_BLOCK = THREADS == 32 ? WARP_ROWS : 1;
    const long long row = (long long)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / THREADS;
    // A whole warp leaves together (rows are warp-aligned), so shuffles and barriers see only
    // full warps / blocks.
    if (row >= a.rows) return;
    const int lane = threadIdx.x % THREADS;
    // Block kernels: rows that fill every pack of every thread (4096 = 128 threads x 32 ...) take
    // a copy of the code without bounds checks. Vectorised only, to bound code size; not in warp
    // kernels, where it measured slower (see output_pass).
    constexpr bool FULL_OK = W > 1 && THREADS > 32;
    if constexpr (FULL_OK) {
        if (a.row_len == (long long)THREADS * LOADS * W) {
            row_core<T, THREADS, LOADS, W, true>(a, row, lane);
            return;
        }
    }
    row_core<T, THREADS, LOADS, W, false>(a, row, lane);
}

// loop strategy for rows longer than the register budget: three passes over global memory.
template <typename T, int W>
__device__ __forceinline__ void loop_body(const AdaNormArgs& a) {
    const long long n = a.row_len;
    const float nf = (float)n;
    const long long step = (long long)LOOP_THREADS * W;
    {
        const long long row = blockIdx.x;
        const T* x = static_cast<const T*>(a.x) + row * n;
        float sum[1] = {0.0f};
        for (long long col = (long long)threadIdx.x * W; col < n; col += step) {
            const Pack<T, W> p = load<T, W>(x + col);
#pragma unroll
            for (int j = 0; j < W; ++j) sum[0] += to_f32(p.v[j]);
        }
        group_sum<LOOP_THREADS, 1>(sum);
        const float m = sum[0] / nf;

        float s[2] = {0.0f, 0.0f};
        for (long long col = (long long)threadIdx.x * W; col < n; col += step) {
            const Pack<T, W> p = load<T, W>(x + col);
#pragma unroll
            for (int j = 0; j < W; ++j) {
                const float d = to_f32(p.v[j]) - m;
                s[0] += d;
                s[1] += d * d;
            }
        }
        group_sum<LOOP_THREADS, 2>(s);
        const RowStats st = finish_stats(a, s[0], s[1], nf);
        if (threadIdx.x == 0) {
            if (a.mean) a.mean[row] = m + st.c;
            if (a.inv_std) a.inv_std[row] = st.inv;
        }
        for (long long col = (long long)threadIdx.x * W; col < n; col += step) {
            const Pack<T, W> p = load<T, W>(x + col);
            float d[W];
#pragma unroll
            for (int j = 0; j < W; ++j) d[j] = to_f32(p.v[j]) - m;
            write_pack<T, W>(a, static_cast<T*>(a.y) + row * n + col,
                             a.scale ? static_cast<const T*>(a.scale) + col : nullptr,
                             a.bias ? static_cast<const T*>(a.bias) + col : nullptr, d, st);
        }
    }
}

// Entry points. Names: adanorm_<dtype>_t<threads per row>_e<elements per thread>_<v|s>, and
// adanorm_<dtype>_loop_<v|s>. src/config.rs builds the same list; a unit test checks that every
// name it builds is an entry of the PTX and vice versa.
// Threads per block; the second launch bound (blocks per SM) caps registers at 64 so at least
// 1024 threads (32 warps) stay resident per SM to keep enough loads in flight. Tighter bounds
// (48 registers) spill.
#define ROW_BLOCK(THREADS) (THREADS == 32 ? 32 * WARP_ROWS : THREADS)
#define ROW_KERNEL(TN, T, THREADS, E, W, KIND)                                                    \
    extern "C" __global__ void __launch_bounds__(ROW_BLOCK(THREADS), 1024 / ROW_BLOCK(THREADS)) \
        adanorm_##TN##_t##THREADS##_e##E##_##KIND(AdaNormArgs a) {                                \
        row_body<T, THREADS, E / W, W>(a);                                                        \
    }

#define LOOP_KERNEL(TN, T, W, KIND)                                                                \
    extern "C" __global__ void __launch_bounds__(LOOP_THREADS) adanorm_##TN##_loop_##KIND(AdaNormArgs a) { \
        loop_body<T, W>(a);                                                                        \
    }

#define WARP_SCALAR(TN, T)                                                                         \
    ROW_KERNEL(TN, T, 32, 1, 1, s)                                                                 \
    ROW_KERNEL(TN, T, 32, 2, 1, s)                                                                 \
    ROW_KERNEL(TN, T, 32, 4, 1, s)                                                                 \
    ROW_KERNEL(TN, T, 32, 8, 1, s)                                                                 \
    ROW_KERNEL(TN, T, 32, 16, 1, s)                                                                \
    ROW_KERNEL(TN, T, 32, 32, 1, s)

// Scalar block kernels stop at 16 elements per thread: 32 separately predicated loads spill
// under the 64-register bound; longer unaligned rows take the loop kernel.
#define BLOCK_FAMILY(TN, T, THREADS, V)                                                            \
    ROW_KERNEL(TN, T, THREADS, 8, V, v)                                                            \
    ROW_KERNEL(TN, T, THREADS, 16, V, v)                                                           \
    ROW_KERNEL(TN, T, THREADS, 32, V, v)                                                           \
    ROW_KERNEL(TN, T, THREADS, 8, 1, s)                                                            \
    ROW_KERNEL(TN, T, THREADS, 16, 1, s)

#define DTYPE_KERNELS(TN, T, V)                                                                    \
    WARP_SCALAR(TN, T)                                                                             \
    BLOCK_FAMILY(TN, T, 128, V)                                                                    \
    BLOCK_FAMILY(TN, T, 256, V)                                                                    \
    BLOCK_FAMILY(TN, T, 512, V)                                                                    \
    BLOCK_FAMILY(TN, T, 1024, V)                                                                   \
    LOOP_KERNEL(TN, T, V, v)                                                                       \
    LOOP_KERNEL(TN, T, 1, s)

#ifdef ADANORM_F32
// 16 bytes = 4 floats: vectorised warp kernels hold 4..32 elements per lane.
ROW_KERNEL(f32, float, 32, 4, 4, v)
ROW_KERNEL(f32, float, 32, 8, 4, v)
ROW_KERNEL(f32, float, 32, 16, 4, v)
ROW_KERNEL(f32, float, 32, 32, 4, v)
DTYPE_KERNELS(f32, float, 4)
#endif

#ifdef ADANORM_F16
// 16 bytes = 8 halves: vectorised warp kernels hold 8..32 elements per lane.
ROW_KERNEL(f16, __half, 32, 8, 8, v)
ROW_KERNEL(f16, __half, 32, 16, 8, v)
ROW_KERNEL(f16, __half, 32, 32, 8, v)
DTYPE_KERNELS(f16, __half, 8)
#endif

#ifdef ADANORM_BF16
ROW_KERNEL(bf16, __nv_bfloat16, 32, 8, 8, v)
ROW_KERNEL(bf16, __nv_bfloat16, 32, 16, 8, v)
ROW_KERNEL(bf16, __nv_bfloat16, 32, 32, 8, v)
DTYPE_KERNELS(bf16, __nv_bfloat16, 8)
#endif

#ifdef ADANORM_MISC
// Broadcasts a Scale/B of any unidirectionally broadcastable shape to one full row, so the row
// kernels can index it by position. Keep in sync with `ExpandArgs` in src/launch.rs.
#define EXPAND_MAX_DIMS 8
struct ExpandArgs {
    const void* src;
    void* dst;
    long long n;                         // elements of dst (the row length)
    long long dims[EXPAND_MAX_DIMS];     // the normalised shape X.shape[axis:]
    long long strides[EXPAND_MAX_DIMS];  // src stride per dim; 0 where the parameter broadcasts
    int ndim;
    int pad;
};

template <typename U>
__device__ __forceinline__ void expand_body(const ExpandArgs& a) {
    const U* src = static_cast<const U*>(a.src);
    U* dst = static_cast<U*>(a.dst);
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < a.n;
         j += (long long)gridDim.x * blockDim.x) {
        long long rest = j, at = 0;
        for (int d = a.ndim - 1; d >= 0; --d) {
            at += (rest % a.dims[d]) * a.strides[d];
            rest /= a.dims[d];
        }
        dst[j] = src[at];
    }
}

extern "C" __global__ void expand_b16(ExpandArgs a) { expand_body<unsigned short>(a); }
extern "C" __global__ void expand_b32(ExpandArgs a) { expand_body<unsigned int>(a); }

// A plain 16-byte copy: the benchmark's second bandwidth floor beside cuMemcpyDtoD.
extern "C" __global__ void copy_v4(const uint4* src, uint4* dst, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        dst[i] = src[i];
}
#endif
