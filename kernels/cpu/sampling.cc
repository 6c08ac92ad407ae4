#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

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
float warp_butterfly(float* v) {
  for (int o = 16; o > 0; o >>= 1) {
    float next[32];
    for (int l = 0; l < 32; ++l) next[l] = v[l] + v[l ^ o];
    std::memcpy(v, next, sizeof next);
  }
  return v[0];
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

  // Top-k by (logit descending, id ascending), finite logits only.
  int32_t cand[MINMO_SAMPLING_MAX_TOP_K];
  int n_cand = 0;
  for (; n_cand < p.top_k; ++n_cand) {
    int64_t best = -1;
    for (int64_t i = 0; i < vocab; ++i) {
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
  if (n_cand == 0) {
    *token_out = -1;
    return MINMO_KERNEL_OK;
  }
  const float mx = l[cand[0]];
  // z: per-thread strided partials, butterfly within each warp, then across the warp sums.
  std::vector<float> part(kThreads, 0.f);
  for (int t = 0; t < kThreads; ++t)
    for (int64_t i = t; i < vocab; i += kThreads) part[t] += minmo_exp_det(l[i] - mx);
  float warp_sums[32] = {0.f};
  for (int w = 0; w < kWarps; ++w) warp_sums[w] = warp_butterfly(part.data() + 32 * w);
  const float z = warp_butterfly(warp_sums);

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
      // Fallback draw: kThreads contiguous slices; exclusive scan of their sums; the slice where
      // the running sum passes the target is walked (the kernel's segmented scan).
      const float target = minmo_uniform24(w[1]) * z;
      const int64_t seg = (vocab + kThreads - 1) / kThreads;
      std::vector<float> excl(kThreads + 1, 0.f);
      std::vector<int64_t> last(kThreads, -1);
      int64_t last_allowed = -1;
      for (int t = 0; t < kThreads; ++t) {
        float s = 0.f;
        for (int64_t i = t * seg; i < std::min(vocab, (t + 1) * seg); ++i) {
          if (!(l[i] > -INFINITY)) continue;
          s += minmo_exp_det(l[i] - mx);
          last[t] = i;
        }
        excl[t + 1] = excl[t] + s;
        if (last[t] >= 0) last_allowed = last[t];
      }
      token = -1;
      for (int t = 0; t < kThreads && token < 0; ++t) {
        const bool owner = last[t] >= 0 && excl[t] <= target && (t + 1 == kThreads || excl[t + 1] > target);
        if (!owner) continue;
        float acc = excl[t];
        token = static_cast<int32_t>(last[t]);
        for (int64_t i = t * seg; i < std::min(vocab, (t + 1) * seg); ++i) {
          if (!(l[i] > -INFINITY)) continue;
          acc += minmo_exp_det(l[i] - mx);
          if (acc > target) {
            token = static_cast<int32_t>(i);
            break;
          }
        }
      }
      if (token < 0) token = static_cast<int32_t>(last_allowed);
    }
  }
  *token_out = token;
  return MINMO_KERNEL_OK;
}
