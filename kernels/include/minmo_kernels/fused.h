/* Fused decode-step products (batch 1): a weight-only product whose epilogue does the work of the
 * small kernel that used to follow it, so a Qwen2 decoder layer takes 5 launches instead of 8.
 * See minmo_kernels.h for the shared conventions and minmo_kernels/gemv.h for the weight formats
 * (bf16, int8 per-channel, int4 group-wise, fp8 e4m3 on sm_89+) and their argument layouts; the
 * format arguments (w [, scale [, zero]]) and group_size (int4) mean the same here.
 *
 * x: bf16 [K] (one token). The products accumulate in fp32 (fp64 in the CPU twins) and are not
 * rounded to bf16 before the epilogue. */
#ifndef MINMO_KERNELS_FUSED_H_
#define MINMO_KERNELS_FUSED_H_

#include "../minmo_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Product + residual add + RMSNorm (o-proj -> post-attention norm; down-proj -> the next layer's
 * input norm, or the final norm after the last layer):
 *   residual[n] += sum_k x[k] w(n, k)                      for n < N  (fp32, in place)
 *   out[n]       = bf16(residual[n] * rsqrt(mean(residual^2) + eps) * gamma[n])
 * residual: fp32 [N]; gamma, out: bf16 [N]; out must not overlap x or residual.
 * counter: DEVICE uint32, zero before the first call; the last thread block to finish its rows
 * does the norm and sets it back to zero, so a captured CUDA graph replays. Calls that may run at
 * the same time (different streams) need different counters; calls in one stream may share one.
 * The CPU twins ignore counter (may be null). */
int minmo_gemv_norm_bf16(const minmo_bf16* x, const minmo_bf16* w, float* residual, const minmo_bf16* gamma,
                         minmo_bf16* out, uint32_t* counter, int64_t n, int64_t k, float eps, cudaStream_t stream);
int minmo_gemv_norm_bf16_cpu(const minmo_bf16* x, const minmo_bf16* w, float* residual, const minmo_bf16* gamma,
                             minmo_bf16* out, uint32_t* counter, int64_t n, int64_t k, float eps);
int minmo_gemv_norm_int8(const minmo_bf16* x, const int8_t* w, const float* scale, float* residual,
                         const minmo_bf16* gamma, minmo_bf16* out, uint32_t* counter, int64_t n, int64_t k, float eps,
                         cudaStream_t stream);
int minmo_gemv_norm_int8_cpu(const minmo_bf16* x, const int8_t* w, const float* scale, float* residual,
                             const minmo_bf16* gamma, minmo_bf16* out, uint32_t* counter, int64_t n, int64_t k,
                             float eps);
int minmo_gemv_norm_int4(const minmo_bf16* x, const uint8_t* w, const minmo_bf16* scale, const uint8_t* zero,
                         float* residual, const minmo_bf16* gamma, minmo_bf16* out, uint32_t* counter, int64_t n,
                         int64_t k, int64_t group_size, float eps, cudaStream_t stream);
int minmo_gemv_norm_int4_cpu(const minmo_bf16* x, const uint8_t* w, const minmo_bf16* scale, const uint8_t* zero,
                             float* residual, const minmo_bf16* gamma, minmo_bf16* out, uint32_t* counter, int64_t n,
                             int64_t k, int64_t group_size, float eps);
int minmo_gemv_norm_fp8(const minmo_bf16* x, const uint8_t* w, const float* scale, float* residual,
                        const minmo_bf16* gamma, minmo_bf16* out, uint32_t* counter, int64_t n, int64_t k, float eps,
                        cudaStream_t stream);
int minmo_gemv_norm_fp8_cpu(const minmo_bf16* x, const uint8_t* w, const float* scale, float* residual,
                            const minmo_bf16* gamma, minmo_bf16* out, uint32_t* counter, int64_t n, int64_t k,
                            float eps);

/* Fused q|k|v product + bias + RoPE + KV-cache append for one token at position p = *pos (pos: a
 * DEVICE int32, host for the twins). W: [(Hq + 2 Hkv) D, K] (q rows, then k rows, then v rows), bias:
 * bf16 [(Hq + 2 Hkv) D] or null. With v = sum_k x[k] w(., k) + bias (fp32), the result is that of
 * minmo_qkv_rope_append_bf16 (attention.h) for T = 1 applied to v: q_out: bf16 [Hq, D] gets the
 * rotated q heads, k_cache / v_cache: bf16 [Hkv, max_seq, D] get the rotated k and the v heads at
 * position p when 0 <= p < max_seq. Shapes as in attention.h (GQA, D in 32, 64, 128, 192, 256). */
int minmo_gemv_qkv_rope_bf16(const minmo_bf16* x, const minmo_bf16* w, const minmo_bf16* bias, const int32_t* pos,
                             minmo_bf16* q_out, minmo_bf16* k_cache, minmo_bf16* v_cache, int64_t heads_q,
                             int64_t heads_kv, int64_t head_dim, int64_t max_seq, int64_t k, float theta,
                             cudaStream_t stream);
int minmo_gemv_qkv_rope_bf16_cpu(const minmo_bf16* x, const minmo_bf16* w, const minmo_bf16* bias, const int32_t* pos,
                                 minmo_bf16* q_out, minmo_bf16* k_cache, minmo_bf16* v_cache, int64_t heads_q,
                                 int64_t heads_kv, int64_t head_dim, int64_t max_seq, int64_t k, float theta);
int minmo_gemv_qkv_rope_int8(const minmo_bf16* x, const int8_t* w, const float* scale, const minmo_bf16* bias,
                             const int32_t* pos, minmo_bf16* q_out, minmo_bf16* k_cache, minmo_bf16* v_cache,
                             int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq, int64_t k,
                             float theta, cudaStream_t stream);
int minmo_gemv_qkv_rope_int8_cpu(const minmo_bf16* x, const int8_t* w, const float* scale, const minmo_bf16* bias,
                                 const int32_t* pos, minmo_bf16* q_out, minmo_bf16* k_cache, minmo_bf16* v_cache,
                                 int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq, int64_t k,
                                 float theta);
int minmo_gemv_qkv_rope_int4(const minmo_bf16* x, const uint8_t* w, const minmo_bf16* scale, const uint8_t* zero,
                             const minmo_bf16* bias, const int32_t* pos, minmo_bf16* q_out, minmo_bf16* k_cache,
                             minmo_bf16* v_cache, int64_t heads_q, int64_t heads_kv, int64_t head_dim,
                             int64_t max_seq, int64_t k, int64_t group_size, float theta, cudaStream_t stream);
int minmo_gemv_qkv_rope_int4_cpu(const minmo_bf16* x, const uint8_t* w, const minmo_bf16* scale, const uint8_t* zero,
                                 const minmo_bf16* bias, const int32_t* pos, minmo_bf16* q_out, minmo_bf16* k_cache,
                                 minmo_bf16* v_cache, int64_t heads_q, int64_t heads_kv, int64_t head_dim,
                                 int64_t max_seq, int64_t k, int64_t group_size, float theta);
int minmo_gemv_qkv_rope_fp8(const minmo_bf16* x, const uint8_t* w, const float* scale, const minmo_bf16* bias,
                            const int32_t* pos, minmo_bf16* q_out, minmo_bf16* k_cache, minmo_bf16* v_cache,
                            int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq, int64_t k,
                            float theta, cudaStream_t stream);
int minmo_gemv_qkv_rope_fp8_cpu(const minmo_bf16* x, const uint8_t* w, const float* scale, const minmo_bf16* bias,
                                const int32_t* pos, minmo_bf16* q_out, minmo_bf16* k_cache, minmo_bf16* v_cache,
                                int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq, int64_t k,
                                float theta);

#ifdef __cplusplus
}
#endif

#endif /* MINMO_KERNELS_FUSED_H_ */
