// float -> IEEE half on the host, round to nearest even, for storing fp32
// plan tensors (e.g. the GEMM biases of fp16 plans) as fp16 on a device.
// (Half -> float is cpu::half_to_float in native/cpu/ops.h.)
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace fusedrt {

inline uint16_t float_to_half(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) {  // inf stays inf, NaN stays a (quiet) NaN
    return static_cast<uint16_t>(sign | 0x7c00u | (magnitude > 0x7f800000u ? 0x0200u : 0u));
  }
  if (magnitude >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (magnitude < 0x38800000u) {
    // Below 2^-14: a subnormal half counts units of 2^-24. Scaling by 2^24 is
    // exact, and nearbyint rounds to even; 1024 units is the smallest normal
    // half, whose encoding is also 1024.
    float magnitude_f;
    std::memcpy(&magnitude_f, &magnitude, sizeof magnitude_f);
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(magnitude_f * 16777216.0f)));
  }
  // Normal: rebias the exponent (127 -> 15) and drop 13 mantissa bits,
  // rounding to even; a carry out of the mantissa bumps the exponent, as it
  // should.
  uint32_t half = (magnitude - 0x38000000u) >> 13;
  const uint32_t dropped = magnitude & 0x1fffu;
  if (dropped > 0x1000u || (dropped == 0x1000u && (half & 1u) != 0)) ++half;
  return static_cast<uint16_t>(sign | half);
}

}  // namespace fusedrt
