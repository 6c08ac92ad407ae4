// Fused residual add + RMSNorm (fp32, and bf16 activations around an fp32 residual): one block
// per row; each thread strides over the row twice
// (add + sum of squares, then scale). The second pass re-reads the row it just wrote, which
// stays in L1/L2 at model widths. Each element is touched by the same thread in both passes,
// so out may alias x.
#include "cuda_util.cuh"

namespace {

constexpr int kThreads = 256;

using minmo_cuda::warp_sum;

// Sum of v over the block (kThreads threads), returned to every thread.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[kThreads / 32];
  __shared__ float total;
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < kThreads / 32 ? partial[lane] : 0.f;
    w = warp_sum(w);
    if (lane == 0) total = w;
  }
  __syncthreads();
  return total;
}

__global__ void rmsnorm_residual_kernel(const float* x, float* __restrict__ residual,
                                        const float* __restrict__ gamma, float* out, int64_t dim, float eps) {
  const int64_t row = blockIdx.x;
  float* r = residual + row * dim;
  float* o = out + row * dim;
  const float* xr = x ? x + row * dim : nullptr;

  float ss = 0.f;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    float v = r[d];
    if (xr) {
      v += xr[d];
      r[d] = v;
    }
    ss += v * v;
  }
  const float s = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) o[d] = r[d] * s * gamma[d];
}

__global__ void rmsnorm_residual_bf16_kernel(const __nv_bfloat16* x, float* __restrict__ residual,
                                             const __nv_bfloat16* __restrict__ gamma, __nv_bfloat16* out,
                                             int64_t dim, float eps) {
  const int64_t row = blockIdx.x;
  float* r = residual + row * dim;
  __nv_bfloat16* o = out + row * dim;
  const __nv_bfloat16* xr = x ? x + row * dim : nullptr;
  float ss = 0.f;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    float v = r[d];
    if (xr) {
      v += __bfloat162float(xr[d]);
      r[d] = v;
    }
    ss += v * v;
  }
  const float s = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) o[d] = __float2bfloat16_rn(r[d] * s * __bfloat162float(gamma[d]));
}

}  // namespace

extern "C" int minmo_rmsnorm_residual_bf16(const minmo_bf16* x, float* residual, const minmo_bf16* gamma,
                                           minmo_bf16* out, int64_t rows, int64_t dim, float eps,
                                           cudaStream_t stream) {
  if (!residual || !gamma || !out || rows < 0 || dim <= 0 || rows > 0x7fffffff) return MINMO_KERNEL_INVALID_ARGUMENT;
  if (rows == 0) return MINMO_KERNEL_OK;
  rmsnorm_residual_bf16_kernel<<<static_cast<unsigned int>(rows), kThreads, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(x), residual, reinterpret_cast<const __nv_bfloat16*>(gamma),
      reinterpret_cast<__nv_bfloat16*>(out), dim, eps);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_rmsnorm_residual_f32(const float* x, float* residual, const float* gamma, float* out,
                                          int64_t rows, int64_t dim, float eps, cudaStream_t stream) {
  if (!residual || !gamma || !out || rows < 0 || dim <= 0 || out == residual || rows > 0x7fffffff)
    return MINMO_KERNEL_INVALID_ARGUMENT;
  if (rows == 0) return MINMO_KERNEL_OK;
  rmsnorm_residual_kernel<<<static_cast<unsigned int>(rows), kThreads, 0, stream>>>(x, residual, gamma, out, dim, eps);
  return minmo_cuda::launch_status();
}
