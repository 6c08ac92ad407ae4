#include "backends/cpu/quant_linear.h"

#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "backends/cpu/ops_llm.h"

namespace minmo {
namespace cpu {

namespace {

std::array<float, 256> make_e4m3_table() {
  std::array<float, 256> t{};
  for (int b = 0; b < 256; ++b) {
    const int sign = b >> 7, exp = (b >> 3) & 0xF, man = b & 7;
    float v;
    if (exp == 0xF && man == 7) v = NAN;
    else if (exp == 0) v = std::ldexp(static_cast<float>(man) / 8.f, -6);
    else v = std::ldexp(1.f + static_cast<float>(man) / 8.f, exp - 7);
    t[static_cast<size_t>(b)] = sign ? -v : v;
  }
  return t;
}

const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> t = make_e4m3_table();
  return t;
}

float dot(const float* a, const float* b, int64_t k) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += a[i + j] * b[i + j];
  float r = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  for (; i < k; ++i) r += a[i] * b[i];
  return r;
}

}  // namespace

const char* weight_quant_name(WeightQuant k) {
  switch (k) {
    case WeightQuant::None: return "none";
    case WeightQuant::Int8: return "int8";
    case WeightQuant::Int4: return "int4";
    case WeightQuant::Fp8: return "fp8";
  }
  return "?";
}

float fp8_e4m3_to_float(uint8_t bits) { return e4m3_table()[bits]; }

void dequantize_row(const QuantWeight& w, int64_t n, int64_t K, float* out) {
  switch (w.kind) {
    case WeightQuant::Int8: {
      const int8_t* q = reinterpret_cast<const int8_t*>(w.q) + n * K;
      const float s = w.scale[n];
      for (int64_t k = 0; k < K; ++k) out[k] = s * static_cast<float>(q[k]);
      break;
    }
    case WeightQuant::Fp8: {
      const uint8_t* q = w.q + n * K;
      const float s = w.scale[n];
      const float* t = e4m3_table().data();
      for (int64_t k = 0; k < K; ++k) out[k] = s * t[q[k]];
      break;
    }
    case WeightQuant::Int4: {
      const uint8_t* q = w.q + n * (K / 2);
      const int64_t groups = K / w.group;
      const float* sc = w.scale + n * groups;
      const uint8_t* zp = w.zero + n * groups;
      for (int64_t g = 0; g < groups; ++g) {
        const float s = sc[g], z = static_cast<float>(zp[g]);
        const uint8_t* qg = q + g * (w.group / 2);
        float* o = out + g * w.group;
        for (int64_t j = 0; j < w.group / 2; ++j) {
          o[2 * j] = s * (static_cast<float>(qg[j] & 0xF) - z);
          o[2 * j + 1] = s * (static_cast<float>(qg[j] >> 4) - z);
        }
      }
      break;
    }
    case WeightQuant::None: break;
  }
}

void linear_quant(const float* x, const QuantWeight& w, const float* bias, float* y, int64_t M, int64_t K, int64_t N) {
  if (M <= 0) return;
  if (M <= kQuantFusedRows) {
#pragma omp parallel
    {
      thread_local std::vector<float> row;
      if (static_cast<int64_t>(row.size()) < K) row.resize(static_cast<size_t>(K));
#pragma omp for schedule(static)
      for (int64_t n = 0; n < N; ++n) {
        dequantize_row(w, n, K, row.data());
        const float b = bias ? bias[n] : 0.f;
        for (int64_t m = 0; m < M; ++m) y[m * N + n] = dot(x + m * K, row.data(), K) + b;
      }
    }
    return;
  }
  // The calling thread's scratch (grown to the largest layer, then reused); the team writes into
  // it through `buf` (a thread_local named inside the region would be each worker's own).
  thread_local std::vector<float> scratch;
  if (scratch.size() < static_cast<size_t>(N * K)) scratch.resize(static_cast<size_t>(N * K));
  float* buf = scratch.data();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) dequantize_row(w, n, K, buf + n * K);
  linear_omp(x, buf, bias, y, M, K, N);
}

}  // namespace cpu
}  // namespace minmo
