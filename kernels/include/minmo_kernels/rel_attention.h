/* CosyVoice2 flow encoder (export/reference/flow.py UpsampleConformerEncoder) in fp32 around a GEMM:
 * ESPnet relative-position self-attention over a segment-aware key cache, the relative position
 * encoding, strided LayerNorm / SiLU, token embedding rows and the nearest-upsampling row repeat.
 * Activations are time-major [rows, channels] with a row stride (ld) so that a product's input can
 * carry a column of ones for the bias. See minmo_kernels.h for the shared conventions. */
#ifndef MINMO_KERNELS_REL_ATTENTION_H_
#define MINMO_KERNELS_REL_ATTENTION_H_

#include "../minmo_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest head dim of minmo_rel_attention_f32. */
#define MINMO_REL_ATTN_MAX_HEAD_DIM 128

/* Transformer-XL / ESPnet relative-position attention of `rows` queries over `keys` cached keys,
 * H = heads, D = head_dim, for query i, head h, key j (row r_j = key_rows[j] of the cache):
 *   s(i, j) = scale * ((q[i, h] + bias_u[h]) . k[r_j, h] + (q[i, h] + bias_v[h]) . p[key_pe[j] + i, h])
 *   out[i, h] = sum_j softmax_j(s(i, j)) v[r_j, h]
 * where x[r, h] is the D values at x + r * ld + h * D. p holds W_pos pe(distance) rows (see
 * minmo_rel_pos_enc_f32): key_pe[j] + i must be the row of distance (position of query i) -
 * (position of key j). Every key in the list is attended (the list is the segment mask).
 * q: [rows, ldq]; k, v: [*, ldkv]; key_rows, key_pe: int32 [keys] (device); p: [*, ldp];
 * bias_u, bias_v: [H D]; out: [rows, ldo] (columns H D .. ldo - 1 are not written).
 * fp32 with an online softmax (fp64 in the twin). INVALID_ARGUMENT on null pointers, non-positive
 * sizes, head_dim > MINMO_REL_ATTN_MAX_HEAD_DIM, a stride < H D, or out overlapping an input
 * (rows of q, k and v may interleave in one buffer). */
int minmo_rel_attention_f32(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv,
                            const int32_t* key_rows, const int32_t* key_pe, int64_t keys, const float* p, int64_t ldp,
                            const float* bias_u, const float* bias_v, float* out, int64_t ldo, int64_t rows,
                            int32_t heads, int32_t head_dim, float scale, cudaStream_t stream);
int minmo_rel_attention_f32_cpu(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv,
                                const int32_t* key_rows, const int32_t* key_pe, int64_t keys, const float* p,
                                int64_t ldp, const float* bias_u, const float* bias_v, float* out, int64_t ldo,
                                int64_t rows, int32_t heads, int32_t head_dim, float scale);

/* ESPnet relative position encoding of `count` distances (fp64, rounded once):
 *   pe[i, 2 c] = sin(dist[i] w_c),  pe[i, 2 c + 1] = cos(dist[i] w_c),  w_c = exp(-2 c ln(10000) / dim)
 * dist: int32 [count] (device); pe: [count, dim], dim even. */
int minmo_rel_pos_enc_f32(const int32_t* dist, int64_t count, int64_t dim, float* pe, cudaStream_t stream);
int minmo_rel_pos_enc_f32_cpu(const int32_t* dist, int64_t count, int64_t dim, float* pe);

/* LayerNorm with bias (biased variance, two passes over the row), then a scale:
 *   out[r, c] = scale * ((x[r, c] - mean) * rsqrt(var + eps) * gamma[c] + beta[c])   for c < dim
 * x: [rows, ldx], out: [rows, ldo] (columns >= dim not written). out may equal x (same ld);
 * otherwise they must not overlap. fp32 (fp64 in the twin). */
int minmo_layernorm_f32(const float* x, int64_t ldx, const float* gamma, const float* beta, float* out, int64_t ldo,
                        int64_t rows, int64_t dim, float eps, float scale, cudaStream_t stream);
int minmo_layernorm_f32_cpu(const float* x, int64_t ldx, const float* gamma, const float* beta, float* out,
                            int64_t ldo, int64_t rows, int64_t dim, float eps, float scale);

/* y[r, c] = y[r, c] / (1 + exp(-y[r, c])) for r < rows, c < n (row stride ld >= n), in place. */
int minmo_silu_rows_f32(float* y, int64_t rows, int64_t n, int64_t ld, cudaStream_t stream);
int minmo_silu_rows_f32_cpu(float* y, int64_t rows, int64_t n, int64_t ld);

/* Embedding rows: out[r, c] = table[ids[r], c] for c < dim, r < rows (row stride ldo >= dim);
 * an id outside [0, vocab) gives a row of NaN (callers check ids on the host). ids: int32 [rows]
 * (device); table: [vocab, dim]. */
int minmo_embedding_rows_f32(const float* table, const int32_t* ids, float* out, int64_t rows, int64_t vocab,
                             int64_t dim, int64_t ldo, cudaStream_t stream);
int minmo_embedding_rows_f32_cpu(const float* table, const int32_t* ids, float* out, int64_t rows, int64_t vocab,
                                 int64_t dim, int64_t ldo);

/* Nearest upsampling by `repeat` of [ctx; x] (ctx: [ctx_rows, dim], may be null when ctx_rows = 0;
 * x: [rows, dim]): out[repeat * r + t] = row r of [ctx; x] for t < repeat; out: [repeat (ctx_rows +
 * rows), dim], not overlapping ctx or x. */
int minmo_repeat_rows_f32(const float* ctx, int64_t ctx_rows, const float* x, int64_t rows, int64_t dim,
                          int32_t repeat, float* out, cudaStream_t stream);
int minmo_repeat_rows_f32_cpu(const float* ctx, int64_t ctx_rows, const float* x, int64_t rows, int64_t dim,
                              int32_t repeat, float* out);

#ifdef __cplusplus
}
#endif

#endif /* MINMO_KERNELS_REL_ATTENTION_H_ */
