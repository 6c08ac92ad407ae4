#include "modules/sampling.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "minmo/status.h"

namespace minmo {

namespace {
// Uniform double in [0, 1) from 53 random bits.
double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0); }
}  // namespace

int64_t sample_token(const float* logits, size_t vocab, const SamplingParams& p, std::mt19937_64& rng) {
  MINMO_CHECK(vocab > 0 && logits != nullptr, ErrorCode::InvalidArgument, "sampling: empty logits");
  MINMO_CHECK(p.temperature >= 0.f && std::isfinite(p.temperature), ErrorCode::InvalidArgument,
              "sampling: temperature must be >= 0 (0 = greedy), got " << p.temperature);
  MINMO_CHECK(p.top_k >= 0, ErrorCode::InvalidArgument, "sampling: top_k must be >= 0 (0 = off), got " << p.top_k);
  MINMO_CHECK(p.top_p > 0.f && p.top_p <= 1.f, ErrorCode::InvalidArgument,
              "sampling: top_p must be in (0, 1] (1 = off), got " << p.top_p);
  const int64_t V = static_cast<int64_t>(vocab);
  int64_t best = 0;
  for (int64_t i = 0; i < V; ++i) {
    const float l = logits[i];
    MINMO_CHECK(std::isfinite(l), ErrorCode::Internal,
                "sampling: logit " << i << " of " << V << " is " << l
                                   << " (the model produced non-finite values; check the weights / inputs)");
    if (l > logits[best]) best = i;
  }
  if (p.temperature == 0.f || p.top_k == 1) return best;

  thread_local std::vector<int64_t> idx;
  const double inv_t = 1.0 / static_cast<double>(p.temperature);
  auto before = [logits](int64_t a, int64_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };

  // Candidates in descending order: the top_k, or (top_p only) a growing sorted prefix.
  idx.resize(static_cast<size_t>(V));
  for (int64_t i = 0; i < V; ++i) idx[static_cast<size_t>(i)] = i;
  int64_t n = V;
  if (p.top_k > 0 && p.top_k < V) n = p.top_k;
  const double mx = static_cast<double>(logits[best]);
  // Normaliser over the n candidates (all of them when top_k is off).
  double z = 0.0;
  int64_t sorted = 0;
  if (n < V) {
    std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), before);
    sorted = n;
    for (int64_t i = 0; i < n; ++i) z += std::exp((logits[idx[static_cast<size_t>(i)]] - mx) * inv_t);
  } else {
    for (int64_t i = 0; i < V; ++i) z += std::exp((logits[i] - mx) * inv_t);
  }
  auto ensure_sorted = [&](int64_t upto) {  // idx[0, upto) sorted descending
    if (upto <= sorted) return;
    upto = std::min(std::max(upto, 2 * sorted), n);
    std::partial_sort(idx.begin() + sorted, idx.begin() + upto, idx.begin() + n, before);
    sorted = upto;
  };
  // Nucleus: smallest prefix whose mass >= top_p.
  int64_t keep = n;
  double mass = z;
  if (p.top_p < 1.f) {
    double cum = 0.0;
    const double target = static_cast<double>(p.top_p) * z;
    keep = 0;
    while (keep < n) {
      ensure_sorted(std::max<int64_t>(keep + 1, 64));
      cum += std::exp((logits[idx[static_cast<size_t>(keep)]] - mx) * inv_t);
      ++keep;
      if (cum >= target) break;
    }
    mass = cum;
  }
  // Draw from the kept candidates (in index order when unsorted: deterministic either way).
  const double u = uniform01(rng) * mass;
  double acc = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += std::exp((logits[idx[static_cast<size_t>(i)]] - mx) * inv_t);
    if (u < acc) return idx[static_cast<size_t>(i)];
  }
  return idx[static_cast<size_t>(keep - 1)];
}

}  // namespace minmo
