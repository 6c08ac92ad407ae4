// Fused decode-step products (minmo_kernels/fused.h), batch 1.
//
// Both kernels are the weight-only product of gemv.cu (same formats, 128-bit streaming loads)
// with a different epilogue. A block has 4 warps; an output unit (one row for the norm product,
// one RoPE pair of rows (i, i + D/2) for the QKV product) is computed by S = 1, 2 or 4 warps of
// a block, each over a contiguous 1/S of K, and the partial sums meet in shared memory (split-K
// inside the block: no second pass, no atomics). S grows while a lane would otherwise wait on
// more than 4 rounds of loads, K is short (<= 32 chunks per lane: long rows such as down-proj
// keep S = 1 and their tuned access pattern) and the warps still fit on the device at once.
//
// Norm epilogue: residual add + RMSNorm needs the whole output row, so it runs in the LAST block
// to finish: every block adds its rows' products into the fp32 residual, fences, and bumps a
// device counter; the block that sees count == gridDim.x - 1 reads the residual back from L2
// (__ldcg: other SMs wrote it; L1 is not coherent), normalises it into `out` and resets the
// counter to zero, so the next launch (or graph replay) starts from zero. Chosen over a prologue
// in the consumer (each block of the next product would re-read the residual and recompute the
// norm: at N = 3584 that is 28 KB of extra L2 reads per block for ~1000 blocks, and one block
// would still have to write the residual) and over a cooperative grid sync (needs every block
// resident and a cooperative launch). The cost is the norm of one row by one 128-thread block at
// the end (one L2 round trip for <= 4096 values held in registers), instead of a launch.
//
// QKV epilogue: the warp that owns pair (i, i + D/2) of a head has both values, so bias, RoPE and
// the cache append need no other block: the fused kernel writes q, k and v exactly as
// minmo_qkv_rope_append_bf16 would from the product (qkv_rope.cuh holds the shared code).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "../common/args.h"
#include "gemv_impl.cuh"
#include "qkv_rope.cuh"

namespace {

using namespace minmo_gemv;

constexpr int kNormVec = 8;  // float4s per thread kept in registers by the norm tail (dim <= 4096)

// This warp's share (1/S of K) of the dot products of x with rows[0..R), reduced over the warp.
template <int R, int S, bool kVec, typename F>
__device__ __forceinline__ void unit_dot(const __nv_bfloat16* __restrict__ x, const F& fmt, const int* rows, int64_t k,
                                         int part, float* acc) {
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.f;
  if constexpr (kVec) {
    const int64_t chunks = k / F::kElems;
    rows_dot_vec_part<R>(x, fmt, rows, k, static_cast<int>(chunks * part / S), static_cast<int>(chunks * (part + 1) / S),
                         acc);
  } else {
    rows_dot_scalar_part<R>(x, fmt, rows, k, k * part / S, k * (part + 1) / S, acc);
  }
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
}

// Sums the S partials of each unit through shared memory; returns true in the one thread (lane 0
// of the unit's first warp) that holds the unit's totals in acc. Every thread of the block must
// call it (it synchronises the block when S > 1).
template <int R, int S>
__device__ __forceinline__ bool gather_parts(float* acc) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  if constexpr (S > 1) {
    __shared__ float parts[kWarps][R];
    if (lane == 0)
#pragma unroll
      for (int r = 0; r < R; ++r) parts[warp][r] = acc[r];
    __syncthreads();
    if (lane == 0 && warp % S == 0)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float t = 0.f;
#pragma unroll
        for (int p = 0; p < S; ++p) t += parts[warp + p][r];
        acc[r] = t;
      }
  }
  return lane == 0 && warp % S == 0;
}

// out = bf16(r * rsqrt(mean(r^2) + eps) * gamma) for one row, by the whole block; r is read past
// L1. vec: dim % 4 == 0, r 16-byte and gamma / out 8-byte aligned.
__device__ void norm_tail(const float* r, const __nv_bfloat16* __restrict__ gamma, __nv_bfloat16* out, int dim,
                          float eps, bool vec) {
  const int t = threadIdx.x, nt = blockDim.x;
  if (vec && dim <= 4 * kNormVec * nt) {
    const int d4 = dim / 4;
    float4 v[kNormVec];
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < kNormVec; ++i) {
      const int c = t + i * nt;
      v[i] = c < d4 ? __ldcg(reinterpret_cast<const float4*>(r) + c) : make_float4(0.f, 0.f, 0.f, 0.f);
      ss += v[i].x * v[i].x + v[i].y * v[i].y + v[i].z * v[i].z + v[i].w * v[i].w;
    }
    const float inv = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
#pragma unroll
    for (int i = 0; i < kNormVec; ++i) {
      const int c = t + i * nt;
      if (c < d4) {
        const uint2 g = *reinterpret_cast<const uint2*>(gamma + 4 * c);
        const __nv_bfloat162 lo = __floats2bfloat162_rn(v[i].x * inv * bf16_lo(g.x), v[i].y * inv * bf16_hi(g.x));
        const __nv_bfloat162 hi = __floats2bfloat162_rn(v[i].z * inv * bf16_lo(g.y), v[i].w * inv * bf16_hi(g.y));
        uint2 o;
        o.x = *reinterpret_cast<const uint32_t*>(&lo);
        o.y = *reinterpret_cast<const uint32_t*>(&hi);
        *reinterpret_cast<uint2*>(out + 4 * c) = o;
      }
    }
  } else {
    float ss = 0.f;
    for (int d = t; d < dim; d += nt) {
      const float a = __ldcg(r + d);
      ss += a * a;
    }
    const float inv = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
    for (int d = t; d < dim; d += nt) out[d] = __float2bfloat16_rn(__ldcg(r + d) * inv * __bfloat162float(gamma[d]));
  }
}

// Grid ceil(n / (kWarps / S)); unit = output row.
template <int S, bool kVec, typename F>
__device__ __forceinline__ void gemv_norm_body(const __nv_bfloat16* __restrict__ x, const F& fmt, float* residual,
                                               const __nv_bfloat16* __restrict__ gamma, __nv_bfloat16* out,
                                               unsigned int* counter, int n, int64_t k, float eps, bool vec_norm) {
  __shared__ int last;
  const int row = blockIdx.x * (kWarps / S) + threadIdx.x / 32 / S;
  const int rows[1] = {row < n ? row : n - 1};  // past-the-end warps compute a dummy row, never stored
  float acc[1];
  unit_dot<1, S, kVec>(x, fmt, rows, k, (threadIdx.x / 32) % S, acc);
  if (gather_parts<1, S>(acc) && row < n) {
    residual[row] += acc[0] * fmt.row_scale(row);
    __threadfence();  // this row's sum is visible device-wide before the block is counted
  }
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();  // every other block's rows are visible (they fenced before counting)
  norm_tail(residual, gamma, out, n, eps, vec_norm);
  if (threadIdx.x == 0) *counter = 0u;  // all blocks have counted: ready for the next launch
}

// Grid ceil(pairs / (kWarps / S)); unit = pair (i, i + D/2) of head h, pairs = (Hq + 2 Hkv) D / 2.
template <int S, bool kVec, typename F>
__device__ __forceinline__ void gemv_qkv_body(const __nv_bfloat16* __restrict__ x, const F& fmt,
                                              const __nv_bfloat16* __restrict__ bias, const int32_t* __restrict__ pos,
                                              __nv_bfloat16* q_out, __nv_bfloat16* kc, __nv_bfloat16* vc, int heads_q,
                                              int heads_kv, int head_dim, int64_t max_seq, float log2_theta,
                                              int64_t k) {
  const int half = head_dim / 2, pairs = (heads_q + 2 * heads_kv) * half;
  const int unit = blockIdx.x * (kWarps / S) + threadIdx.x / 32 / S;
  const int u = unit < pairs ? unit : pairs - 1;  // past-the-end warps compute a dummy pair, never stored
  const int h = u / half, i = u % half;
  const int rows[2] = {h * head_dim + i, h * head_dim + i + half};
  float acc[2];
  unit_dot<2, S, kVec>(x, fmt, rows, k, (threadIdx.x / 32) % S, acc);
  if (gather_parts<2, S>(acc) && unit < pairs) {
    float a = acc[0] * fmt.row_scale(rows[0]), b = acc[1] * fmt.row_scale(rows[1]);
    if (bias) {
      a += __bfloat162float(bias[rows[0]]);
      b += __bfloat162float(bias[rows[1]]);
    }
    qkv_store_pair(a, b, h, i, static_cast<int64_t>(*pos), q_out, kc, vc, heads_q, heads_kv, head_dim, max_seq,
                   log2_theta);
  }
}

// FP8 bodies exist for sm_89+ only; older targets get a trapping body (never launched: the entry
// points check fp8_ok() first).
template <typename F>
__host__ __device__ constexpr bool arch_ok() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 890
  return !std::is_same<F, Fp8Fmt>::value;
#else
  return true;
#endif
}

template <int S, bool kVec, typename F>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_norm_kernel(const __nv_bfloat16* __restrict__ x, F fmt, float* residual,
                     const __nv_bfloat16* __restrict__ gamma, __nv_bfloat16* out, unsigned int* counter, int n,
                     int64_t k, float eps, bool vec_norm) {
  if constexpr (arch_ok<F>())
    gemv_norm_body<S, kVec>(x, fmt, residual, gamma, out, counter, n, k, eps, vec_norm);
  else
    __trap();
}

template <int S, bool kVec, typename F>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_qkv_kernel(const __nv_bfloat16* __restrict__ x, F fmt, const __nv_bfloat16* __restrict__ bias,
                    const int32_t* __restrict__ pos, __nv_bfloat16* q_out, __nv_bfloat16* kc, __nv_bfloat16* vc,
                    int heads_q, int heads_kv, int head_dim, int64_t max_seq, float log2_theta, int64_t k) {
  if constexpr (arch_ok<F>())
    gemv_qkv_body<S, kVec>(x, fmt, bias, pos, q_out, kc, vc, heads_q, heads_kv, head_dim, max_seq, log2_theta, k);
  else
    __trap();
}

// Warps per unit (see the file comment). units: outputs; loads: 16-byte chunks per unit per lane.
int pick_split(int64_t units, int64_t loads_per_lane, bool vec) {
  if (!vec || loads_per_lane > 32) return 1;
  const int64_t slots = resident_warps();
  int s = 1;
  while (s < 4 && (loads_per_lane + s - 1) / s > 4 && units * 2 * s <= slots) s *= 2;
  return s;
}

// Calls fn(integral_constant<int, S>, integral_constant<bool, kVec>) for the chosen variant.
template <typename Fn>
void by_variant(int s, bool vec, Fn fn) {
  using std::integral_constant;
  if (!vec) return fn(integral_constant<int, 1>{}, integral_constant<bool, false>{});
  if (s == 4) return fn(integral_constant<int, 4>{}, integral_constant<bool, true>{});
  if (s == 2) return fn(integral_constant<int, 2>{}, integral_constant<bool, true>{});
  fn(integral_constant<int, 1>{}, integral_constant<bool, true>{});
}

template <typename F>
bool vec_ok(const minmo_bf16* x, const F& fmt, int64_t k) {
  return k % F::kElems == 0 && aligned16(x) && aligned16(fmt.w);
}

template <typename F>
int run_norm(const minmo_bf16* xb, const F& fmt, float* residual, const minmo_bf16* gammab, minmo_bf16* outb,
             uint32_t* counter, int64_t n, int64_t k, float eps, cudaStream_t stream) {
  const bool vec = vec_ok(xb, fmt, k);
  const int64_t chunks = k / F::kElems;
  const int s = pick_split(n, (chunks + 31) / 32, vec);
  const bool vec_norm = n % 4 == 0 && aligned16(residual) && (reinterpret_cast<uintptr_t>(gammab) & 7u) == 0 &&
                        (reinterpret_cast<uintptr_t>(outb) & 7u) == 0;
  const auto* x = reinterpret_cast<const __nv_bfloat16*>(xb);
  const auto* gamma = reinterpret_cast<const __nv_bfloat16*>(gammab);
  auto* out = reinterpret_cast<__nv_bfloat16*>(outb);
  by_variant(s, vec, [&](auto sc, auto vc) {
    constexpr int S = decltype(sc)::value;
    const unsigned blocks = static_cast<unsigned>((n + kWarps / S - 1) / (kWarps / S));
    gemv_norm_kernel<S, decltype(vc)::value><<<blocks, kWarps * 32, 0, stream>>>(
        x, fmt, residual, gamma, out, counter, static_cast<int>(n), k, eps, vec_norm);
  });
  return launch_status();
}

template <typename F>
int run_qkv(const minmo_bf16* xb, const F& fmt, const minmo_bf16* biasb, const int32_t* pos, minmo_bf16* q_out,
            minmo_bf16* k_cache, minmo_bf16* v_cache, int64_t heads_q, int64_t heads_kv, int64_t head_dim,
            int64_t max_seq, int64_t k, float theta, cudaStream_t stream) {
  const bool vec = vec_ok(xb, fmt, k);
  const int64_t chunks = k / F::kElems, pairs = (heads_q + 2 * heads_kv) * head_dim / 2;
  const int s = pick_split(pairs, 2 * ((chunks + 31) / 32), vec);
  const float log2_theta = static_cast<float>(std::log2(static_cast<double>(theta)));
  by_variant(s, vec, [&](auto sc, auto vc) {
    constexpr int S = decltype(sc)::value;
    const unsigned blocks = static_cast<unsigned>((pairs + kWarps / S - 1) / (kWarps / S));
    gemv_qkv_kernel<S, decltype(vc)::value><<<blocks, kWarps * 32, 0, stream>>>(
        reinterpret_cast<const __nv_bfloat16*>(xb), fmt, reinterpret_cast<const __nv_bfloat16*>(biasb), pos,
        reinterpret_cast<__nv_bfloat16*>(q_out), reinterpret_cast<__nv_bfloat16*>(k_cache),
        reinterpret_cast<__nv_bfloat16*>(v_cache), static_cast<int>(heads_q), static_cast<int>(heads_kv),
        static_cast<int>(head_dim), max_seq, log2_theta, k);
  });
  return launch_status();
}

}  // namespace

#define MINMO_NORM_ARGS residual, gamma, out, counter, n, k, eps, stream
#define MINMO_NORM_CHECK(X, W)                                                                    \
  if (!minmo_args::gemv_norm_ok(X, W, residual, gamma, out, n, k) || !counter) return MINMO_KERNEL_INVALID_ARGUMENT
#define MINMO_QKV_ARGS bias, pos, q_out, k_cache, v_cache, heads_q, heads_kv, head_dim, max_seq, k, theta, stream
#define MINMO_QKV_CHECK(X, W)                                                                                  \
  if (!minmo_args::gemv_qkv_ok(X, W, pos, q_out, k_cache, v_cache, heads_q, heads_kv, head_dim, max_seq, k, theta)) \
  return MINMO_KERNEL_INVALID_ARGUMENT

extern "C" int minmo_gemv_norm_bf16(const minmo_bf16* x, const minmo_bf16* w, float* residual, const minmo_bf16* gamma,
                                    minmo_bf16* out, uint32_t* counter, int64_t n, int64_t k, float eps,
                                    cudaStream_t stream) {
  MINMO_NORM_CHECK(x, w);
  return run_norm(x, Bf16Fmt{w}, MINMO_NORM_ARGS);
}

extern "C" int minmo_gemv_norm_int8(const minmo_bf16* x, const int8_t* w, const float* scale, float* residual,
                                    const minmo_bf16* gamma, minmo_bf16* out, uint32_t* counter, int64_t n, int64_t k,
                                    float eps, cudaStream_t stream) {
  MINMO_NORM_CHECK(x, w);
  if (!scale) return MINMO_KERNEL_INVALID_ARGUMENT;
  return run_norm(x, Int8Fmt{w, scale}, MINMO_NORM_ARGS);
}

extern "C" int minmo_gemv_norm_int4(const minmo_bf16* x, const uint8_t* w, const minmo_bf16* scale,
                                    const uint8_t* zero, float* residual, const minmo_bf16* gamma, minmo_bf16* out,
                                    uint32_t* counter, int64_t n, int64_t k, int64_t group_size, float eps,
                                    cudaStream_t stream) {
  MINMO_NORM_CHECK(x, w);
  if (!scale || !minmo_args::int4_ok(k, group_size)) return MINMO_KERNEL_INVALID_ARGUMENT;
  return run_norm(x, int4_fmt(w, scale, zero, k, group_size), MINMO_NORM_ARGS);
}

extern "C" int minmo_gemv_norm_fp8(const minmo_bf16* x, const uint8_t* w, const float* scale, float* residual,
                                   const minmo_bf16* gamma, minmo_bf16* out, uint32_t* counter, int64_t n, int64_t k,
                                   float eps, cudaStream_t stream) {
  MINMO_NORM_CHECK(x, w);
  if (!scale) return MINMO_KERNEL_INVALID_ARGUMENT;
  if (!fp8_ok()) return MINMO_KERNEL_UNSUPPORTED;
  return run_norm(x, Fp8Fmt{w, scale}, MINMO_NORM_ARGS);
}

extern "C" int minmo_gemv_qkv_rope_bf16(const minmo_bf16* x, const minmo_bf16* w, const minmo_bf16* bias,
                                        const int32_t* pos, minmo_bf16* q_out, minmo_bf16* k_cache,
                                        minmo_bf16* v_cache, int64_t heads_q, int64_t heads_kv, int64_t head_dim,
                                        int64_t max_seq, int64_t k, float theta, cudaStream_t stream) {
  MINMO_QKV_CHECK(x, w);
  return run_qkv(x, Bf16Fmt{w}, MINMO_QKV_ARGS);
}

extern "C" int minmo_gemv_qkv_rope_int8(const minmo_bf16* x, const int8_t* w, const float* scale,
                                        const minmo_bf16* bias, const int32_t* pos, minmo_bf16* q_out,
                                        minmo_bf16* k_cache, minmo_bf16* v_cache, int64_t heads_q, int64_t heads_kv,
                                        int64_t head_dim, int64_t max_seq, int64_t k, float theta,
                                        cudaStream_t stream) {
  MINMO_QKV_CHECK(x, w);
  if (!scale) return MINMO_KERNEL_INVALID_ARGUMENT;
  return run_qkv(x, Int8Fmt{w, scale}, MINMO_QKV_ARGS);
}

extern "C" int minmo_gemv_qkv_rope_int4(const minmo_bf16* x, const uint8_t* w, const minmo_bf16* scale,
                                        const uint8_t* zero, const minmo_bf16* bias, const int32_t* pos,
                                        minmo_bf16* q_out, minmo_bf16* k_cache, minmo_bf16* v_cache, int64_t heads_q,
                                        int64_t heads_kv, int64_t head_dim, int64_t max_seq, int64_t k,
                                        int64_t group_size, float theta, cudaStream_t stream) {
  MINMO_QKV_CHECK(x, w);
  if (!scale || !minmo_args::int4_ok(k, group_size)) return MINMO_KERNEL_INVALID_ARGUMENT;
  return run_qkv(x, int4_fmt(w, scale, zero, k, group_size), MINMO_QKV_ARGS);
}

extern "C" int minmo_gemv_qkv_rope_fp8(const minmo_bf16* x, const uint8_t* w, const float* scale,
                                       const minmo_bf16* bias, const int32_t* pos, minmo_bf16* q_out,
                                       minmo_bf16* k_cache, minmo_bf16* v_cache, int64_t heads_q, int64_t heads_kv,
                                       int64_t head_dim, int64_t max_seq, int64_t k, float theta,
                                       cudaStream_t stream) {
  MINMO_QKV_CHECK(x, w);
  if (!scale) return MINMO_KERNEL_INVALID_ARGUMENT;
  if (!fp8_ok()) return MINMO_KERNEL_UNSUPPORTED;
  return run_qkv(x, Fp8Fmt{w, scale}, MINMO_QKV_ARGS);
}
