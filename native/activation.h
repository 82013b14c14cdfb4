// The activation of a GEMM op: one enum for the plan reader, the CPU ops and
// the CUDA kernels, so no layer translates between copies of it.
#pragma once

namespace fusedrt {

enum class Activation { kNone, kGelu, kGeluTanh, kRelu, kTanh };

// The name plans give it ("activation" of a gemm op, docs/plan-format.md).
inline const char* activation_name(Activation activation) {
  switch (activation) {
    case Activation::kNone: return "none";
    case Activation::kGelu: return "gelu";
    case Activation::kGeluTanh: return "gelu_tanh";
    case Activation::kRelu: return "relu";
    case Activation::kTanh: return "tanh";
  }
  return "?";
}

}  // namespace fusedrt
