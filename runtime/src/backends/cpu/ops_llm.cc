#include "backends/cpu/ops_llm.h"

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <limits>
#include <vector>

#include <omp.h>

#include "backends/cpu/blas.h"
#include "backends/cpu/ops.h"
#include "minmo/status.h"

namespace minmo {
namespace cpu {

namespace {
inline int blas_num_threads() { return scipy_openblas_get_num_threads(); }

// y[n] = dot(W[n, :], x) + b[n] for rows n in [n0, n1).
// Compiled for AVX-512 / AVX2 / baseline, picked at load time (the build targets plain x86-64).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MINMO_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define MINMO_SIMD_CLONES
#endif

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
}  // namespace

static const int64_t kSmallM = 256;  // up to this many rows: own kernel, above: BLAS

void linear_omp(const float* x, const float* W, const float* bias, float* y, int64_t M, int64_t K, int64_t N) {
  MINMO_CHECK(M >= 0 && K > 0 && N > 0 && K <= INT32_MAX && N <= INT32_MAX && M <= INT32_MAX,
              ErrorCode::InvalidArgument, "linear_omp: bad sizes M=" << M << " K=" << K << " N=" << N);
  if (M == 0) return;
  MINMO_CHECK(x && W && y, ErrorCode::InvalidArgument, "linear_omp: null pointer");
  if (M == 1) {
    // Blocks of 64 output rows, statically spread over the team.
    const int64_t nb = (N + 63) / 64;
#pragma omp parallel for schedule(static) if (N * K > 65536)
    for (int64_t b = 0; b < nb; ++b) gemv_rows(x, W, bias, y, K, b * 64, std::min(N, (b + 1) * 64));
    return;
  }
  if (M <= kSmallM) {
    const int64_t nb = (N + 31) / 32;
#pragma omp parallel for schedule(static) if (M * N * K > 65536)
    for (int64_t b = 0; b < nb; ++b) gemm_rows(x, W, bias, y, M, K, N, b * 32, std::min(N, (b + 1) * 32));
    return;
  }
  if (omp_get_max_threads() == 1 || blas_num_threads() > 1 || M * N * K < 262144) {
    linear(x, W, bias, y, M, K, N);  // BLAS GEMM (its own thread pool)
    return;
  }
  // BLAS is single-threaded: each OpenMP thread multiplies a slice of the output columns.
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t per = ((N + nt - 1) / nt + 15) / 16 * 16;
    const int64_t c0 = std::min(N, id * per), c1 = std::min(N, c0 + per);
    if (c1 > c0) {
      blas::sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M), static_cast<int>(c1 - c0),
                  static_cast<int>(K), 1.f, x, static_cast<int>(K), W + c0 * K, static_cast<int>(K), 0.f, y + c0,
                  static_cast<int>(N));
      if (bias)
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = c0; n < c1; ++n) y[m * N + n] += bias[n];
    }
  }
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
#pragma omp parallel for schedule(static) if (M * D > 65536)
  for (int64_t m = 0; m < M; ++m) rms_row(x + m * D, gamma, y + m * D, D, eps);
}

void add_rms_norm_rows(const float* x, float* residual, const float* gamma, float* y, int64_t M, int64_t D, float eps) {
  MINMO_CHECK(M >= 0 && D > 0 && (M == 0 || (x && residual && gamma && y)) && y != residual,
              ErrorCode::InvalidArgument, "add_rms_norm_rows: bad arguments M=" << M << " D=" << D);
#pragma omp parallel for schedule(static) if (M * D > 65536)
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
#pragma omp parallel for collapse(2) schedule(static) if (T * H * Dh > 32768)
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
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (Tk * Hq * T * Dh > 8192)
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t n = pos0 + t + 1;  // keys this query sees
      const float* qi = q + t * qs + h * Dh;
      const float* kh = k + (h / group) * Dh;
      const float* vh = v + (h / group) * Dh;
      float* o = out + t * qs + h * Dh;
      float* s = score_scratch(static_cast<size_t>(n));
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n; ++j) {
        const float* kj = kh + j * ks;
        float dot = 0.f;
#pragma omp simd reduction(+ : dot)
        for (int64_t d = 0; d < Dh; ++d) dot += qi[d] * kj[d];
        s[j] = dot * scale;
        mx = std::max(mx, s[j]);
      }
      float sum = 0.f;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < n; ++j) {
        s[j] = std::exp(s[j] - mx);
        sum += s[j];
      }
      std::fill(o, o + Dh, 0.f);
      for (int64_t j = 0; j < n; ++j) {
        const float p = s[j];
        const float* vj = vh + j * ks;
#pragma omp simd
        for (int64_t d = 0; d < Dh; ++d) o[d] += p * vj[d];
      }
      const float inv = 1.f / sum;
#pragma omp simd
      for (int64_t d = 0; d < Dh; ++d) o[d] *= inv;
    }
  }
}

}  // namespace cpu
}  // namespace minmo
