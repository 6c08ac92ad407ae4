#include <cmath>
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

// The steps below are those of the CUDA kernel (kernels/cuda/sampling.cu) in the same order; only
// the two full-vocabulary sums are accumulated in a different order there.
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
  float z = 0.f;
  for (int64_t i = 0; i < vocab; ++i) z += expf(l[i] - mx);

  uint32_t w[4];
  minmo_philox4x32_10(p.seed, p.counter, w);
  float prob[MINMO_SAMPLING_MAX_TOP_K];
  float cum = 0.f;
  int taken = 0;
  while (taken < n_cand && (taken == 0 || cum < p.top_p)) {
    prob[taken] = expf(l[cand[taken]] - mx) / z;
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
      const float t2 = minmo_uniform24(w[1]) * z;
      float acc = 0.f;
      int64_t last = cand[0];
      token = -1;
      for (int64_t i = 0; i < vocab && token < 0; ++i) {
        if (!(l[i] > -INFINITY)) continue;
        last = i;
        acc += expf(l[i] - mx);
        if (acc > t2) token = static_cast<int32_t>(i);
      }
      if (token < 0) token = static_cast<int32_t>(last);
    }
  }
  *token_out = token;
  return MINMO_KERNEL_OK;
}
