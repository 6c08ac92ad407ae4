// CPU twins of the flow-encoder kernels (minmo_kernels/rel_attention.h), accumulating in fp64.
#include <cmath>
#include <limits>
#include <vector>

#include "../common/args.h"
#include "minmo_kernels.h"

extern "C" int minmo_rel_attention_f32_cpu(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv,
                                           const int32_t* key_rows, const int32_t* key_pe, int64_t keys,
                                           const float* p, int64_t ldp, const float* bias_u, const float* bias_v,
                                           float* out, int64_t ldo, int64_t rows, int32_t heads, int32_t head_dim,
                                           float scale) {
  if (!minmo_args::rel_attention_ok(q, ldq, k, v, ldkv, key_rows, key_pe, keys, p, ldp, bias_u, bias_v, out, ldo, rows,
                                    heads, head_dim))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t D = head_dim;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t h = 0; h < heads; ++h) {
      const float* qi = q + i * ldq + h * D;
      const float *bu = bias_u + h * D, *bv = bias_v + h * D;
      std::vector<double> s(static_cast<size_t>(keys)), acc(static_cast<size_t>(D), 0.0);
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < keys; ++j) {
        const float* kj = k + int64_t{key_rows[j]} * ldkv + h * D;
        const float* pj = p + (int64_t{key_pe[j]} + i) * ldp + h * D;
        double a = 0.0;
        for (int64_t c = 0; c < D; ++c)
          a += (double(qi[c]) + bu[c]) * kj[c] + (double(qi[c]) + bv[c]) * pj[c];
        s[j] = a * scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0.0;
      for (int64_t j = 0; j < keys; ++j) {
        const double e = std::exp(s[j] - mx);
        sum += e;
        const float* vj = v + int64_t{key_rows[j]} * ldkv + h * D;
        for (int64_t c = 0; c < D; ++c) acc[c] += e * vj[c];
      }
      for (int64_t c = 0; c < D; ++c) out[i * ldo + h * D + c] = static_cast<float>(acc[c] / sum);
    }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_rel_pos_enc_f32_cpu(const int32_t* dist, int64_t count, int64_t dim, float* pe) {
  if (!minmo_args::rel_pos_enc_ok(dist, count, dim, pe)) return MINMO_KERNEL_INVALID_ARGUMENT;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i)
    for (int64_t c = 0; c < dim / 2; ++c) {
      const double w = std::exp(static_cast<double>(2 * c) * -(std::log(10000.0) / static_cast<double>(dim)));
      const double a = static_cast<double>(dist[i]) * w;
      pe[i * dim + 2 * c] = static_cast<float>(std::sin(a));
      pe[i * dim + 2 * c + 1] = static_cast<float>(std::cos(a));
    }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_layernorm_f32_cpu(const float* x, int64_t ldx, const float* gamma, const float* beta, float* out,
                                       int64_t ldo, int64_t rows, int64_t dim, float eps, float scale) {
  if (!minmo_args::layernorm_f32_ok(x, ldx, gamma, beta, out, ldo, rows, dim)) return MINMO_KERNEL_INVALID_ARGUMENT;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    double mean = 0.0, var = 0.0;
    for (int64_t c = 0; c < dim; ++c) mean += xr[c];
    mean /= static_cast<double>(dim);
    for (int64_t c = 0; c < dim; ++c) var += (xr[c] - mean) * (xr[c] - mean);
    const double inv = 1.0 / std::sqrt(var / static_cast<double>(dim) + eps);
    float* o = out + r * ldo;
    for (int64_t c = 0; c < dim; ++c)
      o[c] = static_cast<float>(scale * ((xr[c] - mean) * inv * gamma[c] + beta[c]));
  }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_silu_rows_f32_cpu(float* y, int64_t rows, int64_t n, int64_t ld) {
  if (!minmo_args::silu_rows_ok(y, rows, n, ld)) return MINMO_KERNEL_INVALID_ARGUMENT;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < n; ++c) {
      const double v = y[r * ld + c];
      y[r * ld + c] = static_cast<float>(v / (1.0 + std::exp(-v)));
    }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_embedding_rows_f32_cpu(const float* table, const int32_t* ids, float* out, int64_t rows,
                                            int64_t vocab, int64_t dim, int64_t ldo) {
  if (!minmo_args::embedding_rows_ok(table, ids, out, rows, vocab, dim, ldo)) return MINMO_KERNEL_INVALID_ARGUMENT;
  for (int64_t r = 0; r < rows; ++r) {
    const bool ok = ids[r] >= 0 && ids[r] < vocab;
    for (int64_t c = 0; c < dim; ++c) out[r * ldo + c] = ok ? table[int64_t{ids[r]} * dim + c] : NAN;
  }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_repeat_rows_f32_cpu(const float* ctx, int64_t ctx_rows, const float* x, int64_t rows, int64_t dim,
                                         int32_t repeat, float* out) {
  if (!minmo_args::repeat_rows_ok(ctx, ctx_rows, x, rows, dim, repeat, out)) return MINMO_KERNEL_INVALID_ARGUMENT;
  for (int64_t r = 0; r < ctx_rows + rows; ++r) {
    const float* src = r < ctx_rows ? ctx + r * dim : x + (r - ctx_rows) * dim;
    for (int32_t t = 0; t < repeat; ++t)
      for (int64_t c = 0; c < dim; ++c) out[(repeat * r + t) * dim + c] = src[c];
  }
  return MINMO_KERNEL_OK;
}
