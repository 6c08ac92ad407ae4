#include "minmo_kernels/flow.h"

extern "C" int minmo_flow_euler_cfg_f32_cpu(float* x, const float* est, float* next_in, int64_t n, float cfg,
                                            float dt) {
  if (!x || !est || n < 0) return MINMO_KERNEL_INVALID_ARGUMENT;
  // No overlap between x and est / next_in (both [2, n]).
  if ((x < est + 2 * n && est < x + n) || (next_in && x < next_in + 2 * n && next_in < x + n))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  for (int64_t i = 0; i < n; ++i) {
    const float v = (1.0f + cfg) * est[i] - cfg * est[n + i];
    const float y = x[i] + dt * v;
    x[i] = y;
    if (next_in) {
      next_in[i] = y;
      next_in[n + i] = y;
    }
  }
  return MINMO_KERNEL_OK;
}
