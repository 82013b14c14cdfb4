// A CUPTI injection library that writes every kernel the process runs, as
// the GPU ran it: start and end (ns), whether it ran as a node of a CUDA
// graph, and its name. Nsight Systems is not on the GPU machine; this is
// the part of it graph-profile.sh needs. Load it with
//   CUDA_INJECTION64_PATH=/tmp/libkernel_trace.so FUSEDRT_KERNEL_TRACE=out.csv node ...
// (the CUDA driver calls InitializeInjection when the process first uses
// CUDA). Records are collected in CUPTI's buffers and written when a buffer
// fills and at exit. graph-profile.sh builds it (g++ -shared -fPIC against
// CUPTI's headers and libcupti).
#include <cupti.h>
#include <cxxabi.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace {

FILE* g_out = nullptr;
std::mutex g_out_mutex;
constexpr size_t kBufferBytes = size_t{16} << 20;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = *buffer != nullptr ? kBufferBytes : 0;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  std::lock_guard<std::mutex> lock(g_out_mutex);
  CUpti_Activity* record = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
    const auto* kernel = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
    int status = 0;
    char* demangled = abi::__cxa_demangle(kernel->name, nullptr, nullptr, &status);
    // Commas inside template arguments would split the CSV row: the name goes last.
    std::fprintf(g_out, "%llu,%llu,%d,%s\n", static_cast<unsigned long long>(kernel->start),
                 static_cast<unsigned long long>(kernel->end), kernel->graphNodeId != 0 ? 1 : 0,
                 status == 0 && demangled != nullptr ? demangled : kernel->name);
    std::free(demangled);
  }
  std::free(buffer);
}

void flush_at_exit() {
  cuptiActivityFlushAll(1);
  std::lock_guard<std::mutex> lock(g_out_mutex);
  if (g_out != nullptr) std::fclose(g_out);
  g_out = nullptr;
}

}  // namespace

extern "C" int InitializeInjection() {
  const char* path = std::getenv("FUSEDRT_KERNEL_TRACE");
  g_out = std::fopen(path != nullptr ? path : "kernels.csv", "w");
  if (g_out == nullptr) return 0;
  std::fprintf(g_out, "start_ns,end_ns,graph_node,name\n");
  if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
      cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) {
    std::fprintf(stderr, "kernel_trace: CUPTI refused the kernel activity\n");
    return 0;
  }
  std::atexit(flush_at_exit);
  return 1;
}
