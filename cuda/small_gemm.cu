// fp16 GEMM for few rows (small_gemm.cuh), on mma.sync tensor cores.
//
// A block computes one output tile of kTileRows x 64 over one split of K,
// with 4 warps. A (the activations, [rows, k]) and B (the weight, [n, k]: K
// contiguous, which is the "col" operand of mma.m16n8k16 as stored) stream
// through shared memory in stages of 64 k. At batch 1 the work is streaming
// the weight from DRAM with few blocks, so what sets the speed is how many
// bytes each block has in flight: with 32-wide stages and 3 in flight (24
// KB), a BERT-base GEMM ran at 200-400 GB/s on an H100, each stage waiting
// out most of a DRAM round trip. So stages are 64 wide and as many as fit in
// 96 KB of shared memory are in flight (the most a block gets on sm_86 and
// sm_89): 4 of 5 for 64-row tiles (74 KB in flight), 7 of 8 for 16-row ones.
//
// Split K: with splits > 1, every block of a tile writes its fp32 partial
// tile to the workspace (in the order its threads hold it, so each thread
// later reads back its own elements: coalesced, no shared memory), and the
// last block of the tile to arrive sums all partials in split order (the
// result does not depend on which block came last), adds the bias, applies
// the activation and stores (fp16, or fp32 for logits). That block also
// resets the tile's counter, so the next launch finds it zero.
#include "small_gemm.cuh"

#include <algorithm>
#include <climits>

#include "activation.cuh"
#include "row_math.cuh"
#include "tensor_core.cuh"

namespace fusedrt::gpu {

namespace {

constexpr int kTileCols = 64;
constexpr int kStageK = kSmallGemmStageK;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kMaxSplits = 64;
constexpr int kSharedBudget = 96 * 1024;
constexpr int kMaxStages = 8;
// Shared-memory row stride in halves: 144 bytes, so the 8 row addresses of
// one ldmatrix fall in 8 different 16-byte bank groups.
constexpr int kRowStride = kStageK + 8;
constexpr int kChunksPerRow = kStageK / 8;  // 16-byte chunks, the unit of cp.async

template <int kTileRowsT>
struct SmallGemmTraits {
  static constexpr int kTileRows = kTileRowsT;
  static constexpr int kWarpsM = kTileRows >= 64 ? 2 : 1;
  static constexpr int kWarpsN = kWarps / kWarpsM;
  static constexpr int kWarpRows = kTileRows / kWarpsM;
  static constexpr int kWarpCols = kTileCols / kWarpsN;
  static constexpr int kMTiles = kWarpRows / 16;  // m16 tiles per warp
  static constexpr int kNTiles = kWarpCols / 8;   // n8 tiles per warp
  static_assert(kWarpRows % 16 == 0 && kNTiles % 2 == 0, "one ldmatrix.x4 loads two n8 tiles of B");
  // A's rows, then B's, with one stride: a stage is one array.
  static constexpr int kStageHalves = (kTileRows + kTileCols) * kRowStride;
  static constexpr int kStageBytes = kStageHalves * static_cast<int>(sizeof(__half));
  static constexpr int kStages = kSharedBudget / kStageBytes < kMaxStages ? kSharedBudget / kStageBytes : kMaxStages;
  static constexpr int kSharedBytes = kStages * kStageBytes;
  static constexpr int kTileElements = kTileRows * kTileCols;
  static constexpr int kVectorsPerThread = kTileElements / 4 / kThreads;  // float4 accumulators
  static_assert(kVectorsPerThread == kMTiles * kNTiles, "each thread holds kMTiles x kNTiles fragments of 4");
};

struct SplitRange {
  int64_t k_begin;
  int64_t k_end;
  int stages;
};

// Splits take whole stages, the first ones one more when they do not divide.
__device__ __forceinline__ SplitRange split_range(int64_t k, int splits, int split) {
  const int64_t stages_total = (k + kStageK - 1) / kStageK;
  const int64_t base = stages_total / splits;
  const int64_t extra = stages_total % splits;
  const int64_t first_stage = split * base + min(int64_t{split}, extra);
  const int64_t stages = base + (split < extra ? 1 : 0);
  const int64_t k_begin = min(k, first_stage * kStageK);
  return {k_begin, min(k, k_begin + stages * kStageK), static_cast<int>(stages)};
}

// Copies kRows rows (first_row on, of `rows`) of a [rows, k] matrix,
// columns k0 to k0 + kStageK, into tile [kRows][kRowStride]. Rows past
// `rows` and columns past k_end are zero-filled; k is a multiple of 8, so a
// 16-byte chunk is all in or all out.
template <int kRows>
__device__ __forceinline__ void load_rows(__half* tile, const __half* matrix, int64_t rows, int64_t k,
                                          int64_t first_row, int64_t k0, int64_t k_end) {
  constexpr int kChunks = kRows * kChunksPerRow;
#pragma unroll
  for (int i = 0; i < (kChunks + kThreads - 1) / kThreads; ++i) {
    const int c = threadIdx.x + i * kThreads;
    if (kChunks % kThreads != 0 && c >= kChunks) break;
    const int r = c / kChunksPerRow;
    const int chunk = c % kChunksPerRow;
    const int64_t kk = k0 + chunk * 8;
    const bool valid = first_row + r < rows && kk < k_end;
    cp_async_16(tile + r * kRowStride + chunk * 8, valid ? matrix + (first_row + r) * k + kk : matrix, valid);
  }
}

// One stage: the activations' tile (A), then the weight's (B).
template <class Traits, class Out>
__device__ __forceinline__ void load_stage(__half* stage, const SmallGemmArgs<Out>& p, int64_t row0, int64_t col0,
                                           int64_t k0, int64_t k_end) {
  load_rows<Traits::kTileRows>(stage, p.in, p.rows, p.k, row0, k0, k_end);
  load_rows<kTileCols>(stage + Traits::kTileRows * kRowStride, p.weight, p.n, p.k, col0, k0, k_end);
}

template <class Traits>
__device__ __forceinline__ void multiply_stage(const __half* stage, int warp_m, int warp_n, int lane,
                                               float (&acc)[Traits::kMTiles][Traits::kNTiles][4]) {
  const __half* a_tile = stage + warp_m * Traits::kWarpRows * kRowStride;
  const __half* b_tile = stage + (Traits::kTileRows + warp_n * Traits::kWarpCols) * kRowStride;
#pragma unroll
  for (int kk = 0; kk < kStageK; kk += 16) {
    uint32_t a[Traits::kMTiles][4];
#pragma unroll
    for (int mi = 0; mi < Traits::kMTiles; ++mi) {
      ldmatrix_x4(a[mi], a_tile + (mi * 16 + lane % 16) * kRowStride + kk + (lane / 16) * 8);
    }
#pragma unroll
    for (int nj = 0; nj < Traits::kNTiles / 2; ++nj) {
      uint32_t b[4];  // columns nj*16 + 0..7 then + 8..15, each for k kk + 0..7 and + 8..15
      const int column = nj * 16 + (lane % 8) + (lane / 16) * 8;
      ldmatrix_x4(b, b_tile + column * kRowStride + kk + ((lane / 8) % 2) * 8);
#pragma unroll
      for (int mi = 0; mi < Traits::kMTiles; ++mi) {
        mma_16816(acc[mi][2 * nj], a[mi], b[0], b[1]);
        mma_16816(acc[mi][2 * nj + 1], a[mi], b[2], b[3]);
      }
    }
  }
}

// Returns false in every block of a tile but the last to arrive, which gets
// the sum of all splits' partials in acc.
template <class Traits, class Out>
__device__ __forceinline__ bool reduce_splits(const SmallGemmArgs<Out>& p, int splits, int split,
                                              float (&acc)[Traits::kMTiles][Traits::kNTiles][4]) {
  __shared__ bool last_block;
  const int64_t tile = int64_t{blockIdx.y} * gridDim.x + blockIdx.x;
  float4* partials = reinterpret_cast<float4*>(p.partials + tile * splits * Traits::kTileElements);
  constexpr int kVectorsPerSplit = Traits::kTileElements / 4;
  float4* mine = partials + split * kVectorsPerSplit;
#pragma unroll
  for (int mi = 0; mi < Traits::kMTiles; ++mi) {
#pragma unroll
    for (int ni = 0; ni < Traits::kNTiles; ++ni) {
      const float(&f)[4] = acc[mi][ni];
      __stcg(mine + (mi * Traits::kNTiles + ni) * kThreads + threadIdx.x, make_float4(f[0], f[1], f[2], f[3]));
    }
  }
  __threadfence();  // the partial is visible before the counter says so
  __syncthreads();
  if (threadIdx.x == 0) {
    const int arrived = atomicAdd(p.tile_counters + tile, 1);
    last_block = arrived == splits - 1;
    if (last_block) p.tile_counters[tile] = 0;  // every other block of the tile has counted
  }
  __syncthreads();
  if (!last_block) return false;
  __threadfence();
#pragma unroll
  for (int mi = 0; mi < Traits::kMTiles; ++mi) {
#pragma unroll
    for (int ni = 0; ni < Traits::kNTiles; ++ni) {
      const int vector = (mi * Traits::kNTiles + ni) * kThreads + threadIdx.x;
      float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
      for (int s = 0; s < splits; ++s) {
        const float(&f)[4] = acc[mi][ni];
        const float4 x =
            s == split ? make_float4(f[0], f[1], f[2], f[3]) : __ldcg(partials + s * kVectorsPerSplit + vector);
        sum.x += x.x;
        sum.y += x.y;
        sum.z += x.z;
        sum.w += x.w;
      }
      acc[mi][ni][0] = sum.x;
      acc[mi][ni][1] = sum.y;
      acc[mi][ni][2] = sum.z;
      acc[mi][ni][3] = sum.w;
    }
  }
  return true;
}

// A pair of adjacent outputs, as one store.
__device__ __forceinline__ void store_pair(__half* out, float x0, float x1) {
  *reinterpret_cast<__half2*>(out) = __floats2half2_rn(x0, x1);
}
__device__ __forceinline__ void store_pair(float* out, float x0, float x1) {
  *reinterpret_cast<float2*>(out) = make_float2(x0, x1);
}
__device__ __forceinline__ float2 load_pair(const __half* in) {
  return __half22float2(*reinterpret_cast<const __half2*>(in));
}
__device__ __forceinline__ float2 load_pair(const float* in) { return *reinterpret_cast<const float2*>(in); }

template <class Traits, class Out>
__global__ void __launch_bounds__(kThreads) small_gemm_kernel(const SmallGemmArgs<Out> p, int splits) {
  constexpr int kStages = Traits::kStages;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  __half* stages = reinterpret_cast<__half*>(shared_bytes);
  const int64_t col0 = int64_t{blockIdx.x} * kTileCols;
  const int64_t row0 = int64_t{blockIdx.y} * Traits::kTileRows;
  const int split = static_cast<int>(blockIdx.z);
  const SplitRange range = split_range(p.k, splits, split);
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int warp_m = warp / Traits::kWarpsN;
  const int warp_n = warp % Traits::kWarpsN;

  float acc[Traits::kMTiles][Traits::kNTiles][4];
#pragma unroll
  for (int mi = 0; mi < Traits::kMTiles; ++mi) {
#pragma unroll
    for (int ni = 0; ni < Traits::kNTiles; ++ni) {
      acc[mi][ni][0] = acc[mi][ni][1] = acc[mi][ni][2] = acc[mi][ni][3] = 0.f;
    }
  }

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < range.stages) {
      load_stage<Traits>(stages + s * Traits::kStageHalves, p, row0, col0, range.k_begin + int64_t{s} * kStageK,
                         range.k_end);
    }
    cp_async_commit();
  }
  for (int s = 0; s < range.stages; ++s) {
    cp_async_wait<kStages - 2>();  // stage s has landed (this thread's copies)
    // Everyone's copies of stage s are visible, and every warp is done with
    // stage s - 1, whose buffer is refilled next.
    __syncthreads();
    const int next = s + kStages - 1;
    if (next < range.stages) {
      load_stage<Traits>(stages + (next % kStages) * Traits::kStageHalves, p, row0, col0,
                         range.k_begin + int64_t{next} * kStageK, range.k_end);
    }
    cp_async_commit();
    multiply_stage<Traits>(stages + (s % kStages) * Traits::kStageHalves, warp_m, warp_n, lane, acc);
  }
  cp_async_wait<0>();

  if (splits > 1 && !reduce_splits<Traits>(p, splits, split, acc)) return;

  const int g = lane / 4;
  const int t = lane % 4;
#pragma unroll
  for (int mi = 0; mi < Traits::kMTiles; ++mi) {
#pragma unroll
    for (int ni = 0; ni < Traits::kNTiles; ++ni) {
      const int64_t col = col0 + warp_n * Traits::kWarpCols + ni * 8 + 2 * t;
      if (col >= p.n) continue;  // n is even, so col + 1 < n too
      float2 bias = make_float2(0.f, 0.f);
      if (p.bias != nullptr) bias = load_pair(p.bias + col);
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int64_t row = row0 + warp_m * Traits::kWarpRows + mi * 16 + g + half * 8;
        if (row >= p.rows) continue;
        const float x0 = activate(acc[mi][ni][2 * half] + bias.x, p.activation);
        const float x1 = activate(acc[mi][ni][2 * half + 1] + bias.y, p.activation);
        store_pair(p.out + row * p.n + col, x0, x1);
      }
    }
  }
}

// nullptr is not aligned: every pointer the kernel reads or writes is required.
bool aligned_to(const void* p, uintptr_t bytes) {
  return p != nullptr && reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

int64_t tiles_of(int64_t rows, int64_t n, int tile_rows) {
  return ((n + kTileCols - 1) / kTileCols) * ((rows + tile_rows - 1) / tile_rows);
}

template <int kTileRows, class Out>
cudaError_t launch(const SmallGemmArgs<Out>& p, int splits, cudaStream_t stream) {
  using Traits = SmallGemmTraits<kTileRows>;
  const auto kernel = small_gemm_kernel<Traits, Out>;
  // On every launch, as for attention: the attribute is per device, and cheap.
  const cudaError_t opted_in =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Traits::kSharedBytes);
  if (opted_in != cudaSuccess) return opted_in;
  const dim3 grid(static_cast<unsigned>((p.n + kTileCols - 1) / kTileCols),
                  static_cast<unsigned>((p.rows + kTileRows - 1) / kTileRows), static_cast<unsigned>(splits));
  kernel<<<grid, kThreads, Traits::kSharedBytes, stream>>>(p, splits);
  return cudaGetLastError();
}

}  // namespace

bool small_gemm_supports_shape(int64_t rows, int64_t n, int64_t k, const SmallGemmConfig& config) {
  const int tile_rows = config.tile_rows;
  if (tile_rows != 16 && tile_rows != 32 && tile_rows != 64) return false;
  if (rows <= 0 || n <= 0 || k <= 0 || k % 8 != 0 || n % 2 != 0) return false;
  if ((rows + tile_rows - 1) / tile_rows > 65535 || (n + kTileCols - 1) / kTileCols > INT32_MAX) return false;
  return config.splits >= 1 && config.splits <= small_gemm_max_splits(k);
}

template <class Out>
bool small_gemm_supports(const SmallGemmArgs<Out>& p, const SmallGemmConfig& config) {
  if (!small_gemm_supports_shape(p.rows, p.n, p.k, config)) return false;
  if (config.splits > 1 && (p.tile_counters == nullptr || !aligned_to(p.partials, kSmallGemmLoadAlignment))) {
    return false;
  }
  return aligned_to(p.in, kSmallGemmLoadAlignment) && aligned_to(p.weight, kSmallGemmLoadAlignment) &&
         aligned_to(p.out, small_gemm_store_alignment(sizeof(Out))) &&
         (p.bias == nullptr || aligned_to(p.bias, small_gemm_store_alignment(sizeof(Out))));
}

int small_gemm_max_splits(int64_t k) {
  return static_cast<int>(std::min<int64_t>(kMaxSplits, (k + kStageK - 1) / kStageK));
}

int64_t small_gemm_tiles(int64_t rows, int64_t n, const SmallGemmConfig& config) {
  return tiles_of(rows, n, config.tile_rows);
}

size_t small_gemm_workspace_bytes(int64_t rows, int64_t n, const SmallGemmConfig& config) {
  if (config.splits <= 1) return 0;
  return static_cast<size_t>(tiles_of(rows, n, config.tile_rows)) * static_cast<size_t>(config.splits) *
         static_cast<size_t>(config.tile_rows) * kTileCols * sizeof(float);
}

template <class Out>
cudaError_t small_gemm(const SmallGemmArgs<Out>& args, const SmallGemmConfig& config, cudaStream_t stream) {
  if (!small_gemm_supports(args, config)) return cudaErrorInvalidValue;
  switch (config.tile_rows) {
    case 16: return launch<16>(args, config.splits, stream);
    case 32: return launch<32>(args, config.splits, stream);
    default: return launch<64>(args, config.splits, stream);
  }
}

template bool small_gemm_supports(const SmallGemmArgs<__half>&, const SmallGemmConfig&);
template bool small_gemm_supports(const SmallGemmArgs<float>&, const SmallGemmConfig&);
template cudaError_t small_gemm(const SmallGemmArgs<__half>&, const SmallGemmConfig&, cudaStream_t);
template cudaError_t small_gemm(const SmallGemmArgs<float>&, const SmallGemmConfig&, cudaStream_t);

}  // namespace fusedrt::gpu
