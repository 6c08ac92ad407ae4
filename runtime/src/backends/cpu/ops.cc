#include "backends/cpu/ops.h"

#include "backends/cpu/blas.h"
#include "backends/cpu/fastmath.h"
#include "backends/cpu/parallel.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <omp.h>

#include "minmo/status.h"
#include "minmo_kernels.h"

namespace minmo {

namespace blas {
void ensure_single_threaded() {
  static const bool done = [] {
    set_num_threads(1);
    return true;
  }();
  (void)done;
}

void sgemm_parallel(CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
                    int ldb, float beta, float* C, int ldc) {
  ensure_single_threaded();
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const int64_t work = static_cast<int64_t>(M) * N * K;
  const int slices = static_cast<int>(std::min<int64_t>({threads, (N + 15) / 16, std::max<int64_t>(1, work / cpu::kParallelMinMacs)}));
  if (slices <= 1) {
    sgemm(CblasRowMajor, CblasNoTrans, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const int per = ((N + slices - 1) / slices + 15) / 16 * 16;
#pragma omp parallel for num_threads(slices) schedule(static, 1)
  for (int s = 0; s < slices; ++s) {
    const int c0 = std::min(N, s * per), c1 = std::min(N, c0 + per);
    if (c1 <= c0) continue;
    const float* Bs = tb == CblasTrans ? B + static_cast<int64_t>(c0) * ldb : B + c0;
    sgemm(CblasRowMajor, CblasNoTrans, tb, M, c1 - c0, K, alpha, A, lda, Bs, ldb, beta, C + c0, ldc);
  }
}
}  // namespace blas

namespace cpu {
namespace {

// Thread-local scratch, grown on demand and reused (no allocation once warm).
float* scratch(size_t n, int slot) {
  thread_local std::vector<float> bufs[4];
  std::vector<float>& b = bufs[slot];
  if (b.size() < n) b.resize(n);
  return b.data();
}

void check_ptr(const void* p, const char* op, const char* name) {
  MINMO_CHECK(p != nullptr, ErrorCode::InvalidArgument, op << ": " << name << " is null");
}

void check_blas_dim(int64_t v, const char* op) {
  MINMO_CHECK(v >= 0 && v <= INT_MAX, ErrorCode::InvalidArgument, op << ": dimension " << v << " out of range");
}

}  // namespace

void linear(const float* x, const float* W, const float* bias, float* y, int64_t M, int64_t K, int64_t N) {
  check_ptr(x, "linear", "x");
  check_ptr(W, "linear", "W");
  check_ptr(y, "linear", "y");
  MINMO_CHECK(M >= 0 && K > 0 && N > 0, ErrorCode::InvalidArgument,
              "linear: bad sizes M=" << M << " K=" << K << " N=" << N);
  check_blas_dim(M, "linear");
  check_blas_dim(K, "linear");
  check_blas_dim(N, "linear");
  if (M == 0) return;
  blas::sgemm_parallel(CblasTrans, static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), 1.f, x,
                       static_cast<int>(K), W, static_cast<int>(K), 0.f, y, static_cast<int>(N));
  if (bias) {
#pragma omp parallel for schedule(static) if (parallel_elements(M * N))
    for (int64_t m = 0; m < M; ++m) {
      float* row = y + m * N;
      for (int64_t n = 0; n < N; ++n) row[n] += bias[n];
    }
  }
}

void matmul(const float* A, const float* B, float* C, int64_t M, int64_t K, int64_t N) {
  check_ptr(A, "matmul", "A");
  check_ptr(B, "matmul", "B");
  check_ptr(C, "matmul", "C");
  MINMO_CHECK(M >= 0 && K > 0 && N > 0, ErrorCode::InvalidArgument,
              "matmul: bad sizes M=" << M << " K=" << K << " N=" << N);
  check_blas_dim(M, "matmul");
  check_blas_dim(K, "matmul");
  check_blas_dim(N, "matmul");
  if (M == 0) return;
  blas::sgemm_parallel(CblasNoTrans, static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), 1.f, A,
                       static_cast<int>(K), B, static_cast<int>(N), 0.f, C, static_cast<int>(N));
}

void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t M, int64_t D, float eps) {
  check_ptr(x, "layer_norm", "x");
  check_ptr(y, "layer_norm", "y");
  MINMO_CHECK(M >= 0 && D > 0, ErrorCode::InvalidArgument, "layer_norm: bad sizes M=" << M << " D=" << D);
#pragma omp parallel for schedule(static) if (parallel_elements(M * D))
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * D;
    float* yr = y + m * D;
    double sum = 0.0;
    for (int64_t d = 0; d < D; ++d) sum += xr[d];
    const double mean = sum / static_cast<double>(D);
    double var = 0.0;
    for (int64_t d = 0; d < D; ++d) {
      const double c = xr[d] - mean;
      var += c * c;
    }
    const float inv = static_cast<float>(1.0 / std::sqrt(var / static_cast<double>(D) + static_cast<double>(eps)));
    const float mf = static_cast<float>(mean);
    for (int64_t d = 0; d < D; ++d) {
      float v = (xr[d] - mf) * inv;
      if (gamma) v *= gamma[d];
      if (beta) v += beta[d];
      yr[d] = v;
    }
  }
}

void rms_norm(const float* x, const float* gamma, float* y, int64_t M, int64_t D, float eps) {
  check_ptr(x, "rms_norm", "x");
  check_ptr(y, "rms_norm", "y");
  MINMO_CHECK(M >= 0 && D > 0, ErrorCode::InvalidArgument, "rms_norm: bad sizes M=" << M << " D=" << D);
#pragma omp parallel for schedule(static) if (parallel_elements(M * D))
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * D;
    float* yr = y + m * D;
    double ss = 0.0;
    for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(xr[d]) * xr[d];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(D) + static_cast<double>(eps)));
    if (gamma) {
      for (int64_t d = 0; d < D; ++d) yr[d] = xr[d] * inv * gamma[d];
    } else {
      for (int64_t d = 0; d < D; ++d) yr[d] = xr[d] * inv;
    }
  }
}

void rms_norm_residual(const float* x, float* residual, const float* gamma, float* out, int64_t M, int64_t D,
                       float eps) {
  check_ptr(residual, "rms_norm_residual", "residual");
  check_ptr(gamma, "rms_norm_residual", "gamma");
  check_ptr(out, "rms_norm_residual", "out");
  MINMO_CHECK(M >= 0 && D > 0, ErrorCode::InvalidArgument, "rms_norm_residual: bad sizes M=" << M << " D=" << D);
  MINMO_CHECK(out != residual, ErrorCode::InvalidArgument, "rms_norm_residual: out must not alias residual");
  const int rc = minmo_rmsnorm_residual_f32_cpu(x, residual, gamma, out, M, D, eps);
  MINMO_CHECK(rc == MINMO_KERNEL_OK, ErrorCode::InvalidArgument,
              "rms_norm_residual: " << minmo_kernel_status_string(rc));
}

void relu(float* x, int64_t n) {
  check_ptr(x, "relu", "x");
#pragma omp parallel for schedule(static) if (parallel_elements(n))
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.f ? x[i] : 0.f;
}

namespace {
MINMO_SIMD_CLONES void gelu_range(float* x, int64_t n) {
  constexpr float kInvSqrt2 = 0.70710678118654752440f;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float z = x[i] * kInvSqrt2, tail = fast_erfc_nonneg(std::fabs(z));  // erfc(|z|)
    x[i] = 0.5f * x[i] * (z < 0.f ? tail : 2.0f - tail);  // 1 + erf(z), no cancellation for z << 0
  }
}
}  // namespace

void gelu(float* x, int64_t n) {
  check_ptr(x, "gelu", "x");
  constexpr int64_t kBlock = 4096;
#pragma omp parallel for schedule(static) if (parallel_elements(n))
  for (int64_t b = 0; b < n; b += kBlock) gelu_range(x + b, std::min(kBlock, n - b));
}

void silu(float* x, int64_t n) {
  check_ptr(x, "silu", "x");
#pragma omp parallel for schedule(static) if (parallel_elements(n))
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.f + std::exp(-x[i]));
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  check_ptr(gate, "silu_mul", "gate");
  check_ptr(up, "silu_mul", "up");
  check_ptr(out, "silu_mul", "out");
#pragma omp parallel for schedule(static) if (parallel_elements(n))
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.f + std::exp(-g)) * up[i];
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
  check_ptr(y, "add_inplace", "y");
  check_ptr(x, "add_inplace", "x");
#pragma omp parallel for schedule(static) if (parallel_elements(n))
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

namespace {
// Stable softmax of one row of n values (n >= 1), in place. Returns nothing; helper for rows.
inline void softmax_row(float* x, int64_t n) {
  float mx = x[0];
  for (int64_t j = 1; j < n; ++j) mx = std::max(mx, x[j]);
  double sum = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    x[j] = std::exp(x[j] - mx);
    sum += x[j];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t j = 0; j < n; ++j) x[j] *= inv;
}
}  // namespace

void softmax(float* x, int64_t M, int64_t N) {
  check_ptr(x, "softmax", "x");
  MINMO_CHECK(M >= 0 && N > 0, ErrorCode::InvalidArgument, "softmax: bad sizes M=" << M << " N=" << N);
#pragma omp parallel for schedule(static) if (parallel_elements(M * N))
  for (int64_t m = 0; m < M; ++m) softmax_row(x + m * N, N);
}

void log_softmax(float* x, int64_t M, int64_t N) {
  check_ptr(x, "log_softmax", "x");
  MINMO_CHECK(M >= 0 && N > 0, ErrorCode::InvalidArgument, "log_softmax: bad sizes M=" << M << " N=" << N);
#pragma omp parallel for schedule(static) if (parallel_elements(M * N))
  for (int64_t m = 0; m < M; ++m) {
    float* r = x + m * N;
    float mx = r[0];
    for (int64_t j = 1; j < N; ++j) mx = std::max(mx, r[j]);
    double sum = 0.0;
    for (int64_t j = 0; j < N; ++j) sum += std::exp(static_cast<double>(r[j] - mx));
    const float ls = static_cast<float>(std::log(sum));
    for (int64_t j = 0; j < N; ++j) r[j] = (r[j] - mx) - ls;  // x - mx is exact near the max
  }
}

void rope_neox(float* x, const int64_t* positions, int64_t T, int64_t H, int64_t Dh, double theta) {
  check_ptr(x, "rope_neox", "x");
  check_ptr(positions, "rope_neox", "positions");
  MINMO_CHECK(T >= 0 && H > 0 && Dh > 0 && Dh % 2 == 0 && theta > 0, ErrorCode::InvalidArgument,
              "rope_neox: bad arguments T=" << T << " H=" << H << " Dh=" << Dh << " (must be even) theta=" << theta);
  const int64_t half = Dh / 2;
#pragma omp parallel for schedule(static) if (parallel_elements(T * H * Dh))
  for (int64_t t = 0; t < T; ++t) {
    const double pos = static_cast<double>(positions[t]);
    for (int64_t i = 0; i < half; ++i) {
      const double ang = pos * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(Dh));
      const float c = static_cast<float>(std::cos(ang));
      const float s = static_cast<float>(std::sin(ang));
      for (int64_t h = 0; h < H; ++h) {
        float* xh = x + (t * H + h) * Dh;
        const float a = xh[i], b = xh[i + half];
        xh[i] = a * c - b * s;
        xh[i + half] = b * c + a * s;
      }
    }
  }
}

void embedding(const float* table, const int64_t* ids, float* out, int64_t T, int64_t V, int64_t D) {
  check_ptr(table, "embedding", "table");
  check_ptr(ids, "embedding", "ids");
  check_ptr(out, "embedding", "out");
  MINMO_CHECK(T >= 0 && V > 0 && D > 0, ErrorCode::InvalidArgument, "embedding: bad sizes T=" << T << " V=" << V << " D=" << D);
  for (int64_t t = 0; t < T; ++t)
    MINMO_CHECK(ids[t] >= 0 && ids[t] < V, ErrorCode::InvalidArgument,
                "embedding: id " << ids[t] << " at position " << t << " is outside the vocabulary [0, " << V << ")");
#pragma omp parallel for schedule(static) if (parallel_elements(T * D))
  for (int64_t t = 0; t < T; ++t)
    std::memcpy(out + t * D, table + ids[t] * D, static_cast<size_t>(D) * sizeof(float));
}

void attention(const float* q, const float* k, const float* v, float* out, int64_t Tq, int64_t Tk, int64_t Hq,
               int64_t Hkv, int64_t Dh, float scale, const AttnMask& mask) {
  check_ptr(q, "attention", "q");
  check_ptr(out, "attention", "out");
  MINMO_CHECK(Tq >= 0 && Tk >= 0 && Hq > 0 && Hkv > 0 && Dh > 0 && Hq % Hkv == 0, ErrorCode::InvalidArgument,
              "attention: bad sizes Tq=" << Tq << " Tk=" << Tk << " Hq=" << Hq << " Hkv=" << Hkv << " Dh=" << Dh
                                         << " (Hq must be a multiple of Hkv)");
  if (Tq == 0) return;
  if (Tk > 0) {
    check_ptr(k, "attention", "k");
    check_ptr(v, "attention", "v");
  }
  if (mask.kind == AttnMask::Kind::Ranges) {
    check_ptr(mask.lo, "attention", "mask.lo");
    check_ptr(mask.hi, "attention", "mask.hi");
    for (int64_t i = 0; i < Tq; ++i)
      MINMO_CHECK(0 <= mask.lo[i] && mask.lo[i] <= mask.hi[i] && mask.hi[i] <= Tk, ErrorCode::InvalidArgument,
                  "attention: key range [" << mask.lo[i] << ", " << mask.hi[i] << ") of query " << i
                                           << " is not within [0, " << Tk << ")");
  }
  auto range = [&](int64_t i, int64_t* lo, int64_t* hi) {
    *lo = 0;
    *hi = Tk;
    switch (mask.kind) {
      case AttnMask::Kind::None: break;
      case AttnMask::Kind::Causal: *lo = 0; *hi = std::max<int64_t>(0, std::min(Tk, mask.q_offset + i + 1)); break;
      case AttnMask::Kind::Ranges: *lo = mask.lo[i]; *hi = mask.hi[i]; break;
    }
  };
  const int64_t group = Hq / Hkv;
  const int64_t qs = Hq * Dh, ks = Hkv * Dh;  // row strides

  if (Tq < 16 || Tk < 16) {
    // Few queries (decode): one (query, head) pair per iteration.
#pragma omp parallel for collapse(2) schedule(static) if (parallel_macs(2 * Tq * Tk * Hq * Dh))
    for (int64_t i = 0; i < Tq; ++i) {
      for (int64_t h = 0; h < Hq; ++h) {
        int64_t lo, hi;
        range(i, &lo, &hi);
        const float* qi = q + i * qs + h * Dh;
        const float* kh = k + (h / group) * Dh;
        const float* vh = v + (h / group) * Dh;
        float* o = out + i * qs + h * Dh;
        std::fill(o, o + Dh, 0.f);
        if (hi <= lo) continue;
        float* s = scratch(static_cast<size_t>(hi - lo), 0);
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = lo; j < hi; ++j) {
          const float* kj = kh + j * ks;
          float dot = 0.f;
          for (int64_t d = 0; d < Dh; ++d) dot += qi[d] * kj[d];
          s[j - lo] = dot * scale;
          mx = std::max(mx, s[j - lo]);
        }
        double sum = 0.0;
        for (int64_t j = lo; j < hi; ++j) {
          const float p = std::exp(s[j - lo] - mx);
          sum += p;
          const float* vj = vh + j * ks;
          for (int64_t d = 0; d < Dh; ++d) o[d] += p * vj[d];
        }
        const float inv = static_cast<float>(1.0 / sum);
        for (int64_t d = 0; d < Dh; ++d) o[d] *= inv;
      }
    }
    return;
  }

  // Many queries (prefill / encoder): per head, S = scale Q K^T and O = P V with BLAS over the
  // key span [jlo, jhi) that any query uses.
  int64_t jlo = Tk, jhi = 0;
  for (int64_t i = 0; i < Tq; ++i) {
    int64_t lo, hi;
    range(i, &lo, &hi);
    if (hi > lo) {
      jlo = std::min(jlo, lo);
      jhi = std::max(jhi, hi);
    }
  }
  if (jhi <= jlo) {
    std::fill(out, out + Tq * qs, 0.f);
    return;
  }
  const int64_t span = jhi - jlo;
  check_blas_dim(Tq * span, "attention");
  check_blas_dim(qs, "attention");
  // Heads in parallel, each with its own score block (thread-local scratch) and single-threaded
  // BLAS products.
  blas::ensure_single_threaded();
#pragma omp parallel for schedule(static) if (parallel_macs(2 * Hq * Tq * span * Dh))
  for (int64_t h = 0; h < Hq; ++h) {
    float* S = scratch(static_cast<size_t>(Tq * span), 1);
    const float* kh = k + jlo * ks + (h / group) * Dh;
    const float* vh = v + jlo * ks + (h / group) * Dh;
    blas::sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(Tq), static_cast<int>(span),
                static_cast<int>(Dh), scale, q + h * Dh, static_cast<int>(qs), kh, static_cast<int>(ks), 0.f, S,
                static_cast<int>(span));
    for (int64_t i = 0; i < Tq; ++i) {
      int64_t lo, hi;
      range(i, &lo, &hi);
      float* srow = S + i * span;
      if (hi <= lo) {
        std::fill(srow, srow + span, 0.f);
        continue;
      }
      std::fill(srow, srow + (lo - jlo), 0.f);
      std::fill(srow + (hi - jlo), srow + span, 0.f);
      softmax_row(srow + (lo - jlo), hi - lo);
    }
    blas::sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(Tq), static_cast<int>(Dh),
                static_cast<int>(span), 1.f, S, static_cast<int>(span), vh, static_cast<int>(ks), 0.f, out + h * Dh,
                static_cast<int>(qs));
  }
}

int64_t conv1d_out_len(int64_t T, int64_t K, int64_t stride, int64_t pad_left, int64_t pad_right, int64_t dilation) {
  const int64_t span = dilation * (K - 1) + 1;
  const int64_t padded = T + pad_left + pad_right;
  return padded < span ? 0 : (padded - span) / stride + 1;
}

void conv1d(const float* x, const float* weight, const float* bias, float* y, int64_t T, int64_t Cin, int64_t Cout,
            int64_t K, int64_t stride, int64_t pad_left, int64_t pad_right, int64_t groups, int64_t dilation) {
  check_ptr(weight, "conv1d", "weight");
  MINMO_CHECK(T >= 0 && Cin > 0 && Cout > 0 && K > 0 && stride > 0 && pad_left >= 0 && pad_right >= 0 && groups > 0 &&
                  dilation > 0 && Cin % groups == 0 && Cout % groups == 0,
              ErrorCode::InvalidArgument,
              "conv1d: bad arguments T=" << T << " Cin=" << Cin << " Cout=" << Cout << " K=" << K << " stride=" << stride
                                         << " pad=(" << pad_left << ", " << pad_right << ") groups=" << groups
                                         << " dilation=" << dilation);
  const int64_t Tout = conv1d_out_len(T, K, stride, pad_left, pad_right, dilation);
  if (Tout == 0) return;
  check_ptr(x, "conv1d", "x");
  check_ptr(y, "conv1d", "y");

  if (groups == Cin && Cin == Cout) {
    // Depthwise: weight transposed to [K, C] so the channel loop is contiguous.
    const int64_t C = Cin;
    float* wt = scratch(static_cast<size_t>(K * C), 2);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t kk = 0; kk < K; ++kk) wt[kk * C + c] = weight[c * K + kk];
#pragma omp parallel for schedule(static) if (parallel_macs(Tout * C * K))
    for (int64_t t = 0; t < Tout; ++t) {
      float* yr = y + t * C;
      if (bias) std::memcpy(yr, bias, static_cast<size_t>(C) * sizeof(float));
      else std::fill(yr, yr + C, 0.f);
      for (int64_t kk = 0; kk < K; ++kk) {
        const int64_t ti = t * stride - pad_left + kk * dilation;
        if (ti < 0 || ti >= T) continue;
        const float* xr = x + ti * C;
        const float* wk = wt + kk * C;
        for (int64_t c = 0; c < C; ++c) yr[c] += wk[c] * xr[c];
      }
    }
    return;
  }

  // General: per group, im2col [Tout, Cin_g * K] then one product with the group's weights.
  const int64_t cin_g = Cin / groups, cout_g = Cout / groups, ck = cin_g * K;
  check_blas_dim(Tout * ck, "conv1d");
  check_blas_dim(Cout, "conv1d");
  float* col = scratch(static_cast<size_t>(Tout * ck), 2);
  for (int64_t g = 0; g < groups; ++g) {
#pragma omp parallel for schedule(static) if (parallel_elements(Tout * ck))
    for (int64_t t = 0; t < Tout; ++t) {
      float* cr = col + t * ck;
      for (int64_t kk = 0; kk < K; ++kk) {
        const int64_t ti = t * stride - pad_left + kk * dilation;
        if (ti < 0 || ti >= T) {
          for (int64_t ci = 0; ci < cin_g; ++ci) cr[ci * K + kk] = 0.f;
        } else {
          const float* xr = x + ti * Cin + g * cin_g;
          for (int64_t ci = 0; ci < cin_g; ++ci) cr[ci * K + kk] = xr[ci];
        }
      }
    }
    blas::sgemm_parallel(CblasTrans, static_cast<int>(Tout), static_cast<int>(cout_g), static_cast<int>(ck), 1.f, col,
                         static_cast<int>(ck), weight + g * cout_g * ck, static_cast<int>(ck), 0.f, y + g * cout_g,
                         static_cast<int>(Cout));
  }
  if (bias) {
#pragma omp parallel for schedule(static) if (parallel_elements(Tout * Cout))
    for (int64_t t = 0; t < Tout; ++t)
      for (int64_t c = 0; c < Cout; ++c) y[t * Cout + c] += bias[c];
  }
}

}  // namespace cpu
}  // namespace minmo
