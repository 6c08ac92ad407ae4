// Next-token sampling from a logits row: greedy, temperature, top-k and top-p (nucleus).
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>

namespace minmo {

struct SamplingParams {
  float temperature = 0.f;  // 0: greedy (argmax; the lowest index among equal maxima); > 0: softmax(logits / T)
  int top_k = 0;            // 0: off; k > 0: only the k largest logits (ties broken by lower index)
  float top_p = 1.f;        // 1: off; (0, 1): the smallest set of most likely tokens with mass >= top_p
};

// Draws one token id from logits[vocab]. top_k is applied before top_p, both on the
// temperature-scaled distribution; at least one token always remains. Deterministic for a given
// rng state (uses only rng() draws, not std::*_distribution). Throws Error(Internal) when a logit
// is NaN or infinite (names the index and value), InvalidArgument on bad parameters
// (temperature < 0, top_k < 0, top_p outside (0, 1], vocab == 0). Allocates only thread-local
// buffers reused across calls.
int64_t sample_token(const float* logits, size_t vocab, const SamplingParams& p, std::mt19937_64& rng);

}  // namespace minmo
