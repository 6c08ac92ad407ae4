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

/* The voice LM's sampler as a step of a device loop (a replayed CUDA graph): the semantics of the
 * reference ras_sample (export/reference/voice_decoder.py, runtime modules/voice_lm.cc) with its
 * SplitMix64 generator, whose state lives in device memory and is advanced by the kernel.
 *
 * Over ids [0, n_allowed) of one logits row (bf16 or fp32), in fp64: mx = max logit,
 * p_i = exp(l_i - mx) / z with z = sum_i exp(l_i - mx); nucleus candidates = the top_k largest
 * logits (descending, ties: lower id), kept while cum < top_p (at least one), cum = their p sum;
 * u = uniform() * cum, token = the first kept id whose running p sum exceeds u (else the last kept).
 * RAS: when the token occurs >= win_size * tau_r (fp64) times in the last win_size history entries,
 * a second draw from all ids: u2 = uniform(), the first id whose running p sum exceeds u2 (else
 * n_allowed - 1). uniform() = (SplitMix64 next() >> 11) * 2^-53, so 1 or 2 draws per token.
 *
 * Loop state (device memory): state->rng (SplitMix64 state), state->n_history (tokens drawn so far);
 * history is a ring of history_cap >= win_size entries, entry j at history[j % history_cap]. The
 * kernel appends the token there, increments n_history, writes *token_out and, when pos is not
 * null, increments *pos (the position of the sampled row -> the position the token is fed at).
 * A non-finite logit among the allowed ids: token -1 (appended too), the generator not advanced.
 *
 * How close to the CPU ras_sample: exp is minmo_exp_det_f64 (explicit fma, relative error ~2e-16;
 * the CPU uses libm exp) and z is a block reduction (the CPU sums in id order; the redraw's running
 * sum is a segmented scan), so p and its running sums differ from the CPU's by a few fp64 ulps. The
 * uniforms, the candidates (exact float compares) and the RAS count are the CPU's, so the token is
 * identical unless u * cum, u2 or top_p lies within ~1e-15 relative of a cumulative-probability
 * boundary (tests/test_kernels_misc.py: none in over a thousand draws). The CPU twin reproduces the
 * kernel's order of every sum (strided per-thread partials, warp butterflies; segmented scan over
 * MINMO_SAMPLING_THREADS contiguous slices for the redraw) and its exp, so the two agree bit for bit. */
typedef struct minmo_ras_params {
  int32_t top_k;    /* 1 .. MINMO_SAMPLING_MAX_TOP_K (CosyVoice2: 25) */
  int32_t win_size; /* RAS window, >= 1 (10) */
  double top_p;     /* (0, 1] (0.8) */
  double tau_r;     /* >= 0 (0.1) */
} minmo_ras_params;

typedef struct minmo_ras_state {
  uint64_t rng;      /* SplitMix64 state (the reference generator's `state`) */
  int64_t n_history; /* tokens in the history ring (>= 0) */
} minmo_ras_state;

int minmo_sample_ras_loop_bf16(const minmo_bf16* logits, int64_t n_allowed, int32_t* history, int64_t history_cap,
                               minmo_ras_state* state, int32_t* pos, minmo_ras_params params, int32_t* token_out,
                               cudaStream_t stream);
int minmo_sample_ras_loop_bf16_cpu(const minmo_bf16* logits, int64_t n_allowed, int32_t* history,
                                   int64_t history_cap, minmo_ras_state* state, int32_t* pos,
                                   minmo_ras_params params, int32_t* token_out);
int minmo_sample_ras_loop_f32(const float* logits, int64_t n_allowed, int32_t* history, int64_t history_cap,
                              minmo_ras_state* state, int32_t* pos, minmo_ras_params params, int32_t* token_out,
                              cudaStream_t stream);
int minmo_sample_ras_loop_f32_cpu(const float* logits, int64_t n_allowed, int32_t* history, int64_t history_cap,
                                  minmo_ras_state* state, int32_t* pos, minmo_ras_params params, int32_t* token_out);

/* out[dim] = table[*id] (fp32 rows [rows, dim]); zeros when *id is outside [0, rows). The sampled
 * token's embedding as the next decode step's input, the id read on the device. */
int minmo_embedding_row_f32(const float* table, int64_t rows, int64_t dim, const int32_t* id, float* out,
                            cudaStream_t stream);
int minmo_embedding_row_f32_cpu(const float* table, int64_t rows, int64_t dim, const int32_t* id, float* out);

/* The four 32-bit words of Philox4x32-10 for (key = seed, counter = (counter, 0)) and their
 * uniforms in [0, 1): (word >> 8) * 2^-24. Host helper for tests and callers. */
void minmo_philox4x32_cpu(uint64_t seed, uint64_t counter, uint32_t words[4], float uniforms[4]);

#ifdef __cplusplus
}
#endif

/* Shared by the CUDA kernel and the CPU twin (MINMO_HD: minmo_kernels.h). */
#include <math.h>

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

/* SplitMix64 (modules/voice_lm.h SplitMix64, the reference's): advances *state, returns the output. */
MINMO_HD uint64_t minmo_splitmix64_next(uint64_t* state) {
  *state += 0x9E3779B97F4A7C15ull;
  uint64_t z = *state;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

MINMO_HD double minmo_splitmix64_uniform(uint64_t* state) {
  return (double)(minmo_splitmix64_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* exp(x) in fp64 for x <= 0, bit-identical on host and device: x = n ln2 + r (Cody-Waite, |r| <=
 * ln2 / 2), degree-13 Taylor polynomial in r by explicit fma, times 2^n. Relative error ~2e-16;
 * 0 below -745 and for -inf / NaN. */
MINMO_HD double minmo_exp_det_f64(double x) {
  if (!(x > -745.0)) return 0.0;
  const double n = rint(x * 1.4426950408889634);
  double r = fma(-n, 6.93147180369123816490e-01, x); /* ln2 hi (32 significant bits) */
  r = fma(-n, 1.90821492927058770002e-10, r);         /* ln2 lo */
  double p = 1.0 / 6227020800.0;                      /* 1/13! */
  p = fma(p, r, 1.0 / 479001600.0);
  p = fma(p, r, 1.0 / 39916800.0);
  p = fma(p, r, 1.0 / 3628800.0);
  p = fma(p, r, 1.0 / 362880.0);
  p = fma(p, r, 1.0 / 40320.0);
  p = fma(p, r, 1.0 / 5040.0);
  p = fma(p, r, 1.0 / 720.0);
  p = fma(p, r, 1.0 / 120.0);
  p = fma(p, r, 1.0 / 24.0);
  p = fma(p, r, 1.0 / 6.0);
  p = fma(p, r, 0.5);
  p = fma(p, r, 1.0);
  p = fma(p, r, 1.0);
  int k = (int)n;
  union {
    uint64_t u;
    double f;
  } v;
  if (k >= -1022) {
    v.u = (uint64_t)(k + 1023) << 52;
    return p * v.f;
  }
  v.u = (uint64_t)(k + 1022 + 1023) << 52; /* subnormal result: two exact-power steps */
  const double hi = p * v.f;
  v.u = (uint64_t)(-1022 + 1023) << 52;
  return hi * v.f;
}

/* Steps of minmo_sample_ras_loop_* shared by the kernel (one thread) and its twin. The nucleus draw
 * over the candidates' logits cl[n_cand] (descending): p_j = exp(cl_j - mx) / z kept while
 * cum < top_p; one uniform; the index of the drawn candidate. */
MINMO_HD int minmo_ras_nucleus(const float* cl, int n_cand, double mx, double z, double top_p, uint64_t* rng) {
  double prob[MINMO_SAMPLING_MAX_TOP_K];
  double cum = 0.0;
  int kept = 0;
  while (kept < n_cand && cum < top_p) {
    prob[kept] = minmo_exp_det_f64((double)cl[kept] - mx) / z;
    cum += prob[kept];
    ++kept;
  }
  const double u = minmo_splitmix64_uniform(rng) * cum;
  double acc = 0.0;
  for (int j = 0; j < kept; ++j) {
    acc += prob[j];
    if (u < acc) return j;
  }
  return kept - 1;
}

/* Whether token repeats often enough in the last win_size entries of the history ring (entry j at
 * history[j % cap], n_history entries) for the RAS redraw: count >= win_size * tau_r (fp64). */
MINMO_HD int minmo_ras_repeats(const int32_t* history, int64_t cap, int64_t n_history, int32_t win_size, double tau_r,
                               int32_t token) {
  const int64_t from = n_history > win_size ? n_history - win_size : 0;
  int reps = 0;
  for (int64_t j = from; j < n_history; ++j) reps += history[j % cap] == token;
  return (double)reps >= (double)win_size * tau_r;
}

#endif /* MINMO_KERNELS_SAMPLING_H_ */
