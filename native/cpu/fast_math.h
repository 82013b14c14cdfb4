// Branch-free float exp and GELU that GCC vectorises inside loops (no libm
// calls), for the GELU epilogue of gemm and the softmax of attention. Both
// are plain float arithmetic plus bit casts, so a loop over an array becomes
// SIMD code in whatever ISA the enclosing function is compiled for.
#pragma once

#include <cstdint>
#include <cstring>

namespace fusedrt::cpu {

inline float bits_to_float(int32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

inline int32_t float_to_bits(float value) {
  int32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

// e^x with a relative error of a few float ulps for x in [-87, 88]; inputs
// below -87 return e^-87 (≈ 1.6e-38, not 0), inputs above 88 return e^88.
// x = n·ln2 + r with |r| <= ln2/2 (ln2 split in two so that n·ln2_hi is
// exact), e^r by its Taylor series to r^7 (truncation below 6e-9 relative),
// and 2^n put straight into the exponent bits.
inline float exp_fast(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;  // 11 significant bits: n·kLn2Hi is exact
  constexpr float kLn2Lo = 1.42860682030941723212e-6f;
  constexpr float kRoundMagic = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float shifted = x * kLog2e + kRoundMagic;
  const float n = shifted - kRoundMagic;
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // The low mantissa bits of `shifted` hold n; shifting them into the
  // exponent field scales p by 2^n (n is in [-126, 127], so no overflow).
  return bits_to_float(float_to_bits(p) + (float_to_bits(shifted) << 23));
}

// GELU with erf, 0.5·x·(1 + erf(x/√2)) = x·Φ(x), within 5e-7 of the exact
// value (the float rounding of the result; std::erf in float does no better).
// With z = |x|/√2, 1 - erf(z) = e^(-z²)·R(z), where R (the scaled
// complementary error function) is smooth and fitted as P(z)/Q(z) on [0, 4]:
// relative error 4e-10 in exact arithmetic. P and Q were fitted in double by
// linearised least squares (Sanathanan–Koerner iterations) refined towards
// minimax with Lawson weights. Φ(-|x|) = e^(-z²)·R(z)/2 keeps its relative
// accuracy far into the tail, Φ(|x|) = 1 - Φ(-|x|). Beyond z = 4 R's argument
// is clamped: the product is then below 1e-8 and its error irrelevant.
inline float gelu_erf_fast(float x) {
  const float z = (x < 0.0f ? -x : x) * 0.70710678118654752f;
  const float t = z < 4.0f ? z : 4.0f;
  float p = 0.023888102746570505f;
  p = p * t + 0.18448552605603044f;
  p = p * t + 0.6346671248391721f;
  p = p * t + 1.1417051242034135f;
  p = p * t + 1.0000000002491167f;
  float q = 0.04233577571197061f;
  q = q * t + 0.32710780259389033f;
  q = q * t + 1.1447869507873718f;
  q = q * t + 2.196182160637122f;
  q = q * t + 2.2700843299806097f;
  q = q * t + 1.0f;
  const float lower_tail = 0.5f * exp_fast(-z * z) * p / q;  // Φ(-|x|)
  return x * (x < 0.0f ? lower_tail : 1.0f - lower_tail);
}

// Compiles a function for AVX-512 (x86-64-v4), AVX2+FMA (x86-64-v3) and the
// baseline; the loader picks the best for the CPU (an ifunc). For loops over
// the inline functions above. Same conditions as in gemm.cpp: GCC on x86-64
// glibc, not under ThreadSanitizer.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) && \
    !defined(__SANITIZE_THREAD__)
#define FUSEDRT_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FUSEDRT_SIMD_CLONES
#endif

}  // namespace fusedrt::cpu
