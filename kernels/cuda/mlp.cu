// Gated MLP epilogue and the encoder's bias / activation / residual epilogues (minmo_kernels/mlp.h):
// elementwise, grid-stride. The bias epilogues use a 2-D grid (column blocks x row slices) so each
// thread loads its bias element once and the index needs no division.
#include <algorithm>

#include "../common/args.h"
#include "cuda_util.cuh"

namespace {

__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.f + __expf(-g)) * u; }

__global__ void silu_mul_bf16_kernel(const __nv_bfloat16* __restrict__ gu, __nv_bfloat16* __restrict__ out,
                                     int64_t rows, int64_t ffn) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * ffn; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t m = i / ffn, f = i - m * ffn;
    out[i] = __float2bfloat16_rn(silu_mul(__bfloat162float(gu[m * 2 * ffn + f]), __bfloat162float(gu[m * 2 * ffn + ffn + f])));
  }
}

__global__ void silu_mul_f32_kernel(const float* __restrict__ gu, float* __restrict__ out, int64_t rows, int64_t ffn) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * ffn; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t m = i / ffn, f = i - m * ffn;
    out[i] = silu_mul(gu[m * 2 * ffn + f], gu[m * 2 * ffn + ffn + f]);
  }
}

__device__ __forceinline__ float act_f(float v, int act) {
  if (act == MINMO_ACT_GELU) return 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
  if (act == MINMO_ACT_RELU) return fmaxf(v, 0.f);
  return v;
}

__global__ void bias_act_kernel(__nv_bfloat16* y, const __nv_bfloat16* __restrict__ bias, int64_t rows, int64_t n,
                                int act) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float b = bias ? __bfloat162float(bias[i]) : 0.f;
  for (int64_t m = blockIdx.y; m < rows; m += gridDim.y) {
    __nv_bfloat16* e = y + m * n + i;
    *e = __float2bfloat16_rn(act_f(__bfloat162float(*e) + b, act));
  }
}

__global__ void bias_residual_kernel(const __nv_bfloat16* __restrict__ y, const __nv_bfloat16* __restrict__ bias,
                                     float* __restrict__ residual, int64_t rows, int64_t n) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float b = bias ? __bfloat162float(bias[i]) : 0.f;
  for (int64_t m = blockIdx.y; m < rows; m += gridDim.y) residual[m * n + i] += __bfloat162float(y[m * n + i]) + b;
}

// Grid of the bias epilogues: 256-thread column blocks x up to 65535 row slices, about 2^16 blocks at most.
dim3 bias_grid(int64_t rows, int64_t n) {
  const int64_t cols = (n + 255) / 256;
  const int64_t slices = std::max<int64_t>(1, std::min<int64_t>({rows, 65535, std::max<int64_t>(1, 65536 / cols)}));
  return dim3(static_cast<unsigned>(cols), static_cast<unsigned>(slices));
}

__global__ void f32_to_bf16_kernel(const float* __restrict__ x, __nv_bfloat16* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __float2bfloat16_rn(x[i]);
}

unsigned blocks_for(int64_t n) { return static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096)); }

template <typename T>
bool args_ok(const T* gu, const T* out, int64_t rows, int64_t ffn) {
  return gu && out && rows >= 0 && ffn > 0 &&
         !minmo_args::overlap(gu, rows * 2 * ffn * int64_t(sizeof(T)), out, rows * ffn * int64_t(sizeof(T)));
}

}  // namespace

extern "C" int minmo_silu_mul_bf16(const minmo_bf16* gate_up, minmo_bf16* out, int64_t rows, int64_t ffn,
                                   cudaStream_t stream) {
  if (!args_ok(gate_up, out, rows, ffn)) return MINMO_KERNEL_INVALID_ARGUMENT;
  if (rows == 0) return MINMO_KERNEL_OK;
  silu_mul_bf16_kernel<<<blocks_for(rows * ffn), 256, 0, stream>>>(reinterpret_cast<const __nv_bfloat16*>(gate_up),
                                                                  reinterpret_cast<__nv_bfloat16*>(out), rows, ffn);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_silu_mul_f32(const float* gate_up, float* out, int64_t rows, int64_t ffn, cudaStream_t stream) {
  if (!args_ok(gate_up, out, rows, ffn)) return MINMO_KERNEL_INVALID_ARGUMENT;
  if (rows == 0) return MINMO_KERNEL_OK;
  silu_mul_f32_kernel<<<blocks_for(rows * ffn), 256, 0, stream>>>(gate_up, out, rows, ffn);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_bias_act_bf16(minmo_bf16* y, const minmo_bf16* bias, int64_t rows, int64_t n, int act,
                                   cudaStream_t stream) {
  if (!minmo_args::bias_act_ok(y, bias, rows, n, act))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  if (rows == 0) return MINMO_KERNEL_OK;
  bias_act_kernel<<<bias_grid(rows, n), 256, 0, stream>>>(reinterpret_cast<__nv_bfloat16*>(y),
                                                          reinterpret_cast<const __nv_bfloat16*>(bias), rows, n, act);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_bias_residual_bf16(const minmo_bf16* y, const minmo_bf16* bias, float* residual, int64_t rows,
                                        int64_t n, cudaStream_t stream) {
  if (!minmo_args::bias_residual_ok(y, bias, residual, rows, n))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  if (rows == 0) return MINMO_KERNEL_OK;
  bias_residual_kernel<<<bias_grid(rows, n), 256, 0, stream>>>(reinterpret_cast<const __nv_bfloat16*>(y),
                                                               reinterpret_cast<const __nv_bfloat16*>(bias), residual,
                                                               rows, n);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_f32_to_bf16(const float* x, minmo_bf16* y, int64_t n, cudaStream_t stream) {
  if (!minmo_args::f32_to_bf16_ok(x, y, n)) return MINMO_KERNEL_INVALID_ARGUMENT;
  if (n == 0) return MINMO_KERNEL_OK;
  f32_to_bf16_kernel<<<blocks_for(n), 256, 0, stream>>>(x, reinterpret_cast<__nv_bfloat16*>(y), n);
  return minmo_cuda::launch_status();
}
