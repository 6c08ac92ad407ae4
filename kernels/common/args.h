// Argument checks shared by the CUDA launch functions and their CPU twins (internal header), so
// both reject exactly the same calls.
#ifndef MINMO_KERNELS_COMMON_ARGS_H_
#define MINMO_KERNELS_COMMON_ARGS_H_

#include <cstdint>

#include "minmo_kernels.h"

namespace minmo_args {

// [a, a + na) and [b, b + nb) (in bytes) overlap.
inline bool overlap(const void* a, int64_t na, const void* b, int64_t nb) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return a && b && pa < pb + static_cast<uintptr_t>(nb) && pb < pa + static_cast<uintptr_t>(na);
}

inline bool gemv_ok(const void* x, const void* w, const void* y, int64_t batch, int64_t n, int64_t k) {
  return x && w && y && batch >= 1 && batch <= MINMO_GEMV_MAX_BATCH && n >= 1 && k >= 1 && n < (int64_t{1} << 30) &&
         k < (int64_t{1} << 31) &&
         !overlap(x, batch * k * 2, y, batch * n * 2);
}

inline bool int4_ok(int64_t k, int64_t group_size) {
  return group_size >= 32 && group_size % 32 == 0 && k % group_size == 0;
}

// Head dims of the attention kernels: 32, 64, 128, 192, 256.
inline bool head_dim_ok(int64_t head_dim) {
  return head_dim == 32 || (head_dim >= 64 && head_dim <= 256 && head_dim % 64 == 0);
}

// Shapes common to the attention kernels.
inline bool attention_ok(int64_t tokens, int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq) {
  return tokens >= 1 && heads_kv >= 1 && heads_q >= heads_kv && heads_q % heads_kv == 0 &&
         heads_q / heads_kv <= 32 && head_dim_ok(head_dim) && max_seq >= 1 &&
         max_seq <= (int64_t{1} << 30) && tokens <= (int64_t{1} << 30) && heads_q <= 65535;
}

inline int64_t decode_splits(int64_t max_seq, int64_t split_size) { return (max_seq + split_size - 1) / split_size; }

// minmo_decode_attention_fused_bf16: dynamic shared memory bytes (K tile of 32 rows padded by 16
// bytes, V tile, the group's q rows); with the kernel's 16 static bytes it must fit the 48 KiB a
// kernel gets without opting in.
inline int64_t decode_fused_smem(int64_t heads_q, int64_t heads_kv, int64_t head_dim) {
  return 64 * (2 * head_dim + 8) + (heads_q / heads_kv) * head_dim * 2;
}
inline bool decode_fused_ok(int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq,
                            int64_t max_splits) {
  return attention_ok(1, heads_q, heads_kv, head_dim, max_seq) && max_splits >= 1 && max_splits <= (1 << 20) &&
         decode_fused_smem(heads_q, heads_kv, head_dim) + 16 <= 48 * 1024;
}

// Fused products (minmo_kernels/fused.h): batch 1, N and K as for the plain products.
inline bool gemv1_ok(const void* x, const void* w, int64_t n, int64_t k) {
  return x && w && n >= 1 && k >= 1 && n < (int64_t{1} << 30) && k < (int64_t{1} << 31);
}
inline bool gemv_norm_ok(const void* x, const void* w, const float* residual, const void* gamma, const void* out,
                         int64_t n, int64_t k) {
  return gemv1_ok(x, w, n, k) && residual && gamma && out && !overlap(out, n * 2, x, k * 2) &&
         !overlap(out, n * 2, residual, n * 4) && !overlap(residual, n * 4, x, k * 2);
}
inline bool gemv_qkv_ok(const void* x, const void* w, const void* pos, const void* q_out, const void* k_cache,
                        const void* v_cache, int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq,
                        int64_t k, float theta) {
  return attention_ok(1, heads_q, heads_kv, head_dim, max_seq) &&
         gemv1_ok(x, w, (heads_q + 2 * heads_kv) * head_dim, k) && pos && q_out && k_cache && v_cache && theta > 0 &&
         !overlap(q_out, heads_q * head_dim * 2, x, k * 2);
}

}  // namespace minmo_args

#endif  // MINMO_KERNELS_COMMON_ARGS_H_
