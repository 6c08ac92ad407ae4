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
