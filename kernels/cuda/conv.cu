// Encoder front-end im2col (minmo_kernels/conv.h): grid (column blocks over the 3 C output
// columns, output-row slices); consecutive threads write consecutive output columns (c * 3 + k),
// and read x[2t - 1 + k, c], three rows interleaved, through L1.
#include <algorithm>

#include "../common/args.h"
#include "cuda_util.cuh"

namespace {

__global__ void im2col_k3s2_kernel(const uint16_t* __restrict__ x, uint16_t* __restrict__ out, int64_t t_out0,
                                   int64_t n_out, int64_t t_in0, int64_t channels, int64_t total_in) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, width = 3 * channels;
  if (j >= width) return;
  const int64_t c = j / 3, k = j - 3 * c;
  for (int64_t i = blockIdx.y; i < n_out; i += gridDim.y) {
    const int64_t r = 2 * (t_out0 + i) - 1 + k;
    out[i * width + j] = (r >= 0 && r < total_in) ? __ldg(x + (r - t_in0) * channels + c) : uint16_t{0};
  }
}

}  // namespace

extern "C" int minmo_im2col_k3s2_bf16(const minmo_bf16* x, minmo_bf16* out, int64_t t_out0, int64_t n_out,
                                      int64_t t_in0, int64_t n_in, int64_t channels, int64_t total_in,
                                      cudaStream_t stream) {
  if (!minmo_args::im2col_k3s2_ok(x, out, t_out0, n_out, t_in0, n_in, channels, total_in))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  if (n_out == 0) return MINMO_KERNEL_OK;
  const int64_t cols = (3 * channels + 255) / 256;
  const int64_t slices = std::max<int64_t>(1, std::min<int64_t>({n_out, 65535, std::max<int64_t>(1, 65536 / cols)}));
  im2col_k3s2_kernel<<<dim3(static_cast<unsigned>(cols), static_cast<unsigned>(slices)), 256, 0, stream>>>(
      x, out, t_out0, n_out, t_in0, channels, total_in);
  return minmo_cuda::launch_status();
}
