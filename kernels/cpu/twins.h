// Pieces shared between CPU twins (internal header): per-format weight rows in fp64, the QKV
// epilogue of one head, the RMSNorm of a residual row.
#ifndef MINMO_KERNELS_CPU_TWINS_H_
#define MINMO_KERNELS_CPU_TWINS_H_

#include <cstdint>

#include "cpu_util.h"
#include "minmo_kernels.h"

namespace minmo_cpu {

// A weight [N, K] in one of the formats of minmo_kernels/gemv.h: dot(x, r) = sum_k x[k] w(r, k) in fp64.
struct Bf16W {
  const minmo_bf16* w;
  int64_t k;
  double dot(const minmo_bf16* x, int64_t r) const {
    double acc = 0;
    for (int64_t i = 0; i < k; ++i) acc += double(bf16_to_f32(x[i])) * bf16_to_f32(w[r * k + i]);
    return acc;
  }
};

struct Int8W {
  const int8_t* w;
  const float* scale;
  int64_t k;
  double dot(const minmo_bf16* x, int64_t r) const {
    double acc = 0;
    for (int64_t i = 0; i < k; ++i) acc += double(bf16_to_f32(x[i])) * w[r * k + i];
    return acc * scale[r];
  }
};

struct Int4W {
  const uint8_t* w;
  const minmo_bf16* scale;
  const uint8_t* zero;  // null: symmetric (zero point 8)
  int64_t k, group_size;
  double dot(const minmo_bf16* x, int64_t r) const {
    const int64_t groups = k / group_size;
    double acc = 0;
    for (int64_t g = 0; g < groups; ++g) {
      const int z = zero ? zero[r * groups + g] : 8;
      double part = 0;
      for (int64_t i = g * group_size; i < (g + 1) * group_size; ++i) {
        const uint8_t byte = w[r * (k / 2) + i / 2];
        const int q = (i & 1) ? (byte >> 4) : (byte & 15);
        part += double(bf16_to_f32(x[i])) * (q - z);
      }
      acc += part * bf16_to_f32(scale[r * groups + g]);
    }
    return acc;
  }
};

struct Fp8W {
  const uint8_t* w;
  const float* scale;
  int64_t k;
  double dot(const minmo_bf16* x, int64_t r) const {
    double acc = 0;
    for (int64_t i = 0; i < k; ++i) acc += double(bf16_to_f32(x[i])) * e4m3_to_f32(w[r * k + i]);
    return acc * scale[r];
  }
};

// QKV epilogue of head h (0 <= h < Hq + 2 Hkv) of a token at cache position p, from its values
// v[0, D) with the bias added (minmo_qkv_rope_append_bf16): q heads are rotated into q_row
// (the token's [Hq, D] output), k heads rotated into k_cache and v heads copied into v_cache at p
// (only when 0 <= p < max_seq). Defined in attention.cc.
void qkv_store_head(const double* v, int64_t h, int64_t p, minmo_bf16* q_row, minmo_bf16* k_cache,
                    minmo_bf16* v_cache, int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq,
                    double theta);

// out[d] = bf16(r[d] * rsqrt(mean(r^2) + eps) * gamma[d]) for one row of `dim` values (fp64 mean).
// Defined in norm.cc.
void rmsnorm_row_bf16(const float* r, const minmo_bf16* gamma, minmo_bf16* out, int64_t dim, float eps);

}  // namespace minmo_cpu

#endif  // MINMO_KERNELS_CPU_TWINS_H_
