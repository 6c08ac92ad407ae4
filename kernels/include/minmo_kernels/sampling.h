/* On-device token sampling for the voice decoder (CosyVoice2-style): top-k / top-p nucleus
 * sampling, repetition-aware sampling (RAS), forbidden and forced tokens, driven by a
 * counter-based Philox4x32-10 generator so that the CUDA kernel and its CPU twin draw the same
 * uniforms. See minmo_kernels.h for the conventions shared by every kernel. */
#ifndef MINMO_KERNELS_SAMPLING_H_
#define MINMO_KERNELS_SAMPLING_H_

#include "../minmo_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MINMO_SAMPLING_MAX_TOP_K 64
#define MINMO_SAMPLING_MAX_VOCAB 262144 /* forbidden-token bitmask lives in shared memory */
#define MINMO_SAMPLING_THREADS 1024     /* CUDA block size; the twin reproduces its summation order */

typedef struct minmo_sampling_params {
  int32_t top_k;      /* 1 .. MINMO_SAMPLING_MAX_TOP_K (CosyVoice2: 25) */
  float top_p;        /* (0, 1] (CosyVoice2: 0.8) */
  float temperature;  /* > 0; logits are divided by it (1: CosyVoice2) */
  int32_t ras_window; /* RAS window over the most recent history tokens (10); 0 disables RAS */
  float ras_tau;      /* RAS threshold fraction (0.1) */
  int32_t force_id;   /* >= 0: emit this token without sampling (e.g. a fill id); < 0: sample */
  uint64_t seed;      /* Philox key */
  uint64_t counter;   /* Philox counter: use a fresh value per step (e.g. the step index) */
} minmo_sampling_params;

/* Samples one token from logits[vocab]. Tokens listed in forbid[n_forbid] get probability 0;
 * NaN logits count as -inf. With p = softmax(logits / temperature) over the allowed tokens and
 * (u0, u1) = the first two uniforms of Philox4x32-10(key = seed, counter = counter):
 *   1. nucleus: candidates in descending p (ties: lower id first), taken while the running sum
 *      of p is < top_p and fewer than top_k are taken (at least one); the token is the first
 *      candidate whose cumulative p exceeds u0 * (sum of the candidates' p);
 *   2. RAS: if that token occurs c times in the last ras_window entries of history[n_history]
 *      and c >= ras_window * ras_tau (float arithmetic; CosyVoice2 ras_sampling), the token is
 *      redrawn from the whole distribution: the first id whose cumulative p exceeds u1 * sum(p).
 * *token_out receives the id (int32), or -1 when no token is allowed (all forbidden / -inf).
 * history and forbid may be null when their count is 0; ids outside [0, vocab) in forbid are
 * ignored. All pointers are device pointers for the CUDA kernel. The twins give the same token
 * for the same (seed, counter): exp is minmo_exp_det (explicit fmaf, no library exp), and the twin
 * sums in the kernel's order (strided per-thread partials, warp butterflies; segmented scan over
 * MINMO_SAMPLING_THREADS contiguous slices for the fallback draw), so every float is identical. */
int minmo_sample_ras_f32(const float* logits, int64_t vocab, const int32_t* history, int64_t n_history,
                         const int32_t* forbid, int64_t n_forbid, minmo_sampling_params params, int32_t* token_out,
                         cudaStream_t stream);
int minmo_sample_ras_f32_cpu(const float* logits, int64_t vocab, const int32_t* history, int64_t n_history,
                             const int32_t* forbid, int64_t n_forbid, minmo_sampling_params params, int32_t* token_out);

/* The four 32-bit words of Philox4x32-10 for (key = seed, counter = (counter, 0)) and their
 * uniforms in [0, 1): (word >> 8) * 2^-24. Host helper for tests and callers. */
void minmo_philox4x32_cpu(uint64_t seed, uint64_t counter, uint32_t words[4], float uniforms[4]);

#ifdef __cplusplus
}
#endif

/* Shared by the CUDA kernel and the CPU twin. */
#include <math.h>

#ifdef __CUDACC__
#define MINMO_HD __host__ __device__ __forceinline__
#else
#define MINMO_HD static inline
#endif

MINMO_HD void minmo_philox4x32_10(uint64_t seed, uint64_t counter, uint32_t out[4]) {
  uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0u, c3 = 0u;
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
    const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c1 = (uint32_t)p1;
    c3 = (uint32_t)p0;
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

MINMO_HD float minmo_uniform24(uint32_t word) { return (float)(word >> 8) * (1.0f / 16777216.0f); }

/* 2^k as a float for -126 <= k <= 127. */
MINMO_HD float minmo_pow2i(int k) {
  union {
    uint32_t u;
    float f;
  } v;
  v.u = (uint32_t)(k + 127) << 23;
  return v.f;
}

/* exp(x) for x <= 0 (the sampler's logit - max), bit-identical on host and device: Cody-Waite
 * reduction x = n ln2 + r, degree-7 Taylor polynomial in r by explicit fmaf (correctly rounded on
 * both sides, so no contraction or library differences), times 2^n. Relative error ~2e-7;
 * returns 0 below -104 and for -inf / NaN. */
MINMO_HD float minmo_exp_det(float x) {
  if (!(x > -104.0f)) return 0.0f;
  const float n = rintf(x * 1.44269504f);
  float r = fmaf(-n, 0.693145752f, x); /* ln2 split: hi has 16 significant bits */
  r = fmaf(-n, 1.42860677e-06f, r);
  float p = 1.98412698e-04f; /* 1/5040 */
  p = fmaf(p, r, 1.38888889e-03f);
  p = fmaf(p, r, 8.33333333e-03f);
  p = fmaf(p, r, 4.16666667e-02f);
  p = fmaf(p, r, 1.66666667e-01f);
  p = fmaf(p, r, 0.5f);
  p = fmaf(p, r, 1.0f);
  p = fmaf(p, r, 1.0f);
  const int k = (int)n;
  return k >= -126 ? p * minmo_pow2i(k) : (p * minmo_pow2i(k + 126)) * minmo_pow2i(-126);
}

#endif /* MINMO_KERNELS_SAMPLING_H_ */
