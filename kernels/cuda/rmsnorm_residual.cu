// Fused residual add + RMSNorm: one block per row; each thread strides over the row twice
// (add + sum of squares, then scale). The second pass re-reads the row it just wrote, which
// stays in L1/L2 at model widths. Each element is touched by the same thread in both passes,
// so out may alias x.
#include <cuda_runtime.h>

#include "minmo_kernels.h"

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

__global__ void rmsnorm_residual_kernel(const float* x, float* __restrict__ residual,
                                        const float* __restrict__ gamma, float* out, int64_t dim, float eps) {
  __shared__ float partial[kThreads / 32];
  __shared__ float inv_rms;
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
  ss = warp_sum(ss);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = ss;
  __syncthreads();
  if (warp == 0) {
    float v = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : 0.f;
    v = warp_sum(v);
    if (lane == 0) inv_rms = rsqrtf(v / static_cast<float>(dim) + eps);
  }
  __syncthreads();
  const float s = inv_rms;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) o[d] = r[d] * s * gamma[d];
}

}  // namespace

extern "C" int minmo_rmsnorm_residual_f32(const float* x, float* residual, const float* gamma, float* out,
                                          int64_t rows, int64_t dim, float eps, cudaStream_t stream) {
  if (!residual || !gamma || !out || rows < 0 || dim <= 0 || out == residual || rows > 0x7fffffff)
    return MINMO_KERNEL_INVALID_ARGUMENT;
  if (rows == 0) return MINMO_KERNEL_OK;
  rmsnorm_residual_kernel<<<static_cast<unsigned int>(rows), kThreads, 0, stream>>>(x, residual, gamma, out, dim, eps);
  return cudaGetLastError() == cudaSuccess ? MINMO_KERNEL_OK : MINMO_KERNEL_LAUNCH_FAILED;
}
