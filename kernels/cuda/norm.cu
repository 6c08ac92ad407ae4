// Fused residual add + RMSNorm (fp32, and bf16 activations around an fp32 residual) and residual
// add + LayerNorm (bf16 around fp32; two block reductions: the mean, then the centred variance):
// one block per row. At decode there is a single row, so the kernel is latency-bound: each thread
// loads its kPer elements of the row up front (all loads in flight at once), keeps them in
// registers for the reductions and the output, and never re-reads the row. Rows wider than
// 1024 * 16 take a strided loop that re-reads the residual row. Each element is read and written
// by one thread, so out may alias x.
#include "../common/args.h"
#include "cuda_util.cuh"

namespace {

using minmo_cuda::block_sum;

__device__ __forceinline__ float load_f(const float* p) { return *p; }
__device__ __forceinline__ float load_f(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store_f(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_f(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// Row `row` of the residual plus x for the register-resident kernels: v[i] = residual[d] + x[d] at
// d = threadIdx.x + i * blockDim.x (0 past the row); the sum is written back when x is given.
template <int kPer, typename TX>
__device__ __forceinline__ void add_residual_row(const TX* xr, float* r, int dim, float (&v)[kPer]) {
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int d = threadIdx.x + i * blockDim.x;
    v[i] = 0.f;
    if (d < dim) v[i] = r[d] + (xr ? load_f(xr + d) : 0.f);
  }
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int d = threadIdx.x + i * blockDim.x;
    if (xr && d < dim) r[d] = v[i];
  }
}

// The same for the strided-loop kernels: residual[d] += x[d] over the row (when x is given) and this
// thread's partial sum of the new residual values (kSquares: of their squares).
template <bool kSquares, typename TX>
__device__ __forceinline__ float add_residual_loop(const TX* xr, float* r, int64_t dim) {
  float sum = 0.f;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    float v = r[d];
    if (xr) {
      v += load_f(xr + d);
      r[d] = v;
    }
    sum += kSquares ? v * v : v;
  }
  return sum;
}

template <int kPer, typename TX, typename TG, typename TO>
__global__ void __launch_bounds__(1024) rmsnorm_reg_kernel(const TX* x, float* __restrict__ residual,
                                                           const TG* __restrict__ gamma, TO* out, int dim, float eps) {
  const int64_t row = blockIdx.x;
  float* r = residual + row * dim;
  const TX* xr = x ? x + row * dim : nullptr;
  float v[kPer];
  add_residual_row(xr, r, dim, v);
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) ss += v[i] * v[i];
  const float s = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
  TO* o = out + row * dim;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int d = threadIdx.x + i * blockDim.x;
    if (d < dim) store_f(o + d, v[i] * s * load_f(gamma + d));
  }
}

template <typename TX, typename TG, typename TO>
__global__ void __launch_bounds__(1024) rmsnorm_loop_kernel(const TX* x, float* __restrict__ residual,
                                                            const TG* __restrict__ gamma, TO* out, int64_t dim,
                                                            float eps) {
  const int64_t row = blockIdx.x;
  float* r = residual + row * dim;
  const TX* xr = x ? x + row * dim : nullptr;
  const float s = rsqrtf(block_sum(add_residual_loop<true>(xr, r, dim)) / static_cast<float>(dim) + eps);
  TO* o = out + row * dim;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) store_f(o + d, r[d] * s * load_f(gamma + d));
}

// LayerNorm row kernels: the same register-resident / strided-loop split as RMSNorm. gamma, beta:
// bf16 (beta nullable).
template <int kPer>
__global__ void __launch_bounds__(1024) layernorm_reg_kernel(const __nv_bfloat16* x, float* __restrict__ residual,
                                                             const __nv_bfloat16* __restrict__ gamma,
                                                             const __nv_bfloat16* __restrict__ beta,
                                                             __nv_bfloat16* out, int dim, float eps) {
  const int64_t row = blockIdx.x;
  float* r = residual + row * dim;
  const __nv_bfloat16* xr = x ? x + row * dim : nullptr;
  float v[kPer];
  add_residual_row(xr, r, dim, v);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) s += v[i];
  const float mean = block_sum(s) / static_cast<float>(dim);
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int d = threadIdx.x + i * blockDim.x;
    const float c = d < dim ? v[i] - mean : 0.f;
    ss += c * c;
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
  __nv_bfloat16* o = out + row * dim;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int d = threadIdx.x + i * blockDim.x;
    if (d < dim) store_f(o + d, (v[i] - mean) * inv * load_f(gamma + d) + (beta ? load_f(beta + d) : 0.f));
  }
}

__global__ void __launch_bounds__(1024) layernorm_loop_kernel(const __nv_bfloat16* x, float* __restrict__ residual,
                                                              const __nv_bfloat16* __restrict__ gamma,
                                                              const __nv_bfloat16* __restrict__ beta,
                                                              __nv_bfloat16* out, int64_t dim, float eps) {
  const int64_t row = blockIdx.x;
  float* r = residual + row * dim;
  const __nv_bfloat16* xr = x ? x + row * dim : nullptr;
  const float mean = block_sum(add_residual_loop<false>(xr, r, dim)) / static_cast<float>(dim);
  float ss = 0.f;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) ss += (r[d] - mean) * (r[d] - mean);
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
  __nv_bfloat16* o = out + row * dim;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
    store_f(o + d, (r[d] - mean) * inv * load_f(gamma + d) + (beta ? load_f(beta + d) : 0.f));
}

// Block shape of the row kernels: about dim / 4 threads (at least a warp, at most 1024) holding
// `per` elements each; per > 16 takes the strided loop.
struct RowShape {
  unsigned threads;
  int64_t per;
};
RowShape row_shape(int64_t dim) {
  const int64_t threads = std::min<int64_t>(1024, std::max<int64_t>(32, ((dim + 3) / 4 + 31) / 32 * 32));
  return {static_cast<unsigned>(threads), (dim + threads - 1) / threads};
}

template <typename TX, typename TG, typename TO>
int launch(const TX* x, float* residual, const TG* gamma, TO* out, int64_t rows, int64_t dim, float eps,
           cudaStream_t stream) {
  if (rows == 0) return MINMO_KERNEL_OK;
  const unsigned grid = static_cast<unsigned>(rows);
  const RowShape shape = row_shape(dim);
  const int64_t per = shape.per;
  const unsigned t = shape.threads;
  const int d = static_cast<int>(std::min<int64_t>(dim, 1 << 30));
  if (per <= 4)
    rmsnorm_reg_kernel<4><<<grid, t, 0, stream>>>(x, residual, gamma, out, d, eps);
  else if (per <= 8)
    rmsnorm_reg_kernel<8><<<grid, t, 0, stream>>>(x, residual, gamma, out, d, eps);
  else if (per <= 16)
    rmsnorm_reg_kernel<16><<<grid, t, 0, stream>>>(x, residual, gamma, out, d, eps);
  else
    rmsnorm_loop_kernel<<<grid, 1024, 0, stream>>>(x, residual, gamma, out, dim, eps);
  return minmo_cuda::launch_status();
}

}  // namespace

extern "C" int minmo_rmsnorm_residual_bf16(const minmo_bf16* x, float* residual, const minmo_bf16* gamma,
                                           minmo_bf16* out, int64_t rows, int64_t dim, float eps,
                                           cudaStream_t stream) {
  if (!residual || !gamma || !out || rows < 0 || dim <= 0 || rows > 0x7fffffff) return MINMO_KERNEL_INVALID_ARGUMENT;
  return launch(reinterpret_cast<const __nv_bfloat16*>(x), residual, reinterpret_cast<const __nv_bfloat16*>(gamma),
                reinterpret_cast<__nv_bfloat16*>(out), rows, dim, eps, stream);
}

extern "C" int minmo_rmsnorm_residual_f32(const float* x, float* residual, const float* gamma, float* out,
                                          int64_t rows, int64_t dim, float eps, cudaStream_t stream) {
  if (!residual || !gamma || !out || rows < 0 || dim <= 0 || out == residual || rows > 0x7fffffff)
    return MINMO_KERNEL_INVALID_ARGUMENT;
  return launch(x, residual, gamma, out, rows, dim, eps, stream);
}

extern "C" int minmo_layernorm_residual_bf16(const minmo_bf16* x, float* residual, const minmo_bf16* gamma,
                                             const minmo_bf16* beta, minmo_bf16* out, int64_t rows, int64_t dim,
                                             float eps, cudaStream_t stream) {
  if (!minmo_args::layernorm_ok(x, residual, gamma, out, rows, dim)) return MINMO_KERNEL_INVALID_ARGUMENT;
  if (rows == 0) return MINMO_KERNEL_OK;
  const auto* xb = reinterpret_cast<const __nv_bfloat16*>(x);
  const auto* gb = reinterpret_cast<const __nv_bfloat16*>(gamma);
  const auto* bb = reinterpret_cast<const __nv_bfloat16*>(beta);
  auto* ob = reinterpret_cast<__nv_bfloat16*>(out);
  const unsigned grid = static_cast<unsigned>(rows);
  const RowShape shape = row_shape(dim);
  const int d = static_cast<int>(std::min<int64_t>(dim, 1 << 30));
  if (shape.per <= 4)
    layernorm_reg_kernel<4><<<grid, shape.threads, 0, stream>>>(xb, residual, gb, bb, ob, d, eps);
  else if (shape.per <= 8)
    layernorm_reg_kernel<8><<<grid, shape.threads, 0, stream>>>(xb, residual, gb, bb, ob, d, eps);
  else if (shape.per <= 16)
    layernorm_reg_kernel<16><<<grid, shape.threads, 0, stream>>>(xb, residual, gb, bb, ob, d, eps);
  else
    layernorm_loop_kernel<<<grid, 1024, 0, stream>>>(xb, residual, gb, bb, ob, dim, eps);
  return minmo_cuda::launch_status();
}
