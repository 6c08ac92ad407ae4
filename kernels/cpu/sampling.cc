#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../common/args.h"
#include "cpu_util.h"
#include "minmo_kernels/sampling.h"

extern "C" void minmo_philox4x32_cpu(uint64_t seed, uint64_t counter, uint32_t words[4], float uniforms[4]) {
  uint32_t w[4];
  minmo_philox4x32_10(seed, counter, w);
  for (int i = 0; i < 4; ++i) {
    if (words) words[i] = w[i];
    if (uniforms) uniforms[i] = minmo_uniform24(w[i]);
  }
}

namespace {

constexpr int kThreads = MINMO_SAMPLING_THREADS;
constexpr int kWarps = kThreads / 32;

// A warp's __shfl_xor butterfly sum over v[0..31] (every lane ends with this value).
template <typename T>
T warp_butterfly(T* v) {
  for (int o = 16; o > 0; o >>= 1) {
    T next[32];
    for (int l = 0; l < 32; ++l) next[l] = v[l] + v[l ^ o];
    std::memcpy(v, next, sizeof next);
  }
  return v[0];
}

// The kernels' block_sum of value(i) over ids [0, n): per-thread strided partials, a butterfly
// within each warp, then across the warp sums.
template <typename T, class Value>
T block_sum(int64_t n, const Value& value) {
  std::vector<T> part(kThreads, T(0));
  for (int t = 0; t < kThreads; ++t)
    for (int64_t i = t; i < n; i += kThreads) part[t] += value(i);
  T warp_sums[32] = {};
  for (int w = 0; w < kWarps; ++w) warp_sums[w] = warp_butterfly(part.data() + 32 * w);
  return warp_butterfly(warp_sums);
}

// Top-k ids of l[0, n) with l > -inf by (value descending, id ascending) into cand; the count.
int top_k(const float* l, int64_t n, int k, int32_t* cand) {
  int n_cand = 0;
  for (; n_cand < k; ++n_cand) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; ++i) {
      if (!(l[i] > -INFINITY)) continue;
      if (n_cand > 0) {  // strictly after the previous candidate in the order
        const float pv = l[cand[n_cand - 1]];
        if (!(l[i] < pv || (l[i] == pv && i > cand[n_cand - 1]))) continue;
      }
      if (best < 0 || l[i] > l[best]) best = i;
    }
    if (best < 0) break;
    cand[n_cand] = static_cast<int32_t>(best);
  }
  return n_cand;
}

// The kernels' block_draw: kThreads contiguous slices of ids [0, n); exclusive scan of their sums
// (weight(i, w) false: id i is not drawable); the slice where the running sum passes the target is
// walked. The first id whose running sum exceeds target, else the last drawable id (-1: none).
template <typename T, class Weight>
int64_t block_draw(int64_t n, T target, const Weight& weight) {
  const int64_t seg = (n + kThreads - 1) / kThreads;
  std::vector<T> excl(kThreads + 1, T(0));
  std::vector<int64_t> last(kThreads, -1);
  int64_t last_allowed = -1;
  T w;
  for (int t = 0; t < kThreads; ++t) {
    T s = T(0);
    for (int64_t i = t * seg; i < std::min(n, (t + 1) * seg); ++i) {
      if (!weight(i, w)) continue;
      s += w;
      last[t] = i;
    }
    excl[t + 1] = excl[t] + s;
    if (last[t] >= 0) last_allowed = last[t];
  }
  for (int t = 0; t < kThreads; ++t) {
    const bool owner = last[t] >= 0 && excl[t] <= target && (t + 1 == kThreads || excl[t + 1] > target);
    if (!owner) continue;
    T acc = excl[t];
    for (int64_t i = t * seg; i < std::min(n, (t + 1) * seg); ++i) {
      if (!weight(i, w)) continue;
      acc += w;
      if (acc > target) return i;
    }
    return last[t];
  }
  return last_allowed;
}

}  // namespace

// The steps below are those of the CUDA kernel (kernels/cuda/sampling.cu), and every sum is
// accumulated in the kernel's order, so both produce bit-identical floats and the same token.
extern "C" int minmo_sample_ras_f32_cpu(const float* logits, int64_t vocab, const int32_t* history,
                                        int64_t n_history, const int32_t* forbid, int64_t n_forbid,
                                        minmo_sampling_params p, int32_t* token_out) {
  if (!logits || !token_out || vocab <= 0 || vocab > MINMO_SAMPLING_MAX_VOCAB || n_history < 0 || n_forbid < 0 ||
      (n_history > 0 && !history) || (n_forbid > 0 && !forbid) || p.top_k < 1 ||
      p.top_k > MINMO_SAMPLING_MAX_TOP_K || !(p.top_p > 0.f && p.top_p <= 1.f) || !(p.temperature > 0.f) ||
      p.ras_window < 0 || !(p.ras_tau >= 0.f) || p.force_id >= vocab)
    return MINMO_KERNEL_INVALID_ARGUMENT;
  if (p.force_id >= 0) {
    *token_out = p.force_id;
    return MINMO_KERNEL_OK;
  }
  std::vector<float> l(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) {
    const float x = logits[i] / p.temperature;
    l[i] = std::isnan(x) ? -INFINITY : x;
  }
  for (int64_t j = 0; j < n_forbid; ++j)
    if (forbid[j] >= 0 && forbid[j] < vocab) l[forbid[j]] = -INFINITY;

  int32_t cand[MINMO_SAMPLING_MAX_TOP_K];
  const int n_cand = top_k(l.data(), vocab, p.top_k, cand);
  if (n_cand == 0) {
    *token_out = -1;
    return MINMO_KERNEL_OK;
  }
  const float mx = l[cand[0]];
  const float z = block_sum<float>(vocab, [&](int64_t i) { return minmo_exp_det(l[i] - mx); });

  uint32_t w[4];
  minmo_philox4x32_10(p.seed, p.counter, w);
  float prob[MINMO_SAMPLING_MAX_TOP_K];
  float cum = 0.f;
  int taken = 0;
  while (taken < n_cand && (taken == 0 || cum < p.top_p)) {
    prob[taken] = minmo_exp_det(l[cand[taken]] - mx) / z;
    cum += prob[taken];
    ++taken;
  }
  const float target = minmo_uniform24(w[0]) * cum;
  int32_t token = cand[taken - 1];
  float run = 0.f;
  for (int j = 0; j < taken; ++j) {
    run += prob[j];
    if (run > target) {
      token = cand[j];
      break;
    }
  }
  if (p.ras_window > 0) {
    int reps = 0;
    const int64_t from = n_history > p.ras_window ? n_history - p.ras_window : 0;
    for (int64_t i = from; i < n_history; ++i) reps += history[i] == token;
    if (static_cast<float>(reps) >= static_cast<float>(p.ras_window) * p.ras_tau) {
      const float target = minmo_uniform24(w[1]) * z;
      token = static_cast<int32_t>(block_draw(vocab, target, [&](int64_t i, float& wt) {
        if (!(l[i] > -INFINITY)) return false;
        wt = minmo_exp_det(l[i] - mx);
        return true;
      }));
    }
  }
  *token_out = token;
  return MINMO_KERNEL_OK;
}

namespace {

inline float logit_value(const float* l, int64_t i) { return l[i]; }
inline float logit_value(const minmo_bf16* l, int64_t i) { return minmo_cpu::bf16_to_f32(l[i]); }

// The steps of ras_loop_kernel (kernels/cuda/sampling.cu), every sum in its order.
template <typename L>
int ras_loop(const L* logits, int64_t n, int32_t* history, int64_t cap, minmo_ras_state* st, int32_t* pos,
             minmo_ras_params p, int32_t* token_out) {
  if (!minmo_args::ras_loop_ok(logits, n, history, cap, st, p, token_out)) return MINMO_KERNEL_INVALID_ARGUMENT;
  std::vector<float> l(static_cast<size_t>(n));
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) bad |= !std::isfinite(l[i] = logit_value(logits, i));
  int32_t token = -1;
  if (!bad) {
    int32_t cand[MINMO_SAMPLING_MAX_TOP_K];
    const int n_cand = top_k(l.data(), n, p.top_k, cand);
    const double mx = static_cast<double>(l[cand[0]]);
    const double z = block_sum<double>(n, [&](int64_t i) { return minmo_exp_det_f64(static_cast<double>(l[i]) - mx); });
    float cl[MINMO_SAMPLING_MAX_TOP_K];
    for (int j = 0; j < n_cand; ++j) cl[j] = l[cand[j]];
    token = cand[minmo_ras_nucleus(cl, n_cand, mx, z, p.top_p, &st->rng)];
    if (minmo_ras_repeats(history, cap, st->n_history, p.win_size, p.tau_r, token)) {
      const double target = minmo_splitmix64_uniform(&st->rng);
      token = static_cast<int32_t>(block_draw(n, target, [&](int64_t i, double& w) {
        w = minmo_exp_det_f64(static_cast<double>(l[i]) - mx) / z;
        return true;
      }));
    }
  }
  history[st->n_history % cap] = token;
  st->n_history += 1;
  *token_out = token;
  if (pos) *pos += 1;
  return MINMO_KERNEL_OK;
}

}  // namespace

extern "C" int minmo_sample_ras_loop_bf16_cpu(const minmo_bf16* logits, int64_t n_allowed, int32_t* history,
                                              int64_t history_cap, minmo_ras_state* state, int32_t* pos,
                                              minmo_ras_params params, int32_t* token_out) {
  return ras_loop(logits, n_allowed, history, history_cap, state, pos, params, token_out);
}

extern "C" int minmo_sample_ras_loop_f32_cpu(const float* logits, int64_t n_allowed, int32_t* history,
                                             int64_t history_cap, minmo_ras_state* state, int32_t* pos,
                                             minmo_ras_params params, int32_t* token_out) {
  return ras_loop(logits, n_allowed, history, history_cap, state, pos, params, token_out);
}

extern "C" int minmo_embedding_row_f32_cpu(const float* table, int64_t rows, int64_t dim, const int32_t* id,
                                           float* out) {
  if (!table || !id || !out || rows <= 0 || dim <= 0) return MINMO_KERNEL_INVALID_ARGUMENT;
  const int32_t r = *id;
  if (r >= 0 && r < rows) std::memcpy(out, table + r * dim, sizeof(float) * static_cast<size_t>(dim));
  else std::fill(out, out + dim, 0.f);
  return MINMO_KERNEL_OK;
}
