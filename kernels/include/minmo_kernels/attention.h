/* Qwen2 attention for decode and chunked prefill over a bf16 KV cache, with grouped-query
 * attention (GQA). See minmo_kernels.h for the conventions shared by every kernel.
 *
 * Shapes: Hq query heads, Hkv key/value heads (Hq % Hkv == 0, Hq / Hkv <= 32), head dim D
 * (32, 64, 128, 192 or 256; other values are rejected). Query head h reads KV head h / (Hq / Hkv).
 * KV cache of one layer: k_cache, v_cache: bf16 [Hkv, max_seq, D] (position-major per head).
 * `pos` is a DEVICE pointer (host pointer for the CPU twins) to one int32: the cache position of
 * the first new token, so a captured CUDA graph can be replayed at any position. A token at
 * position p is written to the cache only when 0 <= p < max_seq and attends to cache positions
 * 0 .. min(p, max_seq - 1) (a query with no key gets zeros). The CUDA kernels need q, out, the
 * caches and the workspace 16-byte aligned (cudaMalloc / torch allocations are). */
#ifndef MINMO_KERNELS_ATTENTION_H_
#define MINMO_KERNELS_ATTENTION_H_

#include "../minmo_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* QKV epilogue for T new tokens at positions p = *pos + t (any head dim of the window attention):
 *   qkv: bf16 [T, (Hq + 2 Hkv) * D] (the fused q|k|v projection output), bias: bf16
 *   [(Hq + 2 Hkv) * D] or null. With v = float(qkv) + float(bias):
 *   q_out[t, h, :]          = bf16(rope(v[t, q head h], p))      q_out: bf16 [T, Hq, D]
 *   k_cache[h, p, :]        = bf16(rope(v[t, k head h], p))
 *   v_cache[h, p, :]        = bf16(v[t, v head h])
 * rope is Qwen2's rotate-half: for i < D/2, a = p * theta^(-2i/D) (fp32 on the GPU, fp64 in the twin),
 *   out[i] = x[i] cos a - x[i + D/2] sin a,  out[i + D/2] = x[i + D/2] cos a + x[i] sin a;
 * theta == 0: no rotation (rope(x, p) = x; attention without positions, the input projector's). */
int minmo_qkv_rope_append_bf16(const minmo_bf16* qkv, const minmo_bf16* bias, const int32_t* pos, minmo_bf16* q_out,
                               minmo_bf16* k_cache, minmo_bf16* v_cache, int64_t tokens, int64_t heads_q,
                               int64_t heads_kv, int64_t head_dim, int64_t max_seq, float theta,
                               cudaStream_t stream);
int minmo_qkv_rope_append_bf16_cpu(const minmo_bf16* qkv, const minmo_bf16* bias, const int32_t* pos,
                                   minmo_bf16* q_out, minmo_bf16* k_cache, minmo_bf16* v_cache, int64_t tokens,
                                   int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq,
                                   float theta);

/* Decode attention (one token at position p = *pos, batch 1), split-K over the sequence
 * (flash-decoding): keys 0..p are cut into chunks of split_size (a multiple of 32); one block per
 * (chunk, KV head) writes a partial max / sum / weighted V for each query head of its group into
 * `workspace`, and a second kernel combines the partials:
 *   out[h, :] = bf16( softmax_j(scale * q[h, :] . k_cache[h', j, :]) @ v_cache[h', j, :] ),  j <= p
 * q, out: bf16 [Hq, D]. workspace: fp32, at least minmo_decode_attention_workspace_floats(...)
 * elements (no allocation happens in the call). The CPU twin ignores split_size and workspace
 * (both may be 0 / null) and computes the exact softmax. */
int64_t minmo_decode_attention_workspace_floats(int64_t heads_q, int64_t head_dim, int64_t max_seq,
                                                int64_t split_size);
int minmo_decode_attention_bf16(const minmo_bf16* q, const minmo_bf16* k_cache, const minmo_bf16* v_cache,
                                const int32_t* pos, minmo_bf16* out, float* workspace, int64_t heads_q,
                                int64_t heads_kv, int64_t head_dim, int64_t max_seq, int64_t split_size, float scale,
                                cudaStream_t stream);
int minmo_decode_attention_bf16_cpu(const minmo_bf16* q, const minmo_bf16* k_cache, const minmo_bf16* v_cache,
                                    const int32_t* pos, minmo_bf16* out, float* workspace, int64_t heads_q,
                                    int64_t heads_kv, int64_t head_dim, int64_t max_seq, int64_t split_size,
                                    float scale);

/* The same decode attention in ONE launch: grid (max_splits, Hkv), one block per (split, KV head)
 * with one warp per query head of the group. The keys 0..p are cut into at most max_splits splits
 * of whole 32-key tiles, chosen on the device from *pos (a short context uses few blocks; a
 * context of at most 32 keys uses one block and no workspace); each block stages its tiles of K
 * and V in shared memory, and the last block of each KV head to finish combines the partials of
 * its query heads. workspace: fp32, at least minmo_decode_attention_fused_workspace_floats(Hq, D,
 * max_splits) elements, 16-byte aligned; counters: DEVICE uint32 [Hkv], zero before the first call
 * and left zero by every call (so a captured CUDA graph replays); calls that may run at the same
 * time need their own workspace and counters. max_splits >= 1; about 2 x SMs / Hkv suits long
 * contexts. Needs 64 (2 D + 8) + 2 G D + 16 bytes of shared memory <= 48 KiB (G = Hq / Hkv: every
 * shape but D = 256 with G >= 31). The CPU twin computes the exact softmax and ignores workspace,
 * counters and max_splits (workspace and counters may be null there). */
int64_t minmo_decode_attention_fused_workspace_floats(int64_t heads_q, int64_t head_dim, int64_t max_splits);
int minmo_decode_attention_fused_bf16(const minmo_bf16* q, const minmo_bf16* k_cache, const minmo_bf16* v_cache,
                                      const int32_t* pos, minmo_bf16* out, float* workspace, uint32_t* counters,
                                      int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq,
                                      int64_t max_splits, float scale, cudaStream_t stream);
int minmo_decode_attention_fused_bf16_cpu(const minmo_bf16* q, const minmo_bf16* k_cache, const minmo_bf16* v_cache,
                                          const int32_t* pos, minmo_bf16* out, float* workspace, uint32_t* counters,
                                          int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq,
                                          int64_t max_splits, float scale);

/* Chunked-prefill attention: T query tokens at positions p0 + t (p0 = *pos), whose keys and
 * values are already in the cache (minmo_qkv_rope_append_bf16); query t attends causally to cache
 * positions 0..p0 + t (earlier chunks and the causal part of this one):
 *   out[t, h, :] = bf16( softmax_{j <= p0 + t}(scale * q[t, h, :] . k[h', j, :]) @ v[h', j, :] )
 * q, out: bf16 [T, Hq, D]; out must not overlap q. */
int minmo_prefill_attention_bf16(const minmo_bf16* q, const minmo_bf16* k_cache, const minmo_bf16* v_cache,
                                 const int32_t* pos, minmo_bf16* out, int64_t tokens, int64_t heads_q,
                                 int64_t heads_kv, int64_t head_dim, int64_t max_seq, float scale,
                                 cudaStream_t stream);
int minmo_prefill_attention_bf16_cpu(const minmo_bf16* q, const minmo_bf16* k_cache, const minmo_bf16* v_cache,
                                     const int32_t* pos, minmo_bf16* out, int64_t tokens, int64_t heads_q,
                                     int64_t heads_kv, int64_t head_dim, int64_t max_seq, float scale);

/* Window (chunk) attention for the chunked streaming encoder and input projector (head dims: those
 * above and also 320, 384, 448, 512, as for minmo_qkv_rope_append_bf16): T query tokens of one chunk whose
 * keys and values are already in the cache at positions p0 .. p0 + T - 1 (p0 = *pos; written by
 * minmo_qkv_rope_append_bf16, RoPE at the absolute position). With w = *lo (a DEVICE pointer like
 * pos; host pointers for the twin), every query attends NON-causally to the keys
 *   j in [max(w, 0), min(p0 + T, max_seq))
 * (the chunk itself and the left chunks still in the cache):
 *   out[t, h, :] = bf16( softmax_j(scale * q[t, h, :] . k[h', j, :]) @ v[h', j, :] )
 * An empty range gives zeros. q, out: bf16 [T, Hq, D]; out must not overlap q. Same shapes,
 * alignment and GQA mapping as minmo_prefill_attention_bf16. */
int minmo_window_attention_bf16(const minmo_bf16* q, const minmo_bf16* k_cache, const minmo_bf16* v_cache,
                                const int32_t* pos, const int32_t* lo, minmo_bf16* out, int64_t tokens,
                                int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq, float scale,
                                cudaStream_t stream);
int minmo_window_attention_bf16_cpu(const minmo_bf16* q, const minmo_bf16* k_cache, const minmo_bf16* v_cache,
                                    const int32_t* pos, const int32_t* lo, minmo_bf16* out, int64_t tokens,
                                    int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq,
                                    float scale);

#ifdef __cplusplus
}
#endif

#endif /* MINMO_KERNELS_ATTENTION_H_ */
