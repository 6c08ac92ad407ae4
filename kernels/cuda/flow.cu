// Flow Euler step with the CFG combine: elementwise, one thread per element (grid-stride).
#include <cuda_runtime.h>

#include "minmo_kernels/flow.h"

namespace {

__global__ void flow_euler_cfg_kernel(float* __restrict__ x, const float* est, float* next_in, int64_t n, float cfg,
                                      float dt) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = (1.0f + cfg) * est[i] - cfg * est[n + i];
    const float y = x[i] + dt * v;
    x[i] = y;
    if (next_in) {
      next_in[i] = y;
      next_in[n + i] = y;
    }
  }
}

}  // namespace

extern "C" int minmo_flow_euler_cfg_f32(float* x, const float* est, float* next_in, int64_t n, float cfg, float dt,
                                        cudaStream_t stream) {
  if (!x || !est || n < 0) return MINMO_KERNEL_INVALID_ARGUMENT;
  if ((x < est + 2 * n && est < x + n) || (next_in && x < next_in + 2 * n && next_in < x + n))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  if (n == 0) return MINMO_KERNEL_OK;
  constexpr int kThreads = 256;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  flow_euler_cfg_kernel<<<static_cast<unsigned int>(blocks < 65535 ? blocks : 65535), kThreads, 0, stream>>>(
      x, est, next_in, n, cfg, dt);
  return cudaGetLastError() == cudaSuccess ? MINMO_KERNEL_OK : MINMO_KERNEL_LAUNCH_FAILED;
}
