// Voice-decoder sampling in one block of kThreads threads: forbidden-token bitmask in shared
// memory; top-k by k rounds of a block arg-max under the (logit desc, id asc) order; the
// normaliser by a block sum; the nucleus draw and the RAS count by thread 0 (the same serial
// steps as the CPU twin); the RAS fallback by a segmented block scan over the vocabulary. The loop
// sampler (sample_ras_loop_*) reuses the top-k, sum and draw helpers in fp64 with SplitMix64
// uniforms, its generator state, history ring and position in device memory.
#include <cuda_runtime.h>

#include "../common/args.h"
#include "cuda_util.cuh"
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

// Sum over the block (every thread gets it); scratch holds kWarps values.
template <typename T>
__device__ T block_sum(T v, T* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? scratch[lane] : T(0);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  return scratch[0];
}

// Top-k by k rounds of a block arg-max under the (value desc, id asc) order over ids [0, n) whose
// value at(i) is > -inf: round r finds the best strictly after candidate r-1. Fills cand[0 .. result)
// (shared) and returns the count to every thread; red_v / red_i: kWarps entries of scratch.
template <class At>
__device__ int block_top_k(const At& at, int n, int k, int* cand, float* red_v, int* red_i, int* n_cand) {
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  if (tid == 0) *n_cand = 0;
  __syncthreads();
  for (int r = 0; r < k; ++r) {
    const bool has_prev = r > 0;
    const int prev_i = has_prev ? cand[r - 1] : -1;
    const float prev_v = has_prev ? at(prev_i) : 0.f;
    Best b{-INFINITY, -1};
    for (int i = tid; i < n; i += kThreads) {
      const float v = at(i);
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
        *n_cand = r + 1;
      }
    }
    __syncthreads();
    if (*n_cand <= r) break;
  }
  return *n_cand;
}

// Inverse-CDF draw over ids [0, n): weight(i, w) returns whether id i may be drawn and sets its
// weight w. Thread t owns ids [t * seg, (t + 1) * seg); thread 0 scans the segment sums
// (exclusive); the segment where the running sum passes `target` is walked. Returns (to every
// thread) the first id whose running sum exceeds target, else the last drawable id (-1: none).
// scan: kThreads entries; chosen / last_allowed: shared ints.
template <typename T, class Weight>
__device__ int block_draw(const Weight& weight, int n, T target, T* scan, int* chosen, int* last_allowed) {
  const int tid = threadIdx.x;
  if (tid == 0) {
    *chosen = -1;
    *last_allowed = -1;
  }
  const int seg = (n + kThreads - 1) / kThreads;
  const int lo = tid * seg, hi = lo + seg < n ? lo + seg : n;
  T s = T(0), w;
  int last = -1;
  for (int i = lo; i < hi; ++i) {
    if (!weight(i, w)) continue;
    s += w;
    last = i;
  }
  scan[tid] = s;
  __syncthreads();
  if (last >= 0) atomicMax(last_allowed, last);
  if (tid == 0) {
    T acc = T(0);
    for (int j = 0; j < kThreads; ++j) {
      const T x = scan[j];
      scan[j] = acc;
      acc += x;
    }
  }
  __syncthreads();
  const T excl = scan[tid];
  const bool owner = last >= 0 && excl <= target && (tid + 1 == kThreads || scan[tid + 1] > target);
  if (owner) {
    T acc = excl;
    int tok = last;
    for (int i = lo; i < hi; ++i) {
      if (!weight(i, w)) continue;
      acc += w;
      if (acc > target) {
        tok = i;
        break;
      }
    }
    atomicCAS(chosen, -1, tok);
  }
  __syncthreads();
  return *chosen >= 0 ? *chosen : *last_allowed;
}

// The Philox sampler's view of the logits: temperature-scaled, forbidden ids and NaN as -inf.
struct MaskedLogit {
  const float* logits;
  const uint32_t* mask;
  float temperature;
  __device__ float operator()(int i) const { return logit_at(logits, mask, i, temperature); }
};

struct MaskedWeight {
  MaskedLogit at;
  float mx;
  __device__ bool operator()(int i, float& w) const {
    const float v = at(i);
    if (!(v > -INFINITY)) return false;
    w = minmo_exp_det(v - mx);
    return true;
  }
};

__global__ void __launch_bounds__(kThreads) sample_ras_kernel(const float* __restrict__ logits, int vocab,
                                                              const int32_t* __restrict__ history, int64_t n_history,
                                                              const int32_t* __restrict__ forbid, int64_t n_forbid,
                                                              minmo_sampling_params p, int32_t* token_out) {
  extern __shared__ uint32_t mask[];  // (vocab + 31) / 32 words
  __shared__ float red_v[kWarps];
  __shared__ int red_i[kWarps];
  __shared__ int cand[MINMO_SAMPLING_MAX_TOP_K];
  __shared__ float scan[kThreads];
  __shared__ int n_cand_s, fallback, last_allowed, chosen;
  __shared__ float target;
  const int tid = threadIdx.x;
  if (p.force_id >= 0) {
    if (tid == 0) *token_out = p.force_id;
    return;
  }
  const int words = (vocab + 31) / 32;
  for (int w = tid; w < words; w += kThreads) mask[w] = 0u;
  __syncthreads();
  for (int64_t j = tid; j < n_forbid; j += kThreads) {
    const int32_t id = forbid[j];
    if (id >= 0 && id < vocab) atomicOr(&mask[id >> 5], 1u << (id & 31));
  }
  __syncthreads();
  const MaskedLogit at{logits, mask, p.temperature};
  const int n_cand = block_top_k(at, vocab, p.top_k, cand, red_v, red_i, &n_cand_s);
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
  const int tok = block_draw(MaskedWeight{at, mx}, vocab, target, scan, &chosen, &last_allowed);
  if (tid == 0) *token_out = tok;
}

// ---- the voice LM's sampler as a loop step (SplitMix64 state in device memory) ------------------

__device__ __forceinline__ float load_logit(const float* l, int i) { return l[i]; }
__device__ __forceinline__ float load_logit(const minmo_bf16* l, int i) { return minmo_cuda::bf16_bits_to_f32(l[i]); }

template <typename L>
struct PlainLogit {
  const L* logits;
  __device__ float operator()(int i) const { return load_logit(logits, i); }
};

template <typename L>
struct ProbWeight {  // p_i = exp(l_i - mx) / z in fp64, every id drawable
  const L* logits;
  double mx, z;
  __device__ bool operator()(int i, double& w) const {
    w = minmo_exp_det_f64(static_cast<double>(load_logit(logits, i)) - mx) / z;
    return true;
  }
};

template <typename L>
__global__ void __launch_bounds__(kThreads) ras_loop_kernel(const L* __restrict__ logits, int n, int32_t* history,
                                                            int64_t cap, minmo_ras_state* state, int32_t* pos,
                                                            minmo_ras_params p, int32_t* token_out) {
  __shared__ float red_v[kWarps];
  __shared__ int red_i[kWarps];
  __shared__ double red_d[kWarps];
  __shared__ int cand[MINMO_SAMPLING_MAX_TOP_K];
  __shared__ double scan[kThreads];
  __shared__ int n_cand_s, bad, fallback, chosen, last_allowed;
  __shared__ double target;
  __shared__ uint64_t rng;
  const int tid = threadIdx.x;
  if (tid == 0) bad = 0;
  __syncthreads();
  for (int i = tid; i < n; i += kThreads)
    if (!isfinite(load_logit(logits, i))) bad = 1;
  __syncthreads();
  int token = -1;
  if (!bad) {
    const PlainLogit<L> at{logits};
    block_top_k(at, n, p.top_k, cand, red_v, red_i, &n_cand_s);
    const double mx = static_cast<double>(at(cand[0]));
    double part = 0.0;
    for (int i = tid; i < n; i += kThreads) part += minmo_exp_det_f64(static_cast<double>(at(i)) - mx);
    const double z = block_sum(part, red_d);
    if (tid == 0) {
      rng = state->rng;
      float cl[MINMO_SAMPLING_MAX_TOP_K];
      for (int j = 0; j < n_cand_s; ++j) cl[j] = at(cand[j]);
      const int tok = cand[minmo_ras_nucleus(cl, n_cand_s, mx, z, p.top_p, &rng)];
      fallback = minmo_ras_repeats(history, cap, state->n_history, p.win_size, p.tau_r, tok);
      if (fallback) target = minmo_splitmix64_uniform(&rng);
      chosen = tok;
    }
    __syncthreads();
    token = chosen;
    if (fallback) token = block_draw(ProbWeight<L>{logits, mx, z}, n, target, scan, &chosen, &last_allowed);
  }
  if (tid == 0) {
    if (!bad) state->rng = rng;
    const int64_t nh = state->n_history;
    history[nh % cap] = token;
    state->n_history = nh + 1;
    *token_out = token;
    if (pos) *pos += 1;
  }
}

template <typename L>
int launch_ras_loop(const L* logits, int64_t n, int32_t* history, int64_t cap, minmo_ras_state* state, int32_t* pos,
                    minmo_ras_params p, int32_t* token_out, cudaStream_t stream) {
  if (!minmo_args::ras_loop_ok(logits, n, history, cap, state, p, token_out)) return MINMO_KERNEL_INVALID_ARGUMENT;
  ras_loop_kernel<L><<<1, kThreads, 0, stream>>>(logits, static_cast<int>(n), history, cap, state, pos, p, token_out);
  return minmo_cuda::launch_status();
}

__global__ void embedding_row_kernel(const float* __restrict__ table, int64_t rows, int64_t dim,
                                     const int32_t* __restrict__ id, float* __restrict__ out) {
  const int32_t r = *id;
  const bool ok = r >= 0 && r < rows;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < dim; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = ok ? table[r * dim + i] : 0.f;
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

extern "C" int minmo_sample_ras_loop_bf16(const minmo_bf16* logits, int64_t n_allowed, int32_t* history,
                                          int64_t history_cap, minmo_ras_state* state, int32_t* pos,
                                          minmo_ras_params p, int32_t* token_out, cudaStream_t stream) {
  return launch_ras_loop(logits, n_allowed, history, history_cap, state, pos, p, token_out, stream);
}

extern "C" int minmo_sample_ras_loop_f32(const float* logits, int64_t n_allowed, int32_t* history, int64_t history_cap,
                                         minmo_ras_state* state, int32_t* pos, minmo_ras_params p, int32_t* token_out,
                                         cudaStream_t stream) {
  return launch_ras_loop(logits, n_allowed, history, history_cap, state, pos, p, token_out, stream);
}

extern "C" int minmo_embedding_row_f32(const float* table, int64_t rows, int64_t dim, const int32_t* id, float* out,
                                       cudaStream_t stream) {
  if (!table || !id || !out || rows <= 0 || dim <= 0) return MINMO_KERNEL_INVALID_ARGUMENT;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((dim + threads - 1) / threads, 64);
  embedding_row_kernel<<<static_cast<int>(blocks), threads, 0, stream>>>(table, rows, dim, id, out);
  return minmo_cuda::launch_status();
}
