// Element type conversions on the device: fp16 activations to the fp32 that
// outputs are returned in, and (for the interim fp16 attention path of
// native/cuda_backend.cpp) fp32 back to fp16.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fusedrt::gpu {

// Queue the conversion of count elements on stream; return the launch error.
cudaError_t half_to_float(const __half* in, float* out, int64_t count, cudaStream_t stream);
cudaError_t float_to_half(const float* in, __half* out, int64_t count, cudaStream_t stream);

}  // namespace fusedrt::gpu
