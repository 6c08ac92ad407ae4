// Scalar helpers shared by the CPU twins (not part of the public interface).
#ifndef MINMO_KERNELS_CPU_UTIL_H_
#define MINMO_KERNELS_CPU_UTIL_H_

#include <cmath>
#include <cstdint>
#include <cstring>

namespace minmo_cpu {

inline float bf16_to_f32(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, NaN stays NaN (as __float2bfloat16_rn).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// float8 e4m3fn (no infinities; S.1111.111 is NaN).
inline float e4m3_to_f32(uint8_t v) {
  const int sign = v >> 7, exp = (v >> 3) & 15, man = v & 7;
  float mag;
  if (exp == 15 && man == 7) return NAN;
  if (exp == 0)
    mag = std::ldexp(static_cast<float>(man), -9);
  else
    mag = std::ldexp(1.0f + static_cast<float>(man) / 8.0f, exp - 7);
  return sign ? -mag : mag;
}

}  // namespace minmo_cpu

#endif  // MINMO_KERNELS_CPU_UTIL_H_
