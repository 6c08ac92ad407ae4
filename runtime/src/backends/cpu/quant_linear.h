// Weight-only quantized linear layers on the CPU (formats written by export/quantize.py, the same
// as the CUDA products of kernels/include/minmo_kernels/gemv.h), fp32 activations and results.
#pragma once

#include <cstdint>

namespace minmo {
namespace cpu {

enum class WeightQuant { None, Int8, Int4, Fp8 };

// A quantized weight W [N, K] (nn.Linear layout); pointers are borrowed.
//   Int8: q int8 [N, K],          w = scale[n] * q
//   Fp8:  q e4m3fn bits [N, K],   w = scale[n] * e4m3(q)
//   Int4: q uint8 [N, K / 2] (low nibble = even k), w = scale[n, g] * (nibble - zero[n, g]),
//         g = k / group, scale fp32 [N, K / group], zero uint8 [N, K / group]
struct QuantWeight {
  WeightQuant kind = WeightQuant::None;
  const uint8_t* q = nullptr;
  const float* scale = nullptr;
  const uint8_t* zero = nullptr;
  int64_t group = 0;
};

const char* weight_quant_name(WeightQuant k);

// The fp32 value of an e4m3fn byte (finite values up to 448; 0x7f / 0xff are NaN).
float fp8_e4m3_to_float(uint8_t bits);

// Row n of the dequantized weight: out[K].
void dequantize_row(const QuantWeight& w, int64_t n, int64_t K, float* out);

// y[M, N] = x[M, K] @ dequant(W)^T + bias[N] (bias may be null). Up to kQuantFusedRows rows
// (decode): fused products that read each quantized row once (1 or 0.5 byte per weight) and
// apply the scales to partial sums (int4: per group, zero points through per-group sums of x);
// SIMD clones for AVX-512 / AVX2 / baseline, OpenMP over blocks of output rows. More rows
// (prefill): W is dequantized into the calling thread's scratch matrix (kept for reuse, the size
// of the largest layer), then cpu::linear_omp.
constexpr int64_t kQuantFusedRows = 8;
void linear_quant(const float* x, const QuantWeight& w, const float* bias, float* y, int64_t M, int64_t K, int64_t N);

}  // namespace cpu
}  // namespace minmo
