// Flow-encoder kernels (minmo_kernels/rel_attention.h).
//   rel_attention: one block per (query row, head), 4 warps; each warp walks every 4th key with an
//     online softmax (a lane holds head_dim / 32 values of q + u, q + v and the output), the warps'
//     partial maxima / sums / outputs are combined in shared memory at the end. Key, value and
//     position rows are read as 32-lane coalesced rows.
//   layernorm: one block per row, two passes (mean, then centred variance) from global memory.
//   the rest: one thread per output value.
#include <cmath>

#include "../common/args.h"
#include "cuda_util.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int kAttnWarps = 4;
constexpr int kMaxPerLane = MINMO_REL_ATTN_MAX_HEAD_DIM / 32;

__global__ void rel_attention_kernel(const float* __restrict__ q, int64_t ldq, const float* __restrict__ k,
                                     const float* __restrict__ v, int64_t ldkv, const int32_t* __restrict__ key_rows,
                                     const int32_t* __restrict__ key_pe, int64_t keys, const float* __restrict__ p,
                                     int64_t ldp, const float* __restrict__ bu, const float* __restrict__ bv,
                                     float* __restrict__ out, int64_t ldo, int heads, int D, float scale) {
  const int64_t i = blockIdx.x / heads;
  const int h = static_cast<int>(blockIdx.x % heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float qu[kMaxPerLane], qv[kMaxPerLane], acc[kMaxPerLane];
#pragma unroll
  for (int t = 0; t < kMaxPerLane; ++t) {
    const int c = lane + 32 * t;
    const float qc = c < D ? q[i * ldq + h * D + c] : 0.f;
    qu[t] = c < D ? qc + bu[h * D + c] : 0.f;
    qv[t] = c < D ? qc + bv[h * D + c] : 0.f;
    acc[t] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int64_t j = warp; j < keys; j += kAttnWarps) {
    const int64_t r = key_rows[j];
    const float* kr = k + r * ldkv + h * D;
    const float* pr = p + (static_cast<int64_t>(key_pe[j]) + i) * ldp + h * D;
    float s = 0.f;
#pragma unroll
    for (int t = 0; t < kMaxPerLane; ++t) {
      const int c = lane + 32 * t;
      if (c < D) s += qu[t] * __ldg(kr + c) + qv[t] * __ldg(pr + c);
    }
    s = minmo_cuda::warp_sum(s) * scale;
    const float mn = fmaxf(m, s), corr = expf(m - mn), e = expf(s - mn);
    l = l * corr + e;
    const float* vr = v + r * ldkv + h * D;
#pragma unroll
    for (int t = 0; t < kMaxPerLane; ++t) {
      const int c = lane + 32 * t;
      if (c < D) acc[t] = acc[t] * corr + e * __ldg(vr + c);
    }
    m = mn;
  }
  __shared__ float sm[kAttnWarps], sl[kAttnWarps], sacc[kAttnWarps][MINMO_REL_ATTN_MAX_HEAD_DIM];
  if (lane == 0) {
    sm[warp] = m;
    sl[warp] = l;
  }
#pragma unroll
  for (int t = 0; t < kMaxPerLane; ++t) {
    const int c = lane + 32 * t;
    if (c < D) sacc[warp][c] = acc[t];
  }
  __syncthreads();
  float M = -INFINITY;
#pragma unroll
  for (int w = 0; w < kAttnWarps; ++w) M = fmaxf(M, sm[w]);
  float L = 0.f, f[kAttnWarps];
#pragma unroll
  for (int w = 0; w < kAttnWarps; ++w) {
    f[w] = sm[w] == -INFINITY ? 0.f : expf(sm[w] - M);
    L += sl[w] * f[w];
  }
  for (int c = threadIdx.x; c < D; c += blockDim.x) {
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) o += sacc[w][c] * f[w];
    out[i * ldo + h * D + c] = o / L;
  }
}

__global__ void rel_pos_enc_kernel(const int32_t* __restrict__ dist, int64_t count, int64_t dim, float* __restrict__ pe) {
  const int64_t half = dim / 2, idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= count * half) return;
  const int64_t i = idx / half, c = idx - i * half;
  const double w = exp(static_cast<double>(2 * c) * -(log(10000.0) / static_cast<double>(dim)));
  double s, co;
  sincos(static_cast<double>(dist[i]) * w, &s, &co);
  pe[i * dim + 2 * c] = static_cast<float>(s);
  pe[i * dim + 2 * c + 1] = static_cast<float>(co);
}

__global__ void layernorm_kernel(const float* x, int64_t ldx, const float* __restrict__ g, const float* __restrict__ b,
                                 float* out, int64_t ldo, int64_t dim, float eps, float scale) {
  const float* xr = x + blockIdx.x * ldx;
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) s += xr[c];
  const float mean = minmo_cuda::block_sum(s) / static_cast<float>(dim);
  float q = 0.f;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    const float d = xr[c] - mean;
    q += d * d;
  }
  const float inv = rsqrtf(minmo_cuda::block_sum(q) / static_cast<float>(dim) + eps);
  float* o = out + blockIdx.x * ldo;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) o[c] = scale * ((xr[c] - mean) * inv * g[c] + b[c]);
}

__global__ void silu_rows_kernel(float* y, int64_t rows, int64_t n, int64_t ld) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= rows * n) return;
  const int64_t r = idx / n, c = idx - r * n;
  const float v = y[r * ld + c];
  y[r * ld + c] = v / (1.f + expf(-v));
}

__global__ void embedding_rows_kernel(const float* __restrict__ table, const int32_t* __restrict__ ids,
                                      float* __restrict__ out, int64_t rows, int64_t vocab, int64_t dim, int64_t ldo) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= rows * dim) return;
  const int64_t r = idx / dim, c = idx - r * dim;
  const int32_t id = ids[r];
  out[r * ldo + c] = (id >= 0 && id < vocab) ? __ldg(table + int64_t{id} * dim + c) : NAN;
}

__global__ void repeat_rows_kernel(const float* __restrict__ ctx, int64_t ctx_rows, const float* __restrict__ x,
                                   int64_t rows, int64_t dim, int repeat, float* __restrict__ out) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= repeat * (ctx_rows + rows) * dim) return;
  const int64_t o = idx / dim, c = idx - o * dim, r = o / repeat;
  out[idx] = r < ctx_rows ? ctx[r * dim + c] : x[(r - ctx_rows) * dim + c];
}

bool grid_1d(int64_t n, unsigned* blocks) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  if (b > 0x7fffffff) return false;
  *blocks = static_cast<unsigned>(b);
  return true;
}

}  // namespace

extern "C" int minmo_rel_attention_f32(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv,
                                       const int32_t* key_rows, const int32_t* key_pe, int64_t keys, const float* p,
                                       int64_t ldp, const float* bias_u, const float* bias_v, float* out, int64_t ldo,
                                       int64_t rows, int32_t heads, int32_t head_dim, float scale,
                                       cudaStream_t stream) {
  if (!minmo_args::rel_attention_ok(q, ldq, k, v, ldkv, key_rows, key_pe, keys, p, ldp, bias_u, bias_v, out, ldo, rows,
                                    heads, head_dim) ||
      rows * heads > 0x7fffffff)
    return MINMO_KERNEL_INVALID_ARGUMENT;
  rel_attention_kernel<<<static_cast<unsigned>(rows * heads), 32 * kAttnWarps, 0, stream>>>(
      q, ldq, k, v, ldkv, key_rows, key_pe, keys, p, ldp, bias_u, bias_v, out, ldo, heads, head_dim, scale);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_rel_pos_enc_f32(const int32_t* dist, int64_t count, int64_t dim, float* pe, cudaStream_t stream) {
  unsigned blocks = 0;
  if (!minmo_args::rel_pos_enc_ok(dist, count, dim, pe) || !grid_1d(count * (dim / 2), &blocks))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  rel_pos_enc_kernel<<<blocks, kThreads, 0, stream>>>(dist, count, dim, pe);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_layernorm_f32(const float* x, int64_t ldx, const float* gamma, const float* beta, float* out,
                                   int64_t ldo, int64_t rows, int64_t dim, float eps, float scale, cudaStream_t stream) {
  if (!minmo_args::layernorm_f32_ok(x, ldx, gamma, beta, out, ldo, rows, dim) || rows > 0x7fffffff)
    return MINMO_KERNEL_INVALID_ARGUMENT;
  layernorm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, ldx, gamma, beta, out, ldo, dim, eps, scale);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_silu_rows_f32(float* y, int64_t rows, int64_t n, int64_t ld, cudaStream_t stream) {
  unsigned blocks = 0;
  if (!minmo_args::silu_rows_ok(y, rows, n, ld) || !grid_1d(rows * n, &blocks)) return MINMO_KERNEL_INVALID_ARGUMENT;
  silu_rows_kernel<<<blocks, kThreads, 0, stream>>>(y, rows, n, ld);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_embedding_rows_f32(const float* table, const int32_t* ids, float* out, int64_t rows, int64_t vocab,
                                        int64_t dim, int64_t ldo, cudaStream_t stream) {
  unsigned blocks = 0;
  if (!minmo_args::embedding_rows_ok(table, ids, out, rows, vocab, dim, ldo) || !grid_1d(rows * dim, &blocks))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  embedding_rows_kernel<<<blocks, kThreads, 0, stream>>>(table, ids, out, rows, vocab, dim, ldo);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_repeat_rows_f32(const float* ctx, int64_t ctx_rows, const float* x, int64_t rows, int64_t dim,
                                     int32_t repeat, float* out, cudaStream_t stream) {
  unsigned blocks = 0;
  if (!minmo_args::repeat_rows_ok(ctx, ctx_rows, x, rows, dim, repeat, out) ||
      !grid_1d(repeat * (ctx_rows + rows) * dim, &blocks))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  repeat_rows_kernel<<<blocks, kThreads, 0, stream>>>(ctx, ctx_rows, x, rows, dim, repeat, out);
  return minmo_cuda::launch_status();
}
