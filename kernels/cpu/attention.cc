// CPU twins of the attention kernels (minmo_kernels/attention.h): fp64 softmax and accumulation.
#include <cmath>
#include <vector>

#include "../common/args.h"
#include "twins.h"
#include "minmo_kernels.h"

using minmo_cpu::bf16_to_f32;
using minmo_cpu::f32_to_bf16;

namespace {

// out[:] = bf16(softmax_{j < n_keys}(scale * q . k_j) @ v_j) for one query row; k, v: [n_keys, D] rows
// of one KV head (stride D).
void attend_row(const minmo_bf16* q, const minmo_bf16* k, const minmo_bf16* v, int64_t n_keys, int64_t dim,
                double scale, minmo_bf16* out) {
  std::vector<double> s(static_cast<size_t>(n_keys)), acc(static_cast<size_t>(dim), 0.0);
  double mx = -INFINITY;
  for (int64_t j = 0; j < n_keys; ++j) {
    double d = 0;
    for (int64_t i = 0; i < dim; ++i) d += double(bf16_to_f32(q[i])) * bf16_to_f32(k[j * dim + i]);
    s[j] = d * scale;
    mx = std::max(mx, s[j]);
  }
  double sum = 0;
  for (int64_t j = 0; j < n_keys; ++j) {
    const double p = std::exp(s[j] - mx);
    sum += p;
    for (int64_t i = 0; i < dim; ++i) acc[i] += p * bf16_to_f32(v[j * dim + i]);
  }
  for (int64_t i = 0; i < dim; ++i) out[i] = f32_to_bf16(static_cast<float>(acc[i] / sum));
}

}  // namespace

void minmo_cpu::qkv_store_head(const double* v, int64_t h, int64_t p, minmo_bf16* q_row, minmo_bf16* k_cache,
                               minmo_bf16* v_cache, int64_t heads_q, int64_t heads_kv, int64_t head_dim,
                               int64_t max_seq, double theta) {
  const int64_t D = head_dim, half = D / 2;
  minmo_bf16* dst;
  if (h < heads_q) {
    dst = q_row + h * D;
  } else if (p < 0 || p >= max_seq) {
    return;
  } else if (h < heads_q + heads_kv) {
    dst = k_cache + ((h - heads_q) * max_seq + p) * D;
  } else {
    dst = v_cache + ((h - heads_q - heads_kv) * max_seq + p) * D;
    for (int64_t i = 0; i < D; ++i) dst[i] = f32_to_bf16(static_cast<float>(v[i]));
    return;
  }
  for (int64_t i = 0; i < half; ++i) {
    const double a = theta > 0 ? double(p) * std::pow(theta, -2.0 * double(i) / double(D)) : 0.0;  // 0: no RoPE
    const double c = std::cos(a), s = std::sin(a);
    dst[i] = f32_to_bf16(static_cast<float>(v[i] * c - v[i + half] * s));
    dst[i + half] = f32_to_bf16(static_cast<float>(v[i + half] * c + v[i] * s));
  }
}

extern "C" int minmo_qkv_rope_append_bf16_cpu(const minmo_bf16* qkv, const minmo_bf16* bias, const int32_t* pos,
                                              minmo_bf16* q_out, minmo_bf16* k_cache, minmo_bf16* v_cache,
                                              int64_t tokens, int64_t heads_q, int64_t heads_kv, int64_t head_dim,
                                              int64_t max_seq, float theta) {
  if (!qkv || !pos || !q_out || !k_cache || !v_cache || !(theta >= 0) ||
      !minmo_args::window_shape_ok(tokens, heads_q, heads_kv, head_dim, max_seq))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t D = head_dim, width = (heads_q + 2 * heads_kv) * D;
  std::vector<double> v(static_cast<size_t>(D));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < heads_q + 2 * heads_kv; ++h) {
      for (int64_t i = 0; i < D; ++i)
        v[i] = double(bf16_to_f32(qkv[t * width + h * D + i])) + (bias ? bf16_to_f32(bias[h * D + i]) : 0.f);
      minmo_cpu::qkv_store_head(v.data(), h, int64_t(*pos) + t, q_out + t * heads_q * D, k_cache, v_cache, heads_q,
                                heads_kv, D, max_seq, theta);
    }
  return MINMO_KERNEL_OK;
}

extern "C" int64_t minmo_decode_attention_workspace_floats(int64_t heads_q, int64_t head_dim, int64_t max_seq,
                                                           int64_t split_size) {
  if (heads_q < 1 || head_dim < 1 || max_seq < 1 || split_size < 32 || split_size % 32) return -1;
  return heads_q * minmo_args::decode_splits(max_seq, split_size) * (head_dim + 2);
}

extern "C" int minmo_decode_attention_bf16_cpu(const minmo_bf16* q, const minmo_bf16* k_cache,
                                               const minmo_bf16* v_cache, const int32_t* pos, minmo_bf16* out,
                                               float* /*workspace*/, int64_t heads_q, int64_t heads_kv,
                                               int64_t head_dim, int64_t max_seq, int64_t /*split_size*/,
                                               float scale) {
  return minmo_prefill_attention_bf16_cpu(q, k_cache, v_cache, pos, out, 1, heads_q, heads_kv, head_dim, max_seq,
                                          scale);
}

extern "C" int minmo_prefill_attention_bf16_cpu(const minmo_bf16* q, const minmo_bf16* k_cache,
                                                const minmo_bf16* v_cache, const int32_t* pos, minmo_bf16* out,
                                                int64_t tokens, int64_t heads_q, int64_t heads_kv, int64_t head_dim,
                                                int64_t max_seq, float scale) {
  if (!q || !k_cache || !v_cache || !pos || !out ||
      !minmo_args::attention_ok(tokens, heads_q, heads_kv, head_dim, max_seq) ||
      minmo_args::overlap(q, tokens * heads_q * head_dim * 2, out, tokens * heads_q * head_dim * 2))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t group = heads_q / heads_kv, D = head_dim;
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < heads_q; ++h) {
      // Keys 0 .. min(p, max_seq - 1); a query before the cache start sees no key and gets zeros.
      const int64_t p = int64_t(*pos) + t, n_keys = std::min(p + 1, max_seq);
      minmo_bf16* o = out + (t * heads_q + h) * D;
      if (n_keys <= 0) {
        for (int64_t i = 0; i < D; ++i) o[i] = 0;
        continue;
      }
      const int64_t kvh = h / group;
      attend_row(q + (t * heads_q + h) * D, k_cache + kvh * max_seq * D, v_cache + kvh * max_seq * D, n_keys, D,
                 scale, o);
    }
  return MINMO_KERNEL_OK;
}

extern "C" int64_t minmo_decode_attention_fused_workspace_floats(int64_t heads_q, int64_t head_dim,
                                                                 int64_t max_splits) {
  if (heads_q < 1 || heads_q > 65535 || head_dim < 1 || head_dim > 256 || max_splits < 1 || max_splits > (1 << 20))
    return -1;
  return heads_q * max_splits * (head_dim + 2);
}

extern "C" int minmo_decode_attention_fused_bf16_cpu(const minmo_bf16* q, const minmo_bf16* k_cache,
                                                     const minmo_bf16* v_cache, const int32_t* pos, minmo_bf16* out,
                                                     float* /*workspace*/, uint32_t* /*counters*/, int64_t heads_q,
                                                     int64_t heads_kv, int64_t head_dim, int64_t max_seq,
                                                     int64_t max_splits, float scale) {
  if (!minmo_args::decode_fused_ok(heads_q, heads_kv, head_dim, max_seq, max_splits))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  return minmo_prefill_attention_bf16_cpu(q, k_cache, v_cache, pos, out, 1, heads_q, heads_kv, head_dim, max_seq,
                                          scale);
}

extern "C" int minmo_window_attention_bf16_cpu(const minmo_bf16* q, const minmo_bf16* k_cache,
                                               const minmo_bf16* v_cache, const int32_t* pos, const int32_t* lo,
                                               minmo_bf16* out, int64_t tokens, int64_t heads_q, int64_t heads_kv,
                                               int64_t head_dim, int64_t max_seq, float scale) {
  if (!minmo_args::window_attention_ok(q, k_cache, v_cache, pos, lo, out, tokens, heads_q, heads_kv, head_dim,
                                       max_seq))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t group = heads_q / heads_kv, D = head_dim;
  const int64_t k_begin = std::max<int64_t>(*lo, 0), k_end = std::min(int64_t(*pos) + tokens, max_seq);
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < heads_q; ++h) {
      minmo_bf16* o = out + (t * heads_q + h) * D;
      if (k_begin >= k_end) {
        for (int64_t i = 0; i < D; ++i) o[i] = 0;
        continue;
      }
      const int64_t base = (h / group) * max_seq * D + k_begin * D;
      attend_row(q + (t * heads_q + h) * D, k_cache + base, v_cache + base, k_end - k_begin, D, scale, o);
    }
  return MINMO_KERNEL_OK;
}
