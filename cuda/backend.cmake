# The CUDA backend (docs/cuda.md). Included from the top-level CMakeLists.txt
# after the fusedrt target exists. Built only when nvcc AND cuBLASLt (header
# and library) are found; otherwise the addon stays CPU-only, exactly as
# without this file. Sets the cache entries
#   FUSEDRT_WITH_CUDA    ON when the backend is built
#   FUSEDRT_CUDA_STATUS  "built (...)" or "not built (reason)", printed by
#                        scripts/build-native.js
# The kernels alone (no cuBLAS) are compile-checked by scripts/check-cuda-compile.sh.

set(FUSEDRT_CUDA_ARCHITECTURES 80 86 87 89 90)
set(FUSEDRT_CUDA_KERNELS
  ${CMAKE_CURRENT_LIST_DIR}/embed_layernorm.cu
  ${CMAKE_CURRENT_LIST_DIR}/add_layernorm.cu
  ${CMAKE_CURRENT_LIST_DIR}/attention.cu
  ${CMAKE_CURRENT_LIST_DIR}/attention_rows.cu
  ${CMAKE_CURRENT_LIST_DIR}/gather_rows.cu
  ${CMAKE_CURRENT_LIST_DIR}/mean_rows.cu
  ${CMAKE_CURRENT_LIST_DIR}/gemm_epilogue.cu
  ${CMAKE_CURRENT_LIST_DIR}/convert.cu
  ${CMAKE_CURRENT_LIST_DIR}/host_copy.cu
  ${CMAKE_CURRENT_LIST_DIR}/topk.cu
  ${CMAKE_CURRENT_LIST_DIR}/small_gemm.cu
  ${CMAKE_CURRENT_LIST_DIR}/gemv.cu)
# Kernels built on Hopper's arch-specific instructions (wgmma): sm_90a only.
# Their launchers check the device before using them.
set(FUSEDRT_CUDA_HOPPER_KERNELS
  ${CMAKE_CURRENT_LIST_DIR}/attention_hopper.cu)

set(FUSEDRT_WITH_CUDA OFF)
find_package(CUDAToolkit QUIET)
if(NOT CUDAToolkit_FOUND OR NOT CUDAToolkit_NVCC_EXECUTABLE OR NOT EXISTS "${CUDAToolkit_NVCC_EXECUTABLE}")
  set(_status "not built (nvcc not found)")
else()
  find_path(FUSEDRT_CUBLASLT_INCLUDE_DIR cublasLt.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  if(NOT FUSEDRT_CUBLASLT_INCLUDE_DIR OR NOT TARGET CUDA::cublasLt OR NOT CUDA_cublasLt_LIBRARY)
    set(_status "not built (nvcc ${CUDAToolkit_VERSION} found, but not cuBLASLt: cublasLt.h and libcublasLt are needed)")
  else()
    set(FUSEDRT_WITH_CUDA ON)
    string(REPLACE ";" ", sm_" _archs "sm_${FUSEDRT_CUDA_ARCHITECTURES}")
    set(_status "built (CUDA ${CUDAToolkit_VERSION}, cuBLASLt; ${_archs}; sm_90a for the Hopper attention)")
  endif()
endif()
set(FUSEDRT_WITH_CUDA ${FUSEDRT_WITH_CUDA} CACHE INTERNAL "the CUDA backend is built")
set(FUSEDRT_CUDA_STATUS "${_status}" CACHE INTERNAL "why the CUDA backend is or is not built")
message(STATUS "FusedRT CUDA backend: ${_status}")

if(FUSEDRT_WITH_CUDA)
  set(CMAKE_CUDA_COMPILER ${CUDAToolkit_NVCC_EXECUTABLE})
  set(CMAKE_CUDA_ARCHITECTURES ${FUSEDRT_CUDA_ARCHITECTURES})
  # The addon links the shared cudart itself; the kernels must not bring the static one.
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  enable_language(CUDA)
  add_library(fusedrt_cuda_kernels STATIC ${FUSEDRT_CUDA_KERNELS})
  set_target_properties(fusedrt_cuda_kernels PROPERTIES
    CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON POSITION_INDEPENDENT_CODE ON
    CUDA_ARCHITECTURES "${FUSEDRT_CUDA_ARCHITECTURES}")
  target_include_directories(fusedrt_cuda_kernels PRIVATE ${CMAKE_SOURCE_DIR}/native)
  target_compile_options(fusedrt_cuda_kernels PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3>)
  add_library(fusedrt_cuda_hopper_kernels STATIC ${FUSEDRT_CUDA_HOPPER_KERNELS})
  set_target_properties(fusedrt_cuda_hopper_kernels PROPERTIES
    CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON POSITION_INDEPENDENT_CODE ON CUDA_ARCHITECTURES OFF)
  target_include_directories(fusedrt_cuda_hopper_kernels PRIVATE ${CMAKE_SOURCE_DIR}/native)
  target_compile_options(fusedrt_cuda_hopper_kernels PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-O3 -gencode=arch=compute_90a,code=sm_90a>)
  target_link_libraries(fusedrt_cuda_kernels PUBLIC fusedrt_cuda_hopper_kernels)

  target_sources(fusedrt PRIVATE ${CMAKE_SOURCE_DIR}/native/cuda_backend.cpp ${CMAKE_SOURCE_DIR}/native/cuda_device.cpp ${CMAKE_SOURCE_DIR}/native/cuda_gemm.cpp)
  target_compile_definitions(fusedrt PRIVATE FUSEDRT_WITH_CUDA=1)
  target_include_directories(fusedrt PRIVATE ${FUSEDRT_CUBLASLT_INCLUDE_DIR})
  target_link_libraries(fusedrt PRIVATE fusedrt_cuda_kernels CUDA::cudart CUDA::cublasLt)
endif()
