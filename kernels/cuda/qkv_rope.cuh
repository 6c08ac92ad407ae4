// QKV epilogue of one element pair, shared by minmo_qkv_rope_append_bf16 (attention.cu) and the
// fused QKV product (gemv_fused.cu). Internal header.
#ifndef MINMO_KERNELS_CUDA_QKV_ROPE_CUH_
#define MINMO_KERNELS_CUDA_QKV_ROPE_CUH_

#include "cuda_util.cuh"

namespace minmo_cuda {

// Values a = v[i], b = v[i + D/2] (bias added) of head h (q heads, then k, then v) of a token at
// cache position p: q heads are rotated into q_row ([Hq, D], the token's q), k heads rotated and
// v heads copied into the caches ([Hkv, max_seq, D]) when 0 <= p < max_seq. Qwen2 rotate-half
// RoPE with angle p * theta^(-2i/D) (log2_theta = log2(theta); -inf: no rotation).
__device__ __forceinline__ void qkv_store_pair(float a, float b, int h, int i, int64_t p, __nv_bfloat16* q_row,
                                               __nv_bfloat16* kc, __nv_bfloat16* vc, int heads_q, int heads_kv,
                                               int head_dim, int64_t max_seq, float log2_theta) {
  const int half = head_dim / 2;
  __nv_bfloat16* dst;
  if (h < heads_q) {
    dst = q_row + static_cast<int64_t>(h) * head_dim;
  } else if (p < 0 || p >= max_seq) {
    return;
  } else if (h < heads_q + heads_kv) {
    dst = kc + (static_cast<int64_t>(h - heads_q) * max_seq + p) * head_dim;
  } else {
    dst = vc + (static_cast<int64_t>(h - heads_q - heads_kv) * max_seq + p) * head_dim;
    dst[i] = __float2bfloat16_rn(a);
    dst[i + half] = __float2bfloat16_rn(b);
    return;
  }
  if (isinf(log2_theta)) {  // theta == 0: no RoPE
    dst[i] = __float2bfloat16_rn(a);
    dst[i + half] = __float2bfloat16_rn(b);
    return;
  }
  const float inv_freq = exp2f(-2.f * static_cast<float>(i) / static_cast<float>(head_dim) * log2_theta);
  float sn, cs;
  sincosf(static_cast<float>(p) * inv_freq, &sn, &cs);
  dst[i] = __float2bfloat16_rn(a * cs - b * sn);
  dst[i + half] = __float2bfloat16_rn(b * cs + a * sn);
}

}  // namespace minmo_cuda

#endif  // MINMO_KERNELS_CUDA_QKV_ROPE_CUH_
