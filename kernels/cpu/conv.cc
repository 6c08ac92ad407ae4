// CPU twin of the encoder front-end im2col (minmo_kernels/conv.h).
#include "../common/args.h"
#include "minmo_kernels.h"

extern "C" int minmo_im2col_k3s2_bf16_cpu(const minmo_bf16* x, minmo_bf16* out, int64_t t_out0, int64_t n_out,
                                          int64_t t_in0, int64_t n_in, int64_t channels, int64_t total_in) {
  if (!minmo_args::im2col_k3s2_ok(x, out, t_out0, n_out, t_in0, n_in, channels, total_in))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t C = channels;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n_out; ++i)
    for (int64_t k = 0; k < 3; ++k) {
      const int64_t r = 2 * (t_out0 + i) - 1 + k;
      const bool in = r >= 0 && r < total_in;
      for (int64_t c = 0; c < C; ++c) out[i * 3 * C + c * 3 + k] = in ? x[(r - t_in0) * C + c] : minmo_bf16{0};
    }
  return MINMO_KERNEL_OK;
}
