// The activation of a GEMM op: one enum for the plan reader, the CPU ops and
// the CUDA kernels, so no layer translates between copies of it.
#pragma once

namespace fusedrt {

enum class Activation { kNone, kGelu, kGeluTanh, kRelu, kTanh };

}  // namespace fusedrt
