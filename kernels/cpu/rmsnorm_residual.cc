#include <cmath>

#include "minmo_kernels.h"

extern "C" const char* minmo_kernel_status_string(int status) {
  switch (status) {
    case MINMO_KERNEL_OK: return "ok";
    case MINMO_KERNEL_INVALID_ARGUMENT: return "invalid argument";
    case MINMO_KERNEL_LAUNCH_FAILED: return "kernel launch failed";
    default: return "unknown kernel status";
  }
}

extern "C" int minmo_rmsnorm_residual_f32_cpu(const float* x, float* residual, const float* gamma, float* out,
                                              int64_t rows, int64_t dim, float eps) {
  if (!residual || !gamma || !out || rows < 0 || dim <= 0 || out == residual) return MINMO_KERNEL_INVALID_ARGUMENT;
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < rows; ++m) {
    float* r = residual + m * dim;
    float* o = out + m * dim;
    double ss = 0.0;
    if (x) {
      const float* xm = x + m * dim;
      for (int64_t d = 0; d < dim; ++d) {
        r[d] += xm[d];
        ss += static_cast<double>(r[d]) * r[d];
      }
    } else {
      for (int64_t d = 0; d < dim; ++d) ss += static_cast<double>(r[d]) * r[d];
    }
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + static_cast<double>(eps)));
    for (int64_t d = 0; d < dim; ++d) o[d] = r[d] * inv * gamma[d];
  }
  return MINMO_KERNEL_OK;
}
