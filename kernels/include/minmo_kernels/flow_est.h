/* The CosyVoice2 flow estimator (ConditionalDecoder U-Net, export/reference/flow.py) in fp32 around a
 * GEMM, both guidance branches as one batch of 2 row blocks: causal-conv im2col with carried
 * context, LayerNorm (+ Mish, + row add) with the residual-bias trick, attention over a K/V cache
 * that the same launch appends to, cache compaction, GELU and a strided row copy. Tensors are
 * time-major [rows, channels]; "batch" row blocks of n rows each. See minmo_kernels.h for the shared
 * conventions. */
#ifndef MINMO_KERNELS_FLOW_EST_H_
#define MINMO_KERNELS_FLOW_EST_H_

#include "../minmo_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest head dim of minmo_flow_attention_f32. */
#define MINMO_FLOW_MAX_HEAD_DIM 256

/* im2col of a causal Conv1d(C -> *, kernel k) whose k - 1 previous input rows are carried: per batch
 * block b, the sequence s = [ctx[b] (k - 1 rows); x[b] (n rows)] and, for t < n, c < C, j < k:
 *   out[b n + t, c k + j] = s[t + j, c];  out[b n + t, C k] = 1 and the rest of the row 0 (ld > C k)
 *   ctx_next[b, r, c] = s[n + r, c]  for r < k - 1     (the context of the next call)
 * x: [batch n, C]; ctx, ctx_next: [batch, k - 1, C] (unused for k == 1, may then be null); out:
 * [batch n, ld]. So conv(x) + bias = out @ [W.view(C_out, C k) | b | 0]^T. INVALID_ARGUMENT on null
 * pointers, non-positive sizes, ld < C k, or any overlap between out / ctx_next and the inputs. */
int minmo_flow_causal_im2col_f32(const float* x, const float* ctx, float* ctx_next, float* out, int64_t batch,
                                 int64_t n, int64_t channels, int32_t kernel, int64_t ld, cudaStream_t stream);
int minmo_flow_causal_im2col_f32_cpu(const float* x, const float* ctx, float* ctx_next, float* out, int64_t batch,
                                     int64_t n, int64_t channels, int32_t kernel, int64_t ld);

/* Activations of minmo_flow_norm_act_f32. */
enum { MINMO_FLOW_ACT_NONE = 0, MINMO_FLOW_ACT_MISH = 1 };

/* Per row m of x [rows, C] (nn.LayerNorm: biased variance, eps):
 *   y = act((x[m] - mean) * rsqrt(var + eps) * gamma + beta) + add       (add [C] or null)
 *   out[m, c] = y[c];  out[m, C] = 1 and the rest of the row 0           (ld > C: a ones column)
 *   x[m] += post_bias                                 (post_bias [C] or null; after the read)
 * Mish(v) = v tanh(softplus(v)), softplus(v) = v for v > 20. post_bias adds a bias of the product
 * that will accumulate into x (beta = 1) ahead of it. out may equal x (in place) only when ld == C
 * and post_bias is null; otherwise no overlap. INVALID_ARGUMENT on null x / gamma / out, rows < 1,
 * C < 1, ld < C, or an unknown act. One block per row; fp32 (fp64 in the twin). */
int minmo_flow_norm_act_f32(float* x, const float* gamma, const float* beta, const float* post_bias, const float* add,
                            float* out, int64_t rows, int64_t channels, int64_t ld, float eps, int32_t act,
                            cudaStream_t stream);
int minmo_flow_norm_act_f32_cpu(float* x, const float* gamma, const float* beta, const float* post_bias,
                                const float* add, float* out, int64_t rows, int64_t channels, int64_t ld, float eps,
                                int32_t act);

/* Attention of n new rows per batch block over a cache plus themselves (no mask: the caller keeps
 * only the rows a segment may see), appending the new keys / values to the cache. With inner =
 * heads * head_dim, qkv: [batch n, 3 inner] (q | k | v of the new rows), k_cache, v_cache: [batch,
 * cap, inner] holding m0 = *rows rows each (a device value, so a captured graph replays at any
 * cache length):
 *   keys of block b = k_cache[b, 0 .. m0) then k[b n .. b n + n); values likewise
 *   out[b n + i, h hd .. (h + 1) hd) = softmax(scale q_h K_h^T) V_h
 *   k_cache[b, m0 + i] = k[b n + i], v_cache[b, m0 + i] = v[b n + i]
 * out: [batch n, inner]. Requires m0 + n <= cap (the CUDA kernel does nothing when it is not; the
 * twin returns INVALID_ARGUMENT). INVALID_ARGUMENT on null pointers, non-positive sizes, head_dim >
 * MINMO_FLOW_MAX_HEAD_DIM or out overlapping an input. One 4-warp block per (query row, head). */
int minmo_flow_attention_f32(const float* qkv, float* k_cache, float* v_cache, float* out, const int32_t* rows,
                             int64_t batch, int64_t n, int64_t heads, int64_t head_dim, int64_t cap, float scale,
                             cudaStream_t stream);
int minmo_flow_attention_f32_cpu(const float* qkv, float* k_cache, float* v_cache, float* out, const int32_t* rows,
                                 int64_t batch, int64_t n, int64_t heads, int64_t head_dim, int64_t cap,
                                 float scale);

/* Drops rows [first, last) of each of `count` caches (cache c: rows of `width` floats from
 * caches + c * stride), moving rows [last, rows) down to first. Requires 0 <= first <= last <= rows,
 * rows * width <= stride; INVALID_ARGUMENT otherwise or on null / non-positive sizes. */
int minmo_flow_kv_compact_f32(float* caches, int64_t count, int64_t stride, int64_t width, int64_t first,
                              int64_t last, int64_t rows, cudaStream_t stream);
int minmo_flow_kv_compact_f32_cpu(float* caches, int64_t count, int64_t stride, int64_t width, int64_t first,
                                  int64_t last, int64_t rows);

/* Exact GELU in place (torch nn.GELU(): v / 2 (1 + erf(v / sqrt 2))) over n values. */
int minmo_flow_gelu_f32(float* y, int64_t n, cudaStream_t stream);
int minmo_flow_gelu_f32_cpu(float* y, int64_t n);

/* dst[r * ldd + c] = src[(r % src_rows) * lds + c] for r < rows, c < cols (a strided copy that may
 * repeat the source rows: a concatenation's half, a row block broadcast to both branches, a cache
 * moved to a larger capacity). INVALID_ARGUMENT on null / non-positive sizes, cols > lds or ldd, or
 * overlap. */
int minmo_flow_copy_rows_f32(const float* src, int64_t lds, int64_t src_rows, float* dst, int64_t ldd, int64_t rows,
                             int64_t cols, cudaStream_t stream);
int minmo_flow_copy_rows_f32_cpu(const float* src, int64_t lds, int64_t src_rows, float* dst, int64_t ldd,
                                 int64_t rows, int64_t cols);

#ifdef __cplusplus
}
#endif

#endif /* MINMO_KERNELS_FLOW_EST_H_ */
