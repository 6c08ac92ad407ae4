// Flow-estimator kernels (minmo_kernels/flow_est.h). Per estimator call they sit between the fp32
// products (cuBLAS), so each is one launch over the whole batch of both guidance branches:
//   causal im2col: one thread per output column, looping over a slice of rows (like hift_net.cu);
//     the context rows for the next call are written by the threads of the first grid row.
//   norm + act: one 256-thread block per row, two reductions (mean, variance) in fp32.
//   attention: one 4-warp block per (query row, head, branch); each warp runs an online softmax
//     over every 4th key (a lane holds head_dim / 32 dims of q and of the accumulator), then the
//     warps' partials combine through shared memory. The block for query row i also appends its
//     head's slice of key / value row i to the cache (other blocks read the new rows from qkv, not
//     from the cache, so there is no race).
//   compact: one block per cache, rows moved in ascending order with a barrier between row tiles
//     (the destination is below the source, so a tile never overwrites rows still to be read).
#include <cmath>

#include "../common/flow_est_args.h"
#include "cuda_util.cuh"

namespace {

constexpr int kThreads = 256;

__global__ void causal_im2col_kernel(const float* __restrict__ x, const float* __restrict__ ctx,
                                     float* __restrict__ ctx_next, float* __restrict__ out, int64_t batch, int64_t n,
                                     int64_t C, int k, int64_t ld) {
  const int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, width = C * k, keep = k - 1;
  if (col >= ld) return;
  const int64_t c = col / k, j = col - c * k;
  for (int64_t row = blockIdx.y; row < batch * n; row += gridDim.y) {
    const int64_t b = row / n, t = row - b * n, r = t + j;  // r: row of [ctx; x]
    float v;
    if (col < width) v = r < keep ? __ldg(ctx + (b * keep + r) * C + c) : __ldg(x + (b * n + r - keep) * C + c);
    else v = col == width ? 1.f : 0.f;
    out[row * ld + col] = v;
  }
  if (blockIdx.y == 0 && col < C) {  // col doubles as the channel here
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t r = 0; r < keep; ++r) {
        const int64_t s = n + r;
        ctx_next[(b * keep + r) * C + col] =
            s < keep ? __ldg(ctx + (b * keep + s) * C + col) : __ldg(x + (b * n + s - keep) * C + col);
      }
  }
}

__global__ void norm_act_kernel(float* x, const float* __restrict__ gamma, const float* __restrict__ beta,
                                const float* __restrict__ post_bias, const float* __restrict__ add, float* out,
                                int64_t C, int64_t ld, float eps, int act) {
  float* xr = x + blockIdx.x * C;
  float* o = out + blockIdx.x * ld;
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += xr[c];
  const float mean = minmo_cuda::block_sum(s) / float(C);
  float v2 = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float d = xr[c] - mean;
    v2 += d * d;
  }
  const float inv = rsqrtf(minmo_cuda::block_sum(v2) / float(C) + eps);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float y = (xr[c] - mean) * inv * __ldg(gamma + c) + (beta ? __ldg(beta + c) : 0.f);
    if (act == MINMO_FLOW_ACT_MISH) y = y * tanhf(y > 20.f ? y : log1pf(expf(y)));
    if (add) y += __ldg(add + c);
    if (post_bias) xr[c] += __ldg(post_bias + c);
    o[c] = y;
  }
  for (int64_t c = C + threadIdx.x; c < ld; c += blockDim.x) o[c] = c == C ? 1.f : 0.f;
}

constexpr int kAttnWarps = 4;
constexpr int kMaxPerLane = MINMO_FLOW_MAX_HEAD_DIM / 32;

// grid (n, heads, batch), 128 threads.
__global__ void attention_kernel(const float* __restrict__ qkv, float* k_cache, float* v_cache, float* __restrict__ out,
                                 const int32_t* __restrict__ rows, int64_t n, int64_t heads, int64_t hd, int64_t cap,
                                 float scale) {
  const int64_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, inner = heads * hd;
  const int64_t m0 = *rows, m = m0 + n;
  if (m0 < 0 || m > cap) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* blk = qkv + b * n * 3 * inner;
  const int per = static_cast<int>((hd + 31) / 32);
  float q[kMaxPerLane], acc[kMaxPerLane];
#pragma unroll
  for (int e = 0; e < kMaxPerLane; ++e) {
    const int64_t d = lane + 32 * e;
    q[e] = (e < per && d < hd) ? __ldg(blk + i * 3 * inner + h * hd + d) * scale : 0.f;
    acc[e] = 0.f;
  }
  float mx = -INFINITY, sum = 0.f;
  for (int64_t j = warp; j < m; j += kAttnWarps) {
    const float* kr = j < m0 ? k_cache + (b * cap + j) * inner + h * hd : blk + (j - m0) * 3 * inner + inner + h * hd;
    const float* vr = j < m0 ? v_cache + (b * cap + j) * inner + h * hd : blk + (j - m0) * 3 * inner + 2 * inner + h * hd;
    float s = 0.f;
#pragma unroll
    for (int e = 0; e < kMaxPerLane; ++e) {
      const int64_t d = lane + 32 * e;
      if (e < per && d < hd) s += q[e] * kr[d];
    }
    s = minmo_cuda::warp_sum(s);
    const float nm = fmaxf(mx, s), corr = expf(mx - nm), p = expf(s - nm);
    sum = sum * corr + p;
#pragma unroll
    for (int e = 0; e < kMaxPerLane; ++e) {
      const int64_t d = lane + 32 * e;
      if (e < per && d < hd) acc[e] = acc[e] * corr + p * vr[d];
    }
    mx = nm;
  }
  __shared__ float s_mx[kAttnWarps], s_sum[kAttnWarps];
  __shared__ float s_acc[kAttnWarps][MINMO_FLOW_MAX_HEAD_DIM];
  if (lane == 0) {
    s_mx[warp] = mx;
    s_sum[warp] = sum;
  }
#pragma unroll
  for (int e = 0; e < kMaxPerLane; ++e) {
    const int64_t d = lane + 32 * e;
    if (e < per && d < hd) s_acc[warp][d] = acc[e];
  }
  __syncthreads();
  float gm = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) gm = fmaxf(gm, s_mx[w]);
  float tot = 0.f, f[kAttnWarps];
  for (int w = 0; w < kAttnWarps; ++w) {
    f[w] = s_mx[w] == -INFINITY ? 0.f : expf(s_mx[w] - gm);
    tot += s_sum[w] * f[w];
  }
  for (int64_t d = threadIdx.x; d < hd; d += blockDim.x) {
    float a = 0.f;
    for (int w = 0; w < kAttnWarps; ++w) a += s_acc[w][d] * f[w];
    out[(b * n + i) * inner + h * hd + d] = a / tot;
    k_cache[(b * cap + m0 + i) * inner + h * hd + d] = blk[i * 3 * inner + inner + h * hd + d];
    v_cache[(b * cap + m0 + i) * inner + h * hd + d] = blk[i * 3 * inner + 2 * inner + h * hd + d];
  }
}

__global__ void compact_kernel(float* caches, int64_t stride, int64_t width, int64_t first, int64_t last,
                               int64_t rows) {
  float* base = caches + blockIdx.x * stride;
  const int64_t total = (rows - last) * width, shift = (last - first) * width;
  for (int64_t t0 = 0; t0 < total; t0 += blockDim.x) {
    const int64_t t = t0 + threadIdx.x;
    float v = 0.f;
    if (t < total) v = base[shift + first * width + t];
    __syncthreads();  // the tile is read before any of it is written
    if (t < total) base[first * width + t] = v;
    __syncthreads();
  }
}

__global__ void gelu_kernel(float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = y[i];
    y[i] = 0.5f * v * (1.f + erff(v * 0.70710678118654752440f));
  }
}

__global__ void copy_rows_kernel(const float* __restrict__ src, int64_t lds, int64_t src_rows, float* __restrict__ dst,
                                 int64_t ldd, int64_t rows, int64_t cols) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) dst[r * ldd + c] = __ldg(src + (r % src_rows) * lds + c);
}

unsigned int grid_rows(int64_t rows) { return static_cast<unsigned int>(std::min<int64_t>(rows, 65535)); }

}  // namespace

extern "C" int minmo_flow_causal_im2col_f32(const float* x, const float* ctx, float* ctx_next, float* out,
                                            int64_t batch, int64_t n, int64_t C, int32_t k, int64_t ld,
                                            cudaStream_t stream) {
  if (!minmo_args::flow_im2col_ok(x, ctx, ctx_next, out, batch, n, C, k, ld)) return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t cols = std::max(ld, C);
  const dim3 grid(static_cast<unsigned int>((cols + kThreads - 1) / kThreads), grid_rows(std::min<int64_t>(batch * n, 256)));
  causal_im2col_kernel<<<grid, kThreads, 0, stream>>>(x, ctx, ctx_next, out, batch, n, C, k, ld);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_flow_norm_act_f32(float* x, const float* gamma, const float* beta, const float* post_bias,
                                       const float* add, float* out, int64_t rows, int64_t C, int64_t ld, float eps,
                                       int32_t act, cudaStream_t stream) {
  if (!minmo_args::flow_norm_ok(x, gamma, beta, post_bias, add, out, rows, C, ld, act) || rows >= (int64_t{1} << 31))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  norm_act_kernel<<<static_cast<unsigned int>(rows), kThreads, 0, stream>>>(x, gamma, beta, post_bias, add, out, C, ld,
                                                                           eps, act);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_flow_attention_f32(const float* qkv, float* k_cache, float* v_cache, float* out,
                                        const int32_t* rows, int64_t batch, int64_t n, int64_t heads, int64_t hd,
                                        int64_t cap, float scale, cudaStream_t stream) {
  if (!minmo_args::flow_attention_ok(qkv, k_cache, v_cache, out, rows, batch, n, heads, hd, cap) || batch > 65535 ||
      n >= (int64_t{1} << 31))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const dim3 grid(static_cast<unsigned int>(n), static_cast<unsigned int>(heads), static_cast<unsigned int>(batch));
  attention_kernel<<<grid, 32 * kAttnWarps, 0, stream>>>(qkv, k_cache, v_cache, out, rows, n, heads, hd, cap, scale);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_flow_kv_compact_f32(float* caches, int64_t count, int64_t stride, int64_t width, int64_t first,
                                         int64_t last, int64_t rows, cudaStream_t stream) {
  if (!minmo_args::flow_compact_ok(caches, count, stride, width, first, last, rows) || count >= (int64_t{1} << 31))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  if (first == last || last == rows) return MINMO_KERNEL_OK;
  compact_kernel<<<static_cast<unsigned int>(count), 1024, 0, stream>>>(caches, stride, width, first, last, rows);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_flow_gelu_f32(float* y, int64_t n, cudaStream_t stream) {
  if (!y || n < 1) return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 65535);
  gelu_kernel<<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(y, n);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_flow_copy_rows_f32(const float* src, int64_t lds, int64_t src_rows, float* dst, int64_t ldd,
                                        int64_t rows, int64_t cols, cudaStream_t stream) {
  if (!minmo_args::flow_copy_rows_ok(src, lds, src_rows, dst, ldd, rows, cols)) return MINMO_KERNEL_INVALID_ARGUMENT;
  const dim3 grid(static_cast<unsigned int>((cols + kThreads - 1) / kThreads), grid_rows(rows));
  copy_rows_kernel<<<grid, kThreads, 0, stream>>>(src, lds, src_rows, dst, ldd, rows, cols);
  return minmo_cuda::launch_status();
}
