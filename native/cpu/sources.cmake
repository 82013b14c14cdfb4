# CPU backend: op sources, BLAS detection and the op test binary.
# Include from the top-level CMakeLists.txt after project():
#   include(native/cpu/sources.cmake)
# Sets, for the addon target:
#   FUSEDRT_CPU_SOURCES       absolute paths of the op sources
#   FUSEDRT_CPU_INCLUDE_DIRS  include directories (this folder, cblas.h)
#   FUSEDRT_CPU_DEFINITIONS   compile definitions (FUSEDRT_HAVE_OPENBLAS=1)
#   FUSEDRT_CPU_LIBRARIES     link libraries (threads, OpenBLAS)
#   FUSEDRT_HAVE_OPENBLAS     ON when gemm uses OpenBLAS
# and defines the executable fusedrt_cpu_ops_test in ${CMAKE_BINARY_DIR}/Release.

option(FUSEDRT_FORCE_BUILTIN_GEMM "Use the built-in GEMM even when OpenBLAS is found" OFF)

set(FUSEDRT_CPU_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/thread_pool.cpp
  ${CMAKE_CURRENT_LIST_DIR}/embed_layernorm.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gemm.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gemm_packed.cpp
  ${CMAKE_CURRENT_LIST_DIR}/topk.cpp
  ${CMAKE_CURRENT_LIST_DIR}/attention.cpp
  ${CMAKE_CURRENT_LIST_DIR}/attention_rows.cpp
  ${CMAKE_CURRENT_LIST_DIR}/add_layernorm.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gather_rows.cpp
  ${CMAKE_CURRENT_LIST_DIR}/mean_rows.cpp
  ${CMAKE_CURRENT_LIST_DIR}/half.cpp)

# The built-in GEMM kernel relies on a*b+c becoming one FMA instruction in its
# AVX2 clone; ISO mode (CMAKE_CXX_EXTENSIONS OFF) turns that contraction off.
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/gemm.cpp PROPERTIES COMPILE_OPTIONS -ffp-contract=fast)
endif()

find_package(Threads REQUIRED)
set(FUSEDRT_CPU_INCLUDE_DIRS ${CMAKE_CURRENT_LIST_DIR})
set(FUSEDRT_CPU_DEFINITIONS "")
set(FUSEDRT_CPU_LIBRARIES Threads::Threads)
set(FUSEDRT_HAVE_OPENBLAS OFF)

if(NOT FUSEDRT_FORCE_BUILTIN_GEMM)
  # openblas_config.h only ships with OpenBLAS, so this cannot pick up the
  # cblas.h of another BLAS. Debian/Ubuntu keep it in the multiarch include
  # dir (and per-variant subfolders), Fedora and Homebrew under openblas/.
  find_path(FUSEDRT_OPENBLAS_INCLUDE_DIR
    NAMES openblas_config.h
    HINTS /usr/include/${CMAKE_LIBRARY_ARCHITECTURE} /usr/include/x86_64-linux-gnu
          /opt/homebrew/opt/openblas/include /usr/local/opt/openblas/include
    PATH_SUFFIXES openblas openblas-pthread openblas-openmp)
  find_library(FUSEDRT_OPENBLAS_LIBRARY
    NAMES openblas
    HINTS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE} /usr/lib/x86_64-linux-gnu
          /opt/homebrew/opt/openblas/lib /usr/local/opt/openblas/lib
    PATH_SUFFIXES openblas-pthread openblas-openmp)
  if(FUSEDRT_OPENBLAS_INCLUDE_DIR AND FUSEDRT_OPENBLAS_LIBRARY
     AND EXISTS ${FUSEDRT_OPENBLAS_INCLUDE_DIR}/cblas.h)
    set(FUSEDRT_HAVE_OPENBLAS ON)
    list(APPEND FUSEDRT_CPU_DEFINITIONS FUSEDRT_HAVE_OPENBLAS=1)
    list(APPEND FUSEDRT_CPU_INCLUDE_DIRS ${FUSEDRT_OPENBLAS_INCLUDE_DIR})
    list(APPEND FUSEDRT_CPU_LIBRARIES ${FUSEDRT_OPENBLAS_LIBRARY})
  endif()
endif()
if(FUSEDRT_HAVE_OPENBLAS)
  message(STATUS "FusedRT CPU gemm: OpenBLAS (${FUSEDRT_OPENBLAS_LIBRARY})")
else()
  message(STATUS "FusedRT CPU gemm: built-in kernel")
endif()

add_executable(fusedrt_cpu_ops_test
  ${CMAKE_CURRENT_LIST_DIR}/../tests/cpu_ops_test.cpp
  ${FUSEDRT_CPU_SOURCES})
target_include_directories(fusedrt_cpu_ops_test PRIVATE ${FUSEDRT_CPU_INCLUDE_DIRS})
target_compile_definitions(fusedrt_cpu_ops_test PRIVATE ${FUSEDRT_CPU_DEFINITIONS})
target_link_libraries(fusedrt_cpu_ops_test PRIVATE ${FUSEDRT_CPU_LIBRARIES})
# $<1:...> keeps multi-config generators from appending a per-config folder:
# the mocha test looks for the binary next to the addon, in build/Release.
set_target_properties(fusedrt_cpu_ops_test PROPERTIES
  CXX_STANDARD 17
  CXX_STANDARD_REQUIRED ON
  RUNTIME_OUTPUT_DIRECTORY $<1:${CMAKE_BINARY_DIR}/Release>)
