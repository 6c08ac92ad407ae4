// CPU twins of the weight-only matrix products (minmo_kernels/gemv.h): fp64 accumulation.
#include <cmath>

#include "../common/args.h"
#include "twins.h"
#include "minmo_kernels.h"

using minmo_cpu::f32_to_bf16;

namespace {

// y[b, r] = bf16(dot(b, r)), or for the gated form bf16(silu(dot(b, r)) * dot(b, n + r)), where
// dot(b, row) = sum_k x[b, k] * w(row, k) in fp64.
template <typename Dot>
int run(minmo_bf16* y, int64_t batch, int64_t n, bool gated, Dot dot) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r)
    for (int64_t b = 0; b < batch; ++b) {
      double v = dot(b, r);
      if (gated) v = v / (1.0 + std::exp(-v)) * dot(b, n + r);
      y[b * n + r] = f32_to_bf16(static_cast<float>(v));
    }
  return MINMO_KERNEL_OK;
}

int gemv_bf16(const minmo_bf16* x, const minmo_bf16* w, minmo_bf16* y, int64_t batch, int64_t n, int64_t k,
              bool gated) {
  if (!minmo_args::gemv_ok(x, w, y, batch, n, k)) return MINMO_KERNEL_INVALID_ARGUMENT;
  const minmo_cpu::Bf16W wv{w, k};
  return run(y, batch, n, gated, [&](int64_t b, int64_t r) { return wv.dot(x + b * k, r); });
}

int gemv_int8(const minmo_bf16* x, const int8_t* w, const float* scale, minmo_bf16* y, int64_t batch, int64_t n,
              int64_t k, bool gated) {
  if (!minmo_args::gemv_ok(x, w, y, batch, n, k) || !scale) return MINMO_KERNEL_INVALID_ARGUMENT;
  const minmo_cpu::Int8W wv{w, scale, k};
  return run(y, batch, n, gated, [&](int64_t b, int64_t r) { return wv.dot(x + b * k, r); });
}

int gemv_int4(const minmo_bf16* x, const uint8_t* w, const minmo_bf16* scale, const uint8_t* zero, minmo_bf16* y,
              int64_t batch, int64_t n, int64_t k, int64_t group_size, bool gated) {
  if (!minmo_args::gemv_ok(x, w, y, batch, n, k) || !scale || !minmo_args::int4_ok(k, group_size))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const minmo_cpu::Int4W wv{w, scale, zero, k, group_size};
  return run(y, batch, n, gated, [&](int64_t b, int64_t r) { return wv.dot(x + b * k, r); });
}

int gemv_fp8(const minmo_bf16* x, const uint8_t* w, const float* scale, minmo_bf16* y, int64_t batch, int64_t n,
             int64_t k, bool gated) {
  if (!minmo_args::gemv_ok(x, w, y, batch, n, k) || !scale) return MINMO_KERNEL_INVALID_ARGUMENT;
  const minmo_cpu::Fp8W wv{w, scale, k};
  return run(y, batch, n, gated, [&](int64_t b, int64_t r) { return wv.dot(x + b * k, r); });
}

}  // namespace

extern "C" {

int minmo_gemv_bf16_cpu(const minmo_bf16* x, const minmo_bf16* w, minmo_bf16* y, int64_t batch, int64_t n, int64_t k) {
  return gemv_bf16(x, w, y, batch, n, k, false);
}
int minmo_gemv_silu_bf16_cpu(const minmo_bf16* x, const minmo_bf16* w, minmo_bf16* y, int64_t batch, int64_t n,
                             int64_t k) {
  return gemv_bf16(x, w, y, batch, n, k, true);
}
int minmo_gemv_int8_cpu(const minmo_bf16* x, const int8_t* w, const float* scale, minmo_bf16* y, int64_t batch,
                        int64_t n, int64_t k) {
  return gemv_int8(x, w, scale, y, batch, n, k, false);
}
int minmo_gemv_silu_int8_cpu(const minmo_bf16* x, const int8_t* w, const float* scale, minmo_bf16* y, int64_t batch,
                             int64_t n, int64_t k) {
  return gemv_int8(x, w, scale, y, batch, n, k, true);
}
int minmo_gemv_int4_cpu(const minmo_bf16* x, const uint8_t* w, const minmo_bf16* scale, const uint8_t* zero,
                        minmo_bf16* y, int64_t batch, int64_t n, int64_t k, int64_t group_size) {
  return gemv_int4(x, w, scale, zero, y, batch, n, k, group_size, false);
}
int minmo_gemv_silu_int4_cpu(const minmo_bf16* x, const uint8_t* w, const minmo_bf16* scale, const uint8_t* zero,
                             minmo_bf16* y, int64_t batch, int64_t n, int64_t k, int64_t group_size) {
  return gemv_int4(x, w, scale, zero, y, batch, n, k, group_size, true);
}
int minmo_gemv_fp8_cpu(const minmo_bf16* x, const uint8_t* w, const float* scale, minmo_bf16* y, int64_t batch,
                       int64_t n, int64_t k) {
  return gemv_fp8(x, w, scale, y, batch, n, k, false);
}
int minmo_gemv_silu_fp8_cpu(const minmo_bf16* x, const uint8_t* w, const float* scale, minmo_bf16* y, int64_t batch,
                            int64_t n, int64_t k) {
  return gemv_fp8(x, w, scale, y, batch, n, k, true);
}

}  // extern "C"
