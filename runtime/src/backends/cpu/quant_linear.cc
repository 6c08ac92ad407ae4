#include "backends/cpu/quant_linear.h"

#include "backends/cpu/parallel.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "backends/cpu/fastmath.h"
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

namespace {

// e4m3fn byte -> fp32 by moving its sign, exponent and mantissa into fp32 position
// (vectorisable: no table, no branch): exponent field e gives 2^(e - 127) (1 + m/8), and e = 0
// an fp32 subnormal m/8 * 2^-126, so multiplying by 2^120 yields the e4m3 value in both cases.
// The NaN codes 0x7f / 0xff (never written by the exporter) decode as +-480 here.
constexpr float kE4m3Rebias = 1.329227995784916e36f;  // 2^120
inline float e4m3_value(uint8_t b) {
  const uint32_t bits = (static_cast<uint32_t>(b & 0x80u) << 24) | (static_cast<uint32_t>(b & 0x7Fu) << 20);
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f * kE4m3Rebias;
}

inline float code_value(int8_t q) { return static_cast<float>(q); }
inline float code_value(uint8_t q) { return e4m3_value(q); }

// y[m, n] for rows n in [n0, n1) and all m < M, each quantized row read once per x row (in L1
// after the first); four output rows per pass give four independent accumulator chains.
template <typename Code>
MINMO_SIMD_CLONES void rows_scaled(const float* x, const Code* codes, const float* scale, const float* bias,
                                         float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {
    const Code *q0 = codes + n * K, *q1 = q0 + K, *q2 = q1 + K, *q3 = q2 + K;
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * K;
      float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (int64_t k = 0; k < K; ++k) {
        const float xk = xm[k];
        s0 += xk * code_value(q0[k]);
        s1 += xk * code_value(q1[k]);
        s2 += xk * code_value(q2[k]);
        s3 += xk * code_value(q3[k]);
      }
      float* ym = y + m * N + n;
      ym[0] = s0 * scale[n] + (bias ? bias[n] : 0.f);
      ym[1] = s1 * scale[n + 1] + (bias ? bias[n + 1] : 0.f);
      ym[2] = s2 * scale[n + 2] + (bias ? bias[n + 2] : 0.f);
      ym[3] = s3 * scale[n + 3] + (bias ? bias[n + 3] : 0.f);
    }
  }
  for (; n < n1; ++n) {
    const Code* q = codes + n * K;
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * K;
      float s0 = 0.f;
#pragma omp simd reduction(+ : s0)
      for (int64_t k = 0; k < K; ++k) s0 += xm[k] * code_value(q[k]);
      y[m * N + n] = s0 * scale[n] + (bias ? bias[n] : 0.f);
    }
  }
}

// xe / xo: the even / odd columns of x [M, K / 2]; xg: per-group sums of x [M, K / group].
//   y = sum_g scale_g * (sum_{k in g} x_k q_k - zero_g * xg_g)
MINMO_SIMD_CLONES void rows_int4(const float* xe, const float* xo, const float* xg, const QuantWeight& w,
                                       const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0,
                                       int64_t n1) {
  const int64_t half = K / 2, groups = K / w.group, gh = w.group / 2;
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {  // four rows: four independent accumulator chains
    const uint8_t* q0 = w.q + n * half;
    const uint8_t *q1 = q0 + half, *q2 = q1 + half, *q3 = q2 + half;
    for (int64_t m = 0; m < M; ++m) {
      const float* e = xe + m * half;
      const float* o = xo + m * half;
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t j0 = g * gh;
        float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int64_t j = j0; j < j0 + gh; ++j) {
          const float ej = e[j], oj = o[j];
          s0 += ej * static_cast<float>(q0[j] & 0xF) + oj * static_cast<float>(q0[j] >> 4);
          s1 += ej * static_cast<float>(q1[j] & 0xF) + oj * static_cast<float>(q1[j] >> 4);
          s2 += ej * static_cast<float>(q2[j] & 0xF) + oj * static_cast<float>(q2[j] >> 4);
          s3 += ej * static_cast<float>(q3[j] & 0xF) + oj * static_cast<float>(q3[j] >> 4);
        }
        const float sg[4] = {s0, s1, s2, s3};
        const float xs = xg[m * groups + g];
        for (int r = 0; r < 4; ++r)
          acc[r] += w.scale[(n + r) * groups + g] * (sg[r] - static_cast<float>(w.zero[(n + r) * groups + g]) * xs);
      }
      for (int r = 0; r < 4; ++r) y[m * N + n + r] = acc[r] + (bias ? bias[n + r] : 0.f);
    }
  }
  for (; n < n1; ++n) {
    const uint8_t* q = w.q + n * half;
    const float* sc = w.scale + n * groups;
    const uint8_t* zp = w.zero + n * groups;
    for (int64_t m = 0; m < M; ++m) {
      const float* e = xe + m * half;
      const float* o = xo + m * half;
      float acc = 0.f;
      for (int64_t g = 0; g < groups; ++g) {
        float s0 = 0.f;
        const int64_t j0 = g * gh;
#pragma omp simd reduction(+ : s0)
        for (int64_t j = j0; j < j0 + gh; ++j)
          s0 += e[j] * static_cast<float>(q[j] & 0xF) + o[j] * static_cast<float>(q[j] >> 4);
        acc += sc[g] * (s0 - static_cast<float>(zp[g]) * xg[m * groups + g]);
      }
      y[m * N + n] = acc + (bias ? bias[n] : 0.f);
    }
  }
}

}  // namespace

void linear_quant(const float* x, const QuantWeight& w, const float* bias, float* y, int64_t M, int64_t K, int64_t N) {
  if (M <= 0) return;
  if (M <= kQuantFusedRows) {
    constexpr int64_t kBlock = 16;  // output rows per work item
    const int64_t nb = (N + kBlock - 1) / kBlock;
    if (w.kind == WeightQuant::Int4) {
      const int64_t half = K / 2, groups = K / w.group;
      thread_local std::vector<float> xs;
      xs.resize(static_cast<size_t>(M * (K + groups)));
      float *xe = xs.data(), *xo = xe + M * half, *xg = xo + M * half;
      for (int64_t m = 0; m < M; ++m)
        for (int64_t j = 0; j < half; ++j) {
          xe[m * half + j] = x[m * K + 2 * j];
          xo[m * half + j] = x[m * K + 2 * j + 1];
        }
      for (int64_t m = 0; m < M; ++m)
        for (int64_t g = 0; g < groups; ++g) {
          float s = 0.f;
          for (int64_t k = g * w.group; k < (g + 1) * w.group; ++k) s += x[m * K + k];
          xg[m * groups + g] = s;
        }
#pragma omp parallel for schedule(static) if (parallel_macs(N * K))
      for (int64_t b = 0; b < nb; ++b)
        rows_int4(xe, xo, xg, w, bias, y, M, K, N, b * kBlock, std::min(N, (b + 1) * kBlock));
      return;
    }
#pragma omp parallel for schedule(static) if (parallel_macs(N * K))
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t n1 = std::min(N, (b + 1) * kBlock);
      if (w.kind == WeightQuant::Int8)
        rows_scaled(x, reinterpret_cast<const int8_t*>(w.q), w.scale, bias, y, M, K, N, b * kBlock, n1);
      else
        rows_scaled(x, w.q, w.scale, bias, y, M, K, N, b * kBlock, n1);
    }
    return;
  }
  // The calling thread's scratch (grown to the largest layer, then reused); the team writes into
  // it through `buf` (a thread_local named inside the region would be each worker's own).
  thread_local std::vector<float> scratch;
  if (scratch.size() < static_cast<size_t>(N * K)) scratch.resize(static_cast<size_t>(N * K));
  float* buf = scratch.data();
#pragma omp parallel for schedule(static) if (parallel_elements(N * K))
  for (int64_t n = 0; n < N; ++n) dequantize_row(w, n, K, buf + n * K);
  linear_omp(x, buf, bias, y, M, K, N);
}

}  // namespace cpu
}  // namespace minmo
