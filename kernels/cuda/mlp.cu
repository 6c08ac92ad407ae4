// Gated MLP epilogue (minmo_kernels/mlp.h): elementwise, grid-stride.
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
