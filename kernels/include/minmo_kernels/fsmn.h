/* SAN-M FSMN memory block fused with the attention output (SenseVoice encoder layers).
 * See minmo_kernels.h for the conventions shared by every kernel. */
#ifndef MINMO_KERNELS_FSMN_H_
#define MINMO_KERNELS_FSMN_H_

#include "../minmo_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* For frames T and channels D, with c = chunk_frames and limit(t) = min((t / c + 1) * c, T)
 * (limit(t) = T when chunk_frames == 0, i.e. full attention):
 *   out[t, d] = attn[t, d] + v[t, d] + sum_{k < K, 0 <= s < limit(t)} weight[d, k] * v[s, d],
 *   with s = t - left_pad + k
 * which is export/reference/layers.py fsmn_memory (zero padding, SenseVoice sanm_shfit gives
 * left_pad = (K - 1) / 2 + shift) plus the attention output. attn may be null (memory only).
 * v, attn, out: [T, D]; weight: [D, K] (the Conv1d(groups=D) weight [D, 1, K]).
 * Requires 0 <= left_pad < K, chunk_frames >= 0; out must not alias v (it may alias attn). */
int minmo_fsmn_attn_f32(const float* v, const float* attn, const float* weight, float* out, int64_t frames,
                        int64_t dim, int64_t kernel, int64_t left_pad, int64_t chunk_frames, cudaStream_t stream);
int minmo_fsmn_attn_f32_cpu(const float* v, const float* attn, const float* weight, float* out, int64_t frames,
                            int64_t dim, int64_t kernel, int64_t left_pad, int64_t chunk_frames);

#ifdef __cplusplus
}
#endif

#endif /* MINMO_KERNELS_FSMN_H_ */
