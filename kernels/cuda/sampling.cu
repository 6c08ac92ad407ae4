// Voice-decoder sampling in one block of kThreads threads: forbidden-token bitmask in shared
// memory; top-k by k rounds of a block arg-max under the (logit desc, id asc) order; the
// normaliser by a block sum; the nucleus draw and the RAS count by thread 0 (the same serial
// steps as the CPU twin); the RAS fallback by a segmented block scan over the vocabulary.
#include <cuda_runtime.h>

#include "minmo_kernels/sampling.h"

namespace {

constexpr int kThreads = MINMO_SAMPLING_THREADS;
constexpr int kWarps = kThreads / 32;

struct Best {
  float v;
  int i;
};

__device__ __forceinline__ bool better(float v, int i, const Best& b) {
  return b.i < 0 || (i >= 0 && (v > b.v || (v == b.v && i < b.i)));
}

// Temperature-scaled logit of id i; -inf for forbidden ids and NaN.
__device__ __forceinline__ float logit_at(const float* logits, const uint32_t* mask, int i, float temperature) {
  if (mask[i >> 5] & (1u << (i & 31))) return -INFINITY;
  const float x = logits[i] / temperature;
  return isnan(x) ? -INFINITY : x;
}

__device__ float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? scratch[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  return scratch[0];
}

__global__ void __launch_bounds__(kThreads) sample_ras_kernel(const float* __restrict__ logits, int vocab,
                                                              const int32_t* __restrict__ history, int64_t n_history,
                                                              const int32_t* __restrict__ forbid, int64_t n_forbid,
                                                              minmo_sampling_params p, int32_t* token_out) {
  extern __shared__ uint32_t mask[];  // (vocab + 31) / 32 words
  __shared__ float red_v[kWarps];
  __shared__ int red_i[kWarps];
  __shared__ int cand[MINMO_SAMPLING_MAX_TOP_K];
  __shared__ float scan[kThreads];
  __shared__ int n_cand, fallback, last_allowed, chosen;
  __shared__ float target;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  if (p.force_id >= 0) {
    if (tid == 0) *token_out = p.force_id;
    return;
  }
  const int words = (vocab + 31) / 32;
  for (int w = tid; w < words; w += kThreads) mask[w] = 0u;
  if (tid == 0) {
    n_cand = 0;
    last_allowed = -1;
    chosen = -1;
  }
  __syncthreads();
  for (int64_t j = tid; j < n_forbid; j += kThreads) {
    const int32_t id = forbid[j];
    if (id >= 0 && id < vocab) atomicOr(&mask[id >> 5], 1u << (id & 31));
  }
  __syncthreads();

  // Top-k: round r finds the best logit strictly after candidate r-1 in the order.
  for (int r = 0; r < p.top_k; ++r) {
    const bool has_prev = r > 0;
    const int prev_i = has_prev ? cand[r - 1] : -1;
    const float prev_v = has_prev ? logit_at(logits, mask, prev_i, p.temperature) : 0.f;
    Best b{-INFINITY, -1};
    for (int i = tid; i < vocab; i += kThreads) {
      const float v = logit_at(logits, mask, i, p.temperature);
      if (!(v > -INFINITY)) continue;
      if (has_prev && !(v < prev_v || (v == prev_v && i > prev_i))) continue;
      if (better(v, i, b)) b = Best{v, i};
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, b.v, o);
      const int oi = __shfl_xor_sync(0xffffffffu, b.i, o);
      if (better(ov, oi, b)) b = Best{ov, oi};
    }
    if (lane == 0) {
      red_v[warp] = b.v;
      red_i[warp] = b.i;
    }
    __syncthreads();
    if (warp == 0) {
      b = Best{red_v[lane], red_i[lane]};
      for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, b.v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, b.i, o);
        if (better(ov, oi, b)) b = Best{ov, oi};
      }
      if (lane == 0 && b.i >= 0) {
        cand[r] = b.i;
        n_cand = r + 1;
      }
    }
    __syncthreads();
    if (n_cand <= r) break;
  }
  if (n_cand == 0) {
    if (tid == 0) *token_out = -1;
    return;
  }
  const float mx = logit_at(logits, mask, cand[0], p.temperature);
  float part = 0.f;
  for (int i = tid; i < vocab; i += kThreads) part += minmo_exp_det(logit_at(logits, mask, i, p.temperature) - mx);
  const float z = block_sum(part, red_v);

  if (tid == 0) {
    uint32_t w[4];
    minmo_philox4x32_10(p.seed, p.counter, w);
    float prob[MINMO_SAMPLING_MAX_TOP_K];
    float cum = 0.f;
    int taken = 0;
    while (taken < n_cand && (taken == 0 || cum < p.top_p)) {
      prob[taken] = minmo_exp_det(logit_at(logits, mask, cand[taken], p.temperature) - mx) / z;
      cum += prob[taken];
      ++taken;
    }
    const float t0 = minmo_uniform24(w[0]) * cum;
    int token = cand[taken - 1];
    float run = 0.f;
    for (int j = 0; j < taken; ++j) {
      run += prob[j];
      if (run > t0) {
        token = cand[j];
        break;
      }
    }
    int ras = 0;
    if (p.ras_window > 0) {
      int reps = 0;
      const int64_t from = n_history > p.ras_window ? n_history - p.ras_window : 0;
      for (int64_t i = from; i < n_history; ++i) reps += history[i] == token;
      ras = static_cast<float>(reps) >= static_cast<float>(p.ras_window) * p.ras_tau;
    }
    fallback = ras;
    target = minmo_uniform24(w[1]) * z;
    chosen = ras ? -1 : token;
  }
  __syncthreads();
  if (!fallback) {
    if (tid == 0) *token_out = chosen;
    return;
  }
  // Fallback: thread tid owns ids [tid * seg, (tid + 1) * seg); exclusive scan of segment sums.
  const int seg = (vocab + kThreads - 1) / kThreads;
  const int lo = tid * seg, hi = lo + seg < vocab ? lo + seg : vocab;
  float s = 0.f;
  int last = -1;
  for (int i = lo; i < hi; ++i) {
    const float v = logit_at(logits, mask, i, p.temperature);
    if (!(v > -INFINITY)) continue;
    s += minmo_exp_det(v - mx);
    last = i;
  }
  scan[tid] = s;
  if (last >= 0) atomicMax(&last_allowed, last);
  __syncthreads();
  if (tid == 0) {
    float acc = 0.f;
    for (int j = 0; j < kThreads; ++j) {
      const float x = scan[j];
      scan[j] = acc;
      acc += x;
    }
  }
  __syncthreads();
  const float excl = scan[tid];
  const bool owner = last >= 0 && excl <= target && (tid + 1 == kThreads || scan[tid + 1] > target);
  if (owner) {
    float acc = excl;
    int tok = last;
    for (int i = lo; i < hi; ++i) {
      const float v = logit_at(logits, mask, i, p.temperature);
      if (!(v > -INFINITY)) continue;
      acc += minmo_exp_det(v - mx);
      if (acc > target) {
        tok = i;
        break;
      }
    }
    atomicCAS(&chosen, -1, tok);
  }
  __syncthreads();
  if (tid == 0) *token_out = chosen >= 0 ? chosen : last_allowed;
}

}  // namespace

extern "C" int minmo_sample_ras_f32(const float* logits, int64_t vocab, const int32_t* history, int64_t n_history,
                                    const int32_t* forbid, int64_t n_forbid, minmo_sampling_params p,
                                    int32_t* token_out, cudaStream_t stream) {
  if (!logits || !token_out || vocab <= 0 || vocab > MINMO_SAMPLING_MAX_VOCAB || n_history < 0 || n_forbid < 0 ||
      (n_history > 0 && !history) || (n_forbid > 0 && !forbid) || p.top_k < 1 ||
      p.top_k > MINMO_SAMPLING_MAX_TOP_K || !(p.top_p > 0.f && p.top_p <= 1.f) || !(p.temperature > 0.f) ||
      p.ras_window < 0 || !(p.ras_tau >= 0.f) || p.force_id >= vocab)
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const size_t shmem = static_cast<size_t>((vocab + 31) / 32) * sizeof(uint32_t);
  sample_ras_kernel<<<1, kThreads, shmem, stream>>>(logits, static_cast<int>(vocab), history, n_history, forbid,
                                                   n_forbid, p, token_out);
  return cudaGetLastError() == cudaSuccess ? MINMO_KERNEL_OK : MINMO_KERNEL_LAUNCH_FAILED;
}
