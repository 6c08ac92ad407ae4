// CPU twins of the fused decode-step products (minmo_kernels/fused.h): the products in fp64, then
// the epilogue of the unfused twin they replace (norm.cc, attention.cc).
#include <vector>

#include "../common/args.h"
#include "twins.h"

namespace {

// residual[r] += float(dot(r)) for r < n, then out = RMSNorm(residual) * gamma.
template <typename W>
int gemv_norm(const W& wv, const minmo_bf16* x, float* residual, const minmo_bf16* gamma, minmo_bf16* out, int64_t n,
              float eps) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) residual[r] += static_cast<float>(wv.dot(x, r));
  minmo_cpu::rmsnorm_row_bf16(residual, gamma, out, n, eps);
  return MINMO_KERNEL_OK;
}

// Head h's values dot(h D + i) + bias, then the QKV epilogue at position *pos.
template <typename W>
int gemv_qkv_rope(const W& wv, const minmo_bf16* x, const minmo_bf16* bias, const int32_t* pos, minmo_bf16* q_out,
                  minmo_bf16* k_cache, minmo_bf16* v_cache, int64_t heads_q, int64_t heads_kv, int64_t head_dim,
                  int64_t max_seq, float theta) {
  const int64_t D = head_dim, heads = heads_q + 2 * heads_kv, p = *pos;
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < heads; ++h) {
    std::vector<double> v(static_cast<size_t>(D));
    for (int64_t i = 0; i < D; ++i)
      v[i] = wv.dot(x, h * D + i) + (bias ? minmo_cpu::bf16_to_f32(bias[h * D + i]) : 0.f);
    minmo_cpu::qkv_store_head(v.data(), h, p, q_out, k_cache, v_cache, heads_q, heads_kv, D, max_seq, theta);
  }
  return MINMO_KERNEL_OK;
}

}  // namespace

#define MINMO_NORM_CHECK(X, W) if (!minmo_args::gemv_norm_ok(X, W, residual, gamma, out, n, k)) return MINMO_KERNEL_INVALID_ARGUMENT
#define MINMO_QKV_CHECK(X, W)                                                                                 \
  if (!minmo_args::gemv_qkv_ok(X, W, pos, q_out, k_cache, v_cache, heads_q, heads_kv, head_dim, max_seq, k, theta)) \
  return MINMO_KERNEL_INVALID_ARGUMENT

extern "C" {

int minmo_gemv_norm_bf16_cpu(const minmo_bf16* x, const minmo_bf16* w, float* residual, const minmo_bf16* gamma,
                             minmo_bf16* out, uint32_t* /*counter*/, int64_t n, int64_t k, float eps) {
  MINMO_NORM_CHECK(x, w);
  return gemv_norm(minmo_cpu::Bf16W{w, k}, x, residual, gamma, out, n, eps);
}
int minmo_gemv_norm_int8_cpu(const minmo_bf16* x, const int8_t* w, const float* scale, float* residual,
                             const minmo_bf16* gamma, minmo_bf16* out, uint32_t* /*counter*/, int64_t n, int64_t k,
                             float eps) {
  MINMO_NORM_CHECK(x, w);
  if (!scale) return MINMO_KERNEL_INVALID_ARGUMENT;
  return gemv_norm(minmo_cpu::Int8W{w, scale, k}, x, residual, gamma, out, n, eps);
}
int minmo_gemv_norm_int4_cpu(const minmo_bf16* x, const uint8_t* w, const minmo_bf16* scale, const uint8_t* zero,
                             float* residual, const minmo_bf16* gamma, minmo_bf16* out, uint32_t* /*counter*/,
                             int64_t n, int64_t k, int64_t group_size, float eps) {
  MINMO_NORM_CHECK(x, w);
  if (!scale || !minmo_args::int4_ok(k, group_size)) return MINMO_KERNEL_INVALID_ARGUMENT;
  return gemv_norm(minmo_cpu::Int4W{w, scale, zero, k, group_size}, x, residual, gamma, out, n, eps);
}
int minmo_gemv_norm_fp8_cpu(const minmo_bf16* x, const uint8_t* w, const float* scale, float* residual,
                            const minmo_bf16* gamma, minmo_bf16* out, uint32_t* /*counter*/, int64_t n, int64_t k,
                            float eps) {
  MINMO_NORM_CHECK(x, w);
  if (!scale) return MINMO_KERNEL_INVALID_ARGUMENT;
  return gemv_norm(minmo_cpu::Fp8W{w, scale, k}, x, residual, gamma, out, n, eps);
}

int minmo_gemv_qkv_rope_bf16_cpu(const minmo_bf16* x, const minmo_bf16* w, const minmo_bf16* bias, const int32_t* pos,
                                 minmo_bf16* q_out, minmo_bf16* k_cache, minmo_bf16* v_cache, int64_t heads_q,
                                 int64_t heads_kv, int64_t head_dim, int64_t max_seq, int64_t k, float theta) {
  MINMO_QKV_CHECK(x, w);
  return gemv_qkv_rope(minmo_cpu::Bf16W{w, k}, x, bias, pos, q_out, k_cache, v_cache, heads_q, heads_kv, head_dim,
                       max_seq, theta);
}
int minmo_gemv_qkv_rope_int8_cpu(const minmo_bf16* x, const int8_t* w, const float* scale, const minmo_bf16* bias,
                                 const int32_t* pos, minmo_bf16* q_out, minmo_bf16* k_cache, minmo_bf16* v_cache,
                                 int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq, int64_t k,
                                 float theta) {
  MINMO_QKV_CHECK(x, w);
  if (!scale) return MINMO_KERNEL_INVALID_ARGUMENT;
  return gemv_qkv_rope(minmo_cpu::Int8W{w, scale, k}, x, bias, pos, q_out, k_cache, v_cache, heads_q, heads_kv,
                       head_dim, max_seq, theta);
}
int minmo_gemv_qkv_rope_int4_cpu(const minmo_bf16* x, const uint8_t* w, const minmo_bf16* scale, const uint8_t* zero,
                                 const minmo_bf16* bias, const int32_t* pos, minmo_bf16* q_out, minmo_bf16* k_cache,
                                 minmo_bf16* v_cache, int64_t heads_q, int64_t heads_kv, int64_t head_dim,
                                 int64_t max_seq, int64_t k, int64_t group_size, float theta) {
  MINMO_QKV_CHECK(x, w);
  if (!scale || !minmo_args::int4_ok(k, group_size)) return MINMO_KERNEL_INVALID_ARGUMENT;
  return gemv_qkv_rope(minmo_cpu::Int4W{w, scale, zero, k, group_size}, x, bias, pos, q_out, k_cache, v_cache,
                       heads_q, heads_kv, head_dim, max_seq, theta);
}
int minmo_gemv_qkv_rope_fp8_cpu(const minmo_bf16* x, const uint8_t* w, const float* scale, const minmo_bf16* bias,
                                const int32_t* pos, minmo_bf16* q_out, minmo_bf16* k_cache, minmo_bf16* v_cache,
                                int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq, int64_t k,
                                float theta) {
  MINMO_QKV_CHECK(x, w);
  if (!scale) return MINMO_KERNEL_INVALID_ARGUMENT;
  return gemv_qkv_rope(minmo_cpu::Fp8W{w, scale, k}, x, bias, pos, q_out, k_cache, v_cache, heads_q, heads_kv,
                       head_dim, max_seq, theta);
}

}  // extern "C"
