// OCP FP8 E4M3 on the host (cuda_fp8.h's __nv_fp8_e4m3): 1 sign bit, 4
// exponent bits (bias 7), 3 mantissa bits; no infinities; NaN is S.1111.111;
// the largest finite value is 448, the smallest normal 2^-6, subnormals
// count units of 2^-9. The CPU backend runs fp8 plans in fp32 on these
// values (docs/plan-format.md, "Precision").
#pragma once

#include <cmath>
#include <cstdint>

namespace fusedrt {

constexpr float kE4M3Max = 448.f;

inline float e4m3_to_float(uint8_t bits) {
  const int exponent = (bits >> 3) & 0xf;
  const int mantissa = bits & 0x7;
  float magnitude;
  if (exponent == 0xf && mantissa == 0x7) {
    magnitude = NAN;
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -9);
  } else {
    magnitude = std::ldexp(static_cast<float>(8 + mantissa), exponent - 10);
  }
  return (bits & 0x80) ? -magnitude : magnitude;
}

// x rounded to the nearest E4M3 value, ties to even, magnitudes beyond 448
// (infinities too) saturated to 448, NaN kept: what the GPU's cvt.rn.satfinite
// does, so both backends round an fp8 buffer alike.
inline float round_to_e4m3(float x) {
  if (std::isnan(x)) return x;
  const float magnitude = std::fabs(x);
  if (magnitude >= kE4M3Max) return std::copysign(kE4M3Max, x);
  // The spacing of E4M3 values around magnitude: 2^-9 below the smallest
  // normal (2^-6), else 2^(e - 3) in [2^e, 2^(e + 1)). Dividing by a power
  // of two is exact, and nearbyint rounds to even; a magnitude that rounds
  // up to 2^(e + 1) lands on that binade's first value, as it should.
  int exponent = 0;
  std::frexp(magnitude, &exponent);  // magnitude in [2^(exponent - 1), 2^exponent)
  const int step = magnitude < 0x1p-6f ? -9 : exponent - 1 - 3;
  const float rounded = std::ldexp(std::nearbyint(std::ldexp(magnitude, -step)), step);
  return std::copysign(std::fmin(rounded, kE4M3Max), x);
}

}  // namespace fusedrt
