// CPU twins of the flow-estimator kernels (minmo_kernels/flow_est.h): the test oracles and the
// kernels of device "cuda-sim". Norms, softmax and GELU in fp64.
#include <cmath>
#include <cstring>
#include <vector>

#include "../common/flow_est_args.h"
#include "minmo_kernels/flow_est.h"

extern "C" int minmo_flow_causal_im2col_f32_cpu(const float* x, const float* ctx, float* ctx_next, float* out,
                                                int64_t batch, int64_t n, int64_t C, int32_t k, int64_t ld) {
  if (!minmo_args::flow_im2col_ok(x, ctx, ctx_next, out, batch, n, C, k, ld)) return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t keep = k - 1;
  for (int64_t b = 0; b < batch; ++b) {
    auto s = [&](int64_t r) { return r < keep ? ctx + (b * keep + r) * C : x + (b * n + r - keep) * C; };
    for (int64_t t = 0; t < n; ++t) {
      float* o = out + (b * n + t) * ld;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t j = 0; j < k; ++j) o[c * k + j] = s(t + j)[c];
      for (int64_t c = C * k; c < ld; ++c) o[c] = c == C * k ? 1.f : 0.f;
    }
    for (int64_t r = 0; r < keep; ++r) std::memcpy(ctx_next + (b * keep + r) * C, s(n + r), sizeof(float) * C);
  }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_flow_norm_act_f32_cpu(float* x, const float* gamma, const float* beta, const float* post_bias,
                                           const float* add, float* out, int64_t rows, int64_t C, int64_t ld,
                                           float eps, int32_t act) {
  if (!minmo_args::flow_norm_ok(x, gamma, beta, post_bias, add, out, rows, C, ld, act))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  for (int64_t m = 0; m < rows; ++m) {
    float* xr = x + m * C;
    double mean = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) mean += xr[c];
    mean /= double(C);
    for (int64_t c = 0; c < C; ++c) var += (xr[c] - mean) * (xr[c] - mean);
    const double inv = 1.0 / std::sqrt(var / double(C) + double(eps));
    float* o = out + m * ld;
    for (int64_t c = 0; c < C; ++c) {
      double y = (xr[c] - mean) * inv * gamma[c] + (beta ? beta[c] : 0.0);
      if (act == MINMO_FLOW_ACT_MISH) y = y * std::tanh(y > 20.0 ? y : std::log1p(std::exp(y)));
      const float v = static_cast<float>(y) + (add ? add[c] : 0.f);
      if (post_bias) xr[c] += post_bias[c];
      o[c] = v;
    }
    for (int64_t c = C; c < ld; ++c) o[c] = c == C ? 1.f : 0.f;
  }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_flow_attention_f32_cpu(const float* qkv, float* kc, float* vc, float* out, const int32_t* rows,
                                            int64_t batch, int64_t n, int64_t heads, int64_t hd, int64_t cap,
                                            float scale) {
  if (!minmo_args::flow_attention_ok(qkv, kc, vc, out, rows, batch, n, heads, hd, cap))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t m0 = *rows, inner = heads * hd, m = m0 + n;
  if (m0 < 0 || m > cap) return MINMO_KERNEL_INVALID_ARGUMENT;
  std::vector<double> p(static_cast<size_t>(m));
  for (int64_t b = 0; b < batch; ++b) {
    const float* blk = qkv + b * n * 3 * inner;
    auto key = [&](int64_t j) { return j < m0 ? kc + (b * cap + j) * inner : blk + (j - m0) * 3 * inner + inner; };
    auto val = [&](int64_t j) { return j < m0 ? vc + (b * cap + j) * inner : blk + (j - m0) * 3 * inner + 2 * inner; };
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < heads; ++h) {
        const float* q = blk + i * 3 * inner + h * hd;
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < m; ++j) {
          double s = 0;
          for (int64_t d = 0; d < hd; ++d) s += double(q[d]) * key(j)[h * hd + d];
          p[j] = s * scale;
          mx = std::max(mx, p[j]);
        }
        for (int64_t j = 0; j < m; ++j) sum += (p[j] = std::exp(p[j] - mx));
        for (int64_t d = 0; d < hd; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < m; ++j) acc += p[j] * val(j)[h * hd + d];
          out[(b * n + i) * inner + h * hd + d] = static_cast<float>(acc / sum);
        }
      }
    for (int64_t i = 0; i < n; ++i) {  // after every read of the block's fresh rows
      std::memcpy(kc + (b * cap + m0 + i) * inner, blk + i * 3 * inner + inner, sizeof(float) * inner);
      std::memcpy(vc + (b * cap + m0 + i) * inner, blk + i * 3 * inner + 2 * inner, sizeof(float) * inner);
    }
  }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_flow_kv_compact_f32_cpu(float* caches, int64_t count, int64_t stride, int64_t width,
                                             int64_t first, int64_t last, int64_t rows) {
  if (!minmo_args::flow_compact_ok(caches, count, stride, width, first, last, rows))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  if (first == last || last == rows) return MINMO_KERNEL_OK;
  for (int64_t c = 0; c < count; ++c) {
    float* base = caches + c * stride;
    std::memmove(base + first * width, base + last * width, sizeof(float) * (rows - last) * width);
  }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_flow_gelu_f32_cpu(float* y, int64_t n) {
  if (!y || n < 1) return MINMO_KERNEL_INVALID_ARGUMENT;
  for (int64_t i = 0; i < n; ++i) {
    const double v = y[i];
    y[i] = static_cast<float>(0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))));
  }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_flow_copy_rows_f32_cpu(const float* src, int64_t lds, int64_t src_rows, float* dst, int64_t ldd,
                                            int64_t rows, int64_t cols) {
  if (!minmo_args::flow_copy_rows_ok(src, lds, src_rows, dst, ldd, rows, cols)) return MINMO_KERNEL_INVALID_ARGUMENT;
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * ldd, src + (r % src_rows) * lds, sizeof(float) * cols);
  return MINMO_KERNEL_OK;
}
