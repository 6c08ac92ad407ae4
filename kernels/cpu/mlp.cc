// CPU twins of the gated MLP epilogue (minmo_kernels/mlp.h).
#include <cmath>

#include "../common/args.h"
#include "cpu_util.h"
#include "minmo_kernels.h"

namespace {

template <typename T, typename Load, typename Store>
int silu_mul(const T* gate_up, T* out, int64_t rows, int64_t ffn, Load load, Store store) {
  if (!gate_up || !out || rows < 0 || ffn <= 0 || minmo_args::overlap(gate_up, rows * 2 * ffn * int64_t(sizeof(T)), out,
                                                                      rows * ffn * int64_t(sizeof(T))))
    return MINMO_KERNEL_INVALID_ARGUMENT;
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t f = 0; f < ffn; ++f) {
      const double g = load(gate_up[m * 2 * ffn + f]), u = load(gate_up[m * 2 * ffn + ffn + f]);
      out[m * ffn + f] = store(static_cast<float>(g / (1.0 + std::exp(-g)) * u));
    }
  return MINMO_KERNEL_OK;
}

}  // namespace

extern "C" int minmo_silu_mul_bf16_cpu(const minmo_bf16* gate_up, minmo_bf16* out, int64_t rows, int64_t ffn) {
  return silu_mul(gate_up, out, rows, ffn, minmo_cpu::bf16_to_f32, minmo_cpu::f32_to_bf16);
}

extern "C" int minmo_silu_mul_f32_cpu(const float* gate_up, float* out, int64_t rows, int64_t ffn) {
  return silu_mul(gate_up, out, rows, ffn, [](float v) { return v; }, [](float v) { return v; });
}

extern "C" int minmo_bias_act_bf16_cpu(minmo_bf16* y, const minmo_bf16* bias, int64_t rows, int64_t n, int act) {
  if (!minmo_args::bias_act_ok(y, bias, rows, n, act)) return MINMO_KERNEL_INVALID_ARGUMENT;
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t i = 0; i < n; ++i) {
      minmo_bf16& e = y[m * n + i];
      double v = double(minmo_cpu::bf16_to_f32(e)) + (bias ? minmo_cpu::bf16_to_f32(bias[i]) : 0.f);
      if (act == MINMO_ACT_GELU)
        v = 0.5 * v * (1.0 + std::erf(v * 0.70710678118654752440));
      else if (act == MINMO_ACT_RELU)
        v = v > 0 ? v : 0.0;
      e = minmo_cpu::f32_to_bf16(static_cast<float>(v));
    }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_bias_residual_bf16_cpu(const minmo_bf16* y, const minmo_bf16* bias, float* residual, int64_t rows,
                                            int64_t n) {
  if (!minmo_args::bias_residual_ok(y, bias, residual, rows, n)) return MINMO_KERNEL_INVALID_ARGUMENT;
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t i = 0; i < n; ++i) {
      float& r = residual[m * n + i];
      r = static_cast<float>(double(r) + minmo_cpu::bf16_to_f32(y[m * n + i]) +
                             (bias ? minmo_cpu::bf16_to_f32(bias[i]) : 0.f));
    }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_f32_to_bf16_cpu(const float* x, minmo_bf16* y, int64_t n) {
  if (!minmo_args::f32_to_bf16_ok(x, y, n)) return MINMO_KERNEL_INVALID_ARGUMENT;
  for (int64_t i = 0; i < n; ++i) y[i] = minmo_cpu::f32_to_bf16(x[i]);
  return MINMO_KERNEL_OK;
}
