// The activations of native/cpu/README.md ("gemm") on the GPU, in fp32 with
// the precise erff/tanhf, for the GEMM epilogues (cuda/gemm_epilogue.cu,
// cuda/small_gemm.cu). Internal to cuda/*.cu.
#pragma once

#include "activation.h"

namespace fusedrt::gpu {

__device__ __forceinline__ float activate(float x, Activation activation) {
  switch (activation) {
    case Activation::kNone: return x;
    case Activation::kGelu: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case Activation::kGeluTanh:
      return 0.5f * x * (1.f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case Activation::kRelu: return fmaxf(x, 0.f);
    case Activation::kTanh: return tanhf(x);
  }
  return x;
}

}  // namespace fusedrt::gpu
