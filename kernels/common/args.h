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

// Shapes common to the attention kernels.
inline bool attention_ok(int64_t tokens, int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq) {
  return tokens >= 1 && heads_kv >= 1 && heads_q >= heads_kv && heads_q % heads_kv == 0 &&
         heads_q / heads_kv <= 32 && head_dim >= 64 && head_dim <= 256 && head_dim % 64 == 0 && max_seq >= 1 &&
         max_seq <= (int64_t{1} << 30) && tokens <= (int64_t{1} << 30) && heads_q <= 65535;
}

inline int64_t decode_splits(int64_t max_seq, int64_t split_size) { return (max_seq + split_size - 1) / split_size; }

}  // namespace minmo_args

#endif  // MINMO_KERNELS_COMMON_ARGS_H_
