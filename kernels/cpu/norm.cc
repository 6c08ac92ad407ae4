#include <cmath>

#include "../common/args.h"
#include "twins.h"
#include "minmo_kernels.h"

using minmo_cpu::bf16_to_f32;
using minmo_cpu::f32_to_bf16;

void minmo_cpu::rmsnorm_row_bf16(const float* r, const minmo_bf16* gamma, minmo_bf16* out, int64_t dim, float eps) {
  double ss = 0.0;
  for (int64_t d = 0; d < dim; ++d) ss += static_cast<double>(r[d]) * r[d];
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(dim) + static_cast<double>(eps));
  for (int64_t d = 0; d < dim; ++d) out[d] = f32_to_bf16(static_cast<float>(r[d] * inv * bf16_to_f32(gamma[d])));
}

namespace {
// residual[d] += x[d] (bf16) for one row; nothing when x is null.
void add_bf16_row(const minmo_bf16* x, float* r, int64_t dim) {
  if (x)
    for (int64_t d = 0; d < dim; ++d) r[d] += bf16_to_f32(x[d]);
}
}  // namespace

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

extern "C" int minmo_rmsnorm_residual_bf16_cpu(const minmo_bf16* x, float* residual, const minmo_bf16* gamma,
                                               minmo_bf16* out, int64_t rows, int64_t dim, float eps) {
  if (!residual || !gamma || !out || rows < 0 || dim <= 0) return MINMO_KERNEL_INVALID_ARGUMENT;
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < rows; ++m) {
    float* r = residual + m * dim;
    minmo_bf16* o = out + m * dim;
    add_bf16_row(x ? x + m * dim : nullptr, r, dim);
    minmo_cpu::rmsnorm_row_bf16(r, gamma, o, dim, eps);
  }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_layernorm_residual_bf16_cpu(const minmo_bf16* x, float* residual, const minmo_bf16* gamma,
                                                 const minmo_bf16* beta, minmo_bf16* out, int64_t rows, int64_t dim,
                                                 float eps) {
  if (!minmo_args::layernorm_ok(x, residual, gamma, out, rows, dim)) return MINMO_KERNEL_INVALID_ARGUMENT;
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < rows; ++m) {
    float* r = residual + m * dim;
    minmo_bf16* o = out + m * dim;
    add_bf16_row(x ? x + m * dim : nullptr, r, dim);
    double sum = 0.0;
    for (int64_t d = 0; d < dim; ++d) sum += r[d];
    const double mean = sum / static_cast<double>(dim);
    double ss = 0.0;
    for (int64_t d = 0; d < dim; ++d) ss += (r[d] - mean) * (r[d] - mean);
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(dim) + static_cast<double>(eps));
    for (int64_t d = 0; d < dim; ++d)
      o[d] = f32_to_bf16(static_cast<float>((r[d] - mean) * inv * bf16_to_f32(gamma[d]) +
                                            (beta ? bf16_to_f32(beta[d]) : 0.f)));
  }
  return MINMO_KERNEL_OK;
}
