// Branch-free float math for the CPU ops, so the loops that use it vectorise (libm calls do not).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

// Compiles a function for AVX-512 / AVX2+FMA / baseline and picks one at load time (the build
// targets plain x86-64); for the hot loops.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MINMO_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define MINMO_SIMD_CLONES
#endif

namespace minmo {
namespace cpu {

// exp(x) for x <= ~88: x = n ln2 + r with |r| <= ln2 / 2, exp(r) by a degree-6 polynomial, 2^n
// through the exponent bits. Relative error below 3e-7; x < -87 gives a value below 1e-37.
inline float fast_exp(float x) {
  x = std::max(x, -87.0f);
  // Round to nearest by adding and removing 1.5 * 2^23 (no libm call, vectorises on any x86).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // ln2 split in two for accuracy
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// erfc(a) for a >= 0 with relative error below 1.2e-7 (Chebyshev fit of Numerical Recipes' erfcc).
inline float fast_erfc_nonneg(float a) {
  const float t = 1.0f / (1.0f + 0.5f * a);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  return t * fast_exp(-a * a + p);
}

}  // namespace cpu
}  // namespace minmo
