#include <cstring>

#include "ops.h"

namespace fusedrt::cpu {

namespace {

// binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
// binary32: 1 sign, 8 exponent (bias 127), 23 mantissa bits.
constexpr int kExponentRebias = 127 - 15;

uint32_t half_bits_to_float_bits(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1fu;
  uint32_t mantissa = half & 0x3ffu;
  if (exponent == 0x1f) return sign | 0x7f800000u | (mantissa << 13);  // inf, NaN keeps its payload
  if (exponent != 0) return sign | ((exponent + kExponentRebias) << 23) | (mantissa << 13);
  if (mantissa == 0) return sign;  // ±0
  // Subnormal half (mantissa · 2^-24) is a normal float: shift the leading
  // one up to the implicit bit, lowering the exponent once per shift.
  uint32_t float_exponent = 1 + kExponentRebias;
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    --float_exponent;
  }
  return sign | (float_exponent << 23) | ((mantissa & 0x3ffu) << 13);
}

}  // namespace

void half_to_float(const uint16_t* in, float* out, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const uint32_t bits = half_bits_to_float_bits(in[i]);
    std::memcpy(out + i, &bits, sizeof bits);
  }
}

}  // namespace fusedrt::cpu
