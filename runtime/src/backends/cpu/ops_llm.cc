#include "backends/cpu/ops_llm.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <limits>
#include <vector>

#include <omp.h>

#include "backends/cpu/blas.h"
#include "backends/cpu/fastmath.h"
#include "backends/cpu/ops.h"
#include "backends/cpu/parallel.h"
#include "minmo/status.h"

namespace minmo {
namespace cpu {

namespace {

// y[n] = dot(W[n, :], x) + b[n] for rows n in [n0, n1).
// Compiled for AVX-512 / AVX2 / baseline, picked at load time (the build targets plain x86-64).

MINMO_SIMD_CLONES void gemv_rows(const float* x, const float* W, const float* bias, float* y, int64_t K, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {
    const float* w0 = W + n * K;
    const float* w1 = w0 + K;
    const float* w2 = w1 + K;
    const float* w3 = w2 + K;
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t k = 0; k < K; ++k) {
      const float xk = x[k];
      s0 += w0[k] * xk;
      s1 += w1[k] * xk;
      s2 += w2[k] * xk;
      s3 += w3[k] * xk;
    }
    y[n] = s0 + (bias ? bias[n] : 0.f);
    y[n + 1] = s1 + (bias ? bias[n + 1] : 0.f);
    y[n + 2] = s2 + (bias ? bias[n + 2] : 0.f);
    y[n + 3] = s3 + (bias ? bias[n + 3] : 0.f);
  }
  for (; n < n1; ++n) {
    const float* w = W + n * K;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t k = 0; k < K; ++k) s += w[k] * x[k];
    y[n] = s + (bias ? bias[n] : 0.f);
  }
}
// y[m, n] = dot(W[n, :], x[m, :]) + b[n] for all m < M and rows n in [n0, n1): 4 x 4 register tiles.
MINMO_SIMD_CLONES void gemm_rows(const float* x, const float* W, const float* bias, float* y, int64_t M, int64_t K,
                                 int64_t N, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {
    const float* w0 = W + n * K;
    const float* w1 = w0 + K;
    const float* w2 = w1 + K;
    const float* w3 = w2 + K;
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) {
      const float* x0 = x + m * K;
      const float* x1 = x0 + K;
      const float* x2 = x1 + K;
      const float* x3 = x2 + K;
      float a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
      float a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
#pragma omp simd reduction(+ : a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33)
      for (int64_t k = 0; k < K; ++k) {
        const float v0 = w0[k], v1 = w1[k], v2 = w2[k], v3 = w3[k];
        const float u0 = x0[k], u1 = x1[k], u2 = x2[k], u3 = x3[k];
        a00 += u0 * v0; a01 += u0 * v1; a02 += u0 * v2; a03 += u0 * v3;
        a10 += u1 * v0; a11 += u1 * v1; a12 += u1 * v2; a13 += u1 * v3;
        a20 += u2 * v0; a21 += u2 * v1; a22 += u2 * v2; a23 += u2 * v3;
        a30 += u3 * v0; a31 += u3 * v1; a32 += u3 * v2; a33 += u3 * v3;
      }
      const float b0 = bias ? bias[n] : 0.f, b1 = bias ? bias[n + 1] : 0.f;
      const float b2 = bias ? bias[n + 2] : 0.f, b3 = bias ? bias[n + 3] : 0.f;
      float* y0 = y + m * N + n;
      y0[0] = a00 + b0; y0[1] = a01 + b1; y0[2] = a02 + b2; y0[3] = a03 + b3;
      y0 += N;
      y0[0] = a10 + b0; y0[1] = a11 + b1; y0[2] = a12 + b2; y0[3] = a13 + b3;
      y0 += N;
      y0[0] = a20 + b0; y0[1] = a21 + b1; y0[2] = a22 + b2; y0[3] = a23 + b3;
      y0 += N;
      y0[0] = a30 + b0; y0[1] = a31 + b1; y0[2] = a32 + b2; y0[3] = a33 + b3;
    }
    for (; m < M; ++m) gemv_rows(x + m * K, W, bias, y + m * N, K, n, n + 4);
  }
  if (n < n1)
    for (int64_t m = 0; m < M; ++m) gemv_rows(x + m * K, W, bias, y + m * N, K, n, n1);
}
// Up to this many rows against at least this many weights, the register-tiled kernel (reads W
// once per 4 rows) beats packing for BLAS; otherwise BLAS's packed kernels win (2x at M = 71).
constexpr int64_t kStreamingM = 8;
constexpr int64_t kStreamingWeights = 262144;
}  // namespace

// The v16 helpers below are always inlined into their callers' clones: no vector crosses a call
// boundary, so GCC's note that a 64-byte vector return changes the ABI does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace {
// 16 floats: one AVX-512 register, two AVX2 ones, four SSE ones (the clone picks).
typedef float v16 __attribute__((vector_size(64)));

__attribute__((always_inline)) inline v16 load16(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// y[r, 0:16] = x[r, :] . panel + bias for R rows of x (stride ldx) against one full panel [K][16].
template <int R>
__attribute__((always_inline)) inline void panel_rows(const float* x, int64_t ldx, const float* panel, int64_t K,
                                                      const float* bias, float* y, int64_t ldy) {
  v16 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = v16{};
  for (int64_t k = 0; k < K; ++k) {
    const v16 w = load16(panel + k * kPanelWidth);
    for (int r = 0; r < R; ++r) acc[r] += x[r * ldx + k] * w;
  }
  for (int r = 0; r < R; ++r) {
    v16 out = acc[r];
    if (bias) out += load16(bias);
    std::memcpy(y + r * ldy, &out, sizeof out);
  }
}

// Rows [m0, m1) against panel p (full or the narrow last one).
MINMO_SIMD_CLONES void panel_block(const float* x, const float* Wp, const float* bias, float* y, int64_t K, int64_t N,
                                   int64_t m0, int64_t m1, int64_t p) {
  const int64_t n0 = p * kPanelWidth, w = std::min(kPanelWidth, N - n0);
  const float* panel = Wp + n0 * K;
  const float* b = bias ? bias + n0 : nullptr;
  if (w == kPanelWidth) {
    constexpr int R = 6;
    int64_t m = m0;
    for (; m + R <= m1; m += R) panel_rows<R>(x + m * K, K, panel, K, b, y + m * N + n0, N);
    switch (m1 - m) {
      case 5: panel_rows<5>(x + m * K, K, panel, K, b, y + m * N + n0, N); break;
      case 4: panel_rows<4>(x + m * K, K, panel, K, b, y + m * N + n0, N); break;
      case 3: panel_rows<3>(x + m * K, K, panel, K, b, y + m * N + n0, N); break;
      case 2: panel_rows<2>(x + m * K, K, panel, K, b, y + m * N + n0, N); break;
      case 1: panel_rows<1>(x + m * K, K, panel, K, b, y + m * N + n0, N); break;
      default: break;
    }
    return;
  }
  for (int64_t m = m0; m < m1; ++m) {  // narrow last panel [K][w]: the same FMA chain per element
    float acc[kPanelWidth] = {};
    const float* xm = x + m * K;
    for (int64_t k = 0; k < K; ++k) {
      const float xv = xm[k];
      for (int64_t j = 0; j < w; ++j) acc[j] += xv * panel[k * w + j];
    }
    for (int64_t j = 0; j < w; ++j) y[m * N + n0 + j] = b ? acc[j] + b[j] : acc[j];
  }
}

// Rows per block: a block of x (kRowBlock x K floats) stays in L2 while every panel passes over it.
constexpr int64_t kRowBlock = 48;
}  // namespace

void pack_panels(const float* W, float* packed, int64_t N, int64_t K) {
  MINMO_CHECK(W && packed && N > 0 && K > 0, ErrorCode::InvalidArgument,
              "pack_panels: bad arguments N=" << N << " K=" << K);
  for (int64_t n0 = 0; n0 < N; n0 += kPanelWidth) {
    const int64_t w = std::min(kPanelWidth, N - n0);
    float* dst = packed + n0 * K;
    for (int64_t j = 0; j < w; ++j) {
      const float* row = W + (n0 + j) * K;
      for (int64_t k = 0; k < K; ++k) dst[k * w + j] = row[k];
    }
  }
}

void linear_panels(const float* x, const float* Wp, const float* bias, float* y, int64_t M, int64_t K, int64_t N) {
  MINMO_CHECK(M >= 0 && K > 0 && N > 0, ErrorCode::InvalidArgument,
              "linear_panels: bad sizes M=" << M << " K=" << K << " N=" << N);
  if (M == 0) return;
  MINMO_CHECK(x && Wp && y, ErrorCode::InvalidArgument, "linear_panels: null pointer");
  const int64_t panels = (N + kPanelWidth - 1) / kPanelWidth, blocks = (M + kRowBlock - 1) / kRowBlock;
#pragma omp parallel for collapse(2) schedule(static) if (parallel_macs(M * N * K))
  for (int64_t mb = 0; mb < blocks; ++mb)
    for (int64_t p = 0; p < panels; ++p)
      panel_block(x, Wp, bias, y, K, N, mb * kRowBlock, std::min(M, (mb + 1) * kRowBlock), p);
}

void linear_omp(const float* x, const float* W, const float* bias, float* y, int64_t M, int64_t K, int64_t N) {
  MINMO_CHECK(M >= 0 && K > 0 && N > 0 && K <= INT32_MAX && N <= INT32_MAX && M <= INT32_MAX,
              ErrorCode::InvalidArgument, "linear_omp: bad sizes M=" << M << " K=" << K << " N=" << N);
  if (M == 0) return;
  MINMO_CHECK(x && W && y, ErrorCode::InvalidArgument, "linear_omp: null pointer");
  if (M == 1) {
    // Blocks of 64 output rows, statically spread over the team.
    const int64_t nb = (N + 63) / 64;
#pragma omp parallel for schedule(static) if (parallel_macs(N * K))
    for (int64_t b = 0; b < nb; ++b) gemv_rows(x, W, bias, y, K, b * 64, std::min(N, (b + 1) * 64));
    return;
  }
  if (M <= kStreamingM && K * N >= kStreamingWeights) {
    // A few rows against a large matrix: bound by reading W, which this reads once per 4 rows.
    const int64_t nb = (N + 31) / 32;
#pragma omp parallel for schedule(static) if (parallel_macs(M * N * K))
    for (int64_t b = 0; b < nb; ++b) gemm_rows(x, W, bias, y, M, K, N, b * 32, std::min(N, (b + 1) * 32));
    return;
  }
  linear(x, W, bias, y, M, K, N);  // BLAS, column slices over the OpenMP team
}

namespace {
inline void rms_row(const float* x, const float* gamma, float* y, int64_t D, float eps) {
  double ss = 0.0;
  for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(x[d]) * x[d];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(D) + static_cast<double>(eps)));
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) y[d] = x[d] * inv * gamma[d];
}
}  // namespace

void rms_norm_rows(const float* x, const float* gamma, float* y, int64_t M, int64_t D, float eps) {
  MINMO_CHECK(M >= 0 && D > 0 && (M == 0 || (x && gamma && y)), ErrorCode::InvalidArgument,
              "rms_norm_rows: bad arguments M=" << M << " D=" << D);
#pragma omp parallel for schedule(static) if (parallel_elements(M * D))
  for (int64_t m = 0; m < M; ++m) rms_row(x + m * D, gamma, y + m * D, D, eps);
}

void add_rms_norm_rows(const float* x, float* residual, const float* gamma, float* y, int64_t M, int64_t D, float eps) {
  MINMO_CHECK(M >= 0 && D > 0 && (M == 0 || (x && residual && gamma && y)) && y != residual,
              ErrorCode::InvalidArgument, "add_rms_norm_rows: bad arguments M=" << M << " D=" << D);
#pragma omp parallel for schedule(static) if (parallel_elements(M * D))
  for (int64_t m = 0; m < M; ++m) {
    float* r = residual + m * D;
    const float* xm = x + m * D;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) r[d] += xm[d];
    rms_row(r, gamma, y + m * D, D, eps);
  }
}

void rope_table(int64_t pos0, int64_t T, int64_t Dh, double theta, float* cos_out, float* sin_out) {
  MINMO_CHECK(pos0 >= 0 && T >= 0 && Dh > 0 && Dh % 2 == 0 && theta > 0, ErrorCode::InvalidArgument,
              "rope_table: bad arguments pos0=" << pos0 << " T=" << T << " Dh=" << Dh << " theta=" << theta);
  MINMO_CHECK(T == 0 || (cos_out && sin_out), ErrorCode::InvalidArgument, "rope_table: null output");
  const int64_t half = Dh / 2;
  for (int64_t t = 0; t < T; ++t) {
    const double pos = static_cast<double>(pos0 + t);
    for (int64_t i = 0; i < half; ++i) {
      const double inv_freq = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(Dh));
      const double ang = pos * inv_freq;
      cos_out[t * half + i] = static_cast<float>(std::cos(ang));
      sin_out[t * half + i] = static_cast<float>(std::sin(ang));
    }
  }
}

void rope_apply(float* x, const float* cos_t, const float* sin_t, int64_t T, int64_t H, int64_t Dh) {
  MINMO_CHECK(T >= 0 && H > 0 && Dh > 0 && Dh % 2 == 0, ErrorCode::InvalidArgument,
              "rope_apply: bad sizes T=" << T << " H=" << H << " Dh=" << Dh);
  if (T == 0) return;
  MINMO_CHECK(x && cos_t && sin_t, ErrorCode::InvalidArgument, "rope_apply: null pointer");
  const int64_t half = Dh / 2;
#pragma omp parallel for collapse(2) schedule(static) if (parallel_elements(T * H * Dh))
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const float* c = cos_t + t * half;
      const float* s = sin_t + t * half;
      float* a = x + (t * H + h) * Dh;
      float* b = a + half;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const float xa = a[i], xb = b[i];
        a[i] = xa * c[i] - xb * s[i];
        b[i] = xb * c[i] + xa * s[i];
      }
    }
  }
}

namespace {
float* score_scratch(size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(std::max(n, static_cast<size_t>(1024)));
  return buf.data();
}

// One (query, head): o[Dh] = softmax(scale * q . k_j for j < n) @ v_j, keys j at stride ks.
MINMO_SIMD_CLONES void attend_one(const float* qi, const float* kh, const float* vh, float* o, float* s, int64_t n,
                                  int64_t ks, int64_t Dh, float scale) {
  float mx = -std::numeric_limits<float>::infinity();
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {  // four keys at a time: independent reductions
    const float* k0 = kh + j * ks;
    const float* k1 = k0 + ks;
    const float* k2 = k1 + ks;
    const float* k3 = k2 + ks;
    float d0 = 0.f, d1 = 0.f, d2 = 0.f, d3 = 0.f;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
    for (int64_t d = 0; d < Dh; ++d) {
      d0 += qi[d] * k0[d];
      d1 += qi[d] * k1[d];
      d2 += qi[d] * k2[d];
      d3 += qi[d] * k3[d];
    }
    s[j] = d0 * scale;
    s[j + 1] = d1 * scale;
    s[j + 2] = d2 * scale;
    s[j + 3] = d3 * scale;
  }
  for (; j < n; ++j) {
    const float* kj = kh + j * ks;
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t d = 0; d < Dh; ++d) dot += qi[d] * kj[d];
    s[j] = dot * scale;
  }
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, s[i]);
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    s[i] = fast_exp(s[i] - mx);
    sum += s[i];
  }
  std::fill(o, o + Dh, 0.f);
  for (int64_t i = 0; i < n; ++i) {
    const float p = s[i];
    const float* vj = vh + i * ks;
#pragma omp simd
    for (int64_t d = 0; d < Dh; ++d) o[d] += p * vj[d];
  }
  const float inv = 1.f / sum;
#pragma omp simd
  for (int64_t d = 0; d < Dh; ++d) o[d] *= inv;
}
}  // namespace

void cached_causal_attention(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t pos0,
                             int64_t Hq, int64_t Hkv, int64_t Dh, float scale) {
  MINMO_CHECK(T >= 0 && pos0 >= 0 && Hq > 0 && Hkv > 0 && Dh > 0 && Hq % Hkv == 0, ErrorCode::InvalidArgument,
              "cached_causal_attention: bad sizes T=" << T << " pos0=" << pos0 << " Hq=" << Hq << " Hkv=" << Hkv
                                                      << " Dh=" << Dh);
  if (T == 0) return;
  MINMO_CHECK(q && k && v && out, ErrorCode::InvalidArgument, "cached_causal_attention: null pointer");
  const int64_t Tk = pos0 + T;
  const int64_t group = Hq / Hkv;
  const int64_t qs = Hq * Dh, ks = Hkv * Dh;
#pragma omp parallel for collapse(2) schedule(static, 1) if (parallel_macs(2 * Tk * Hq * T * Dh))
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t n = pos0 + t + 1;  // keys this query sees
      attend_one(q + t * qs + h * Dh, k + (h / group) * Dh, v + (h / group) * Dh, out + t * qs + h * Dh,
                 score_scratch(static_cast<size_t>(n)), n, ks, Dh, scale);
    }
  }
}

}  // namespace cpu
}  // namespace minmo
