// Would a large batch finish sooner as two or four smaller ones run side by
// side? (issue 3: 32 x 128 in 1.2 ms; the run takes ~1.47.) At 4096 rows
// every kernel of a layer ends in a partial wave: the QKV GEMM's 576 tiles
// are 4.4 waves of an H100's 132 SMs, the output projection's 192 are 1.45,
// attention and the LayerNorms are one partial wave each of warps waiting
// on memory. Split the batch's sequences into C groups and each group's
// layers are an independent chain; a CUDA graph runs the C chains at once,
// so one chain's kernels can fill the SMs another's tails leave idle, at the
// price of smaller kernels.
//
//   nvcc -std=c++17 -O3 -I native -gencode arch=compute_90a,code=sm_90a -c cuda/attention_hopper.cu -o /tmp/ah.o
//   nvcc -std=c++17 -O3 -I native -gencode arch=compute_90a,code=sm_90a bench/gpu/row_split_chains.cu \
//     cuda/attention.cu cuda/add_layernorm.cu /tmp/ah.o -lcublasLt -o /tmp/row_split_chains
//   /tmp/row_split_chains [sequences of 128 tokens ...]   (default 32)
//
// A layer is BERT-base's, with the backend's own attention and add_layernorm
// kernels and cuBLASLt GEMMs (each shape the fastest of the heuristic's
// first 8 workspace-free candidates, timed warm, as the backend's tuner
// picks for fp16): QKV + bias, attention, output projection, add_layernorm
// (+ bias, residual), FFN1 + bias + GELU, FFN2, add_layernorm. 12 layers,
// each its own weights (more than L2 holds, as in a run), captured as one
// graph; µs per run is the median of 50 replays, each behind an untimed one.
// Each split is timed with its chains side by side (a fork at the start, a
// join at the end) and one after another on one stream; the side-by-side
// output must equal the serial one bit for bit (exit status 1 if not: a
// missing dependency).
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

#include "../../cuda/add_layernorm.cuh"
#include "../../cuda/attention.cuh"
#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA, CHECK_CUBLAS, Rng, median_us, median_graph_us
#include "lt_gemm.cuh"                         // the backend's cuBLASLt set-up, its candidates

using fusedrt::test::median_graph_us;
using fusedrt::test::median_us;
using fusedrt::test::Rng;

namespace {

constexpr int kHidden = 768;
constexpr int kHeads = 12;
constexpr int kQkv = 3 * kHidden;
constexpr int kInter = 3072;
constexpr int kLayers = 12;
constexpr int kSeq = 128;

cublasLtHandle_t g_lt;

using fusedrt::probe::LtProblem;
using fusedrt::probe::LtShape;

using Gemm = fusedrt::probe::LtChoice;

std::map<LtShape, Gemm, fusedrt::probe::LtShapeLess> g_gemms;

void launch(const LtProblem& problem, const cublasLtMatmulAlgo_t& algo, const __half* in, const __half* weight,
            const __half* bias, __half* out, cudaStream_t stream) {
  fusedrt::probe::run_lt_problem(g_lt, problem, algo, in, weight, bias, out, nullptr, 0, stream);
}

// out[rows, n] = in[rows, k] . weight^T (+ epilogue), with the shape's tactic
// chosen on first use (outside any capture: every split runs eagerly first).
void gemm(int rows, int n, int k, cublasLtEpilogue_t epilogue, const __half* in, const __half* weight,
          const __half* bias, __half* out, cudaStream_t stream) {
  const LtShape shape{rows, n, k, k, k, n, false, epilogue};
  auto found = g_gemms.find(shape);
  if (found == g_gemms.end()) {
    CHECK_CUDA(cudaDeviceSynchronize());  // the run so far, before timing on its buffers
    Gemm g = fusedrt::probe::fastest_candidate(
        fusedrt::probe::make_lt_problem(g_lt, shape, 0, 8),
        [&](const LtProblem& problem, const cublasLtMatmulAlgo_t& algo) {
          return median_us([&](cudaStream_t s) { launch(problem, algo, in, weight, bias, out, s); }, 20, 15);
        });
    found = g_gemms.emplace(shape, std::move(g)).first;
  }
  launch(found->second.problem, found->second.algo, in, weight, bias, out, stream);
}

struct LayerWeights : fusedrt::probe::BertGemmWeights {
  float *o_bias, *ffn2_bias, *gamma, *beta;  // fp32, as the backend's add_layernorm takes them
};

template <class T>
T* device_copy(const std::vector<T>& host) {
  T* device = nullptr;
  CHECK_CUDA(cudaMalloc(&device, host.size() * sizeof(T)));
  CHECK_CUDA(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return device;
}

float* random_floats(size_t count, float lo, float hi, Rng& rng) {
  std::vector<float> host(count);
  for (auto& f : host) f = rng.uniform(lo, hi);
  return device_copy(host);
}

// One chain's rows: its sequences' activations, each [rows, width].
struct Chain {
  int rows = 0;
  int32_t* cu_seqlens = nullptr;
  __half *x, *qkv, *attention, *y, *h, *inter;
};

Chain make_chain(int sequences) {
  Chain c;
  c.rows = sequences * kSeq;
  std::vector<int32_t> cu(sequences + 1);
  for (int s = 0; s <= sequences; ++s) cu[s] = s * kSeq;
  c.cu_seqlens = device_copy(cu);
  const size_t rows = c.rows;
  for (auto [buffer, width] : {std::pair{&c.x, kHidden}, {&c.qkv, kQkv}, {&c.attention, kHidden}, {&c.y, kHidden},
                               {&c.h, kHidden}, {&c.inter, kInter}}) {
    CHECK_CUDA(cudaMalloc(buffer, rows * width * sizeof(__half)));
  }
  return c;
}

void add_layernorm(const LayerWeights& w, const __half* in, const float* bias, const __half* residual, __half* out,
                   int rows, cudaStream_t stream) {
  fusedrt::gpu::AddLayerNormArgs<__half> args{};
  args.in = in;
  args.residual = residual;
  args.bias = bias;
  args.gamma = w.gamma;
  args.beta = w.beta;
  args.eps = 1e-12f;
  args.rows = rows;
  args.cols = kHidden;
  args.out = out;
  CHECK_CUDA(fusedrt::gpu::add_layernorm(args, stream));
}

// One layer of one chain, x -> x.
void enqueue_layer(const LayerWeights& w, const Chain& c, cudaStream_t stream) {
  gemm(c.rows, kQkv, kHidden, CUBLASLT_EPILOGUE_BIAS, c.x, w.qkv, w.qkv_bias, c.qkv, stream);
  fusedrt::gpu::AttentionHalfParams p{};
  p.qkv = c.qkv;
  p.cu_seqlens = c.cu_seqlens;
  p.sequences = c.rows / kSeq;
  p.max_seqlen = kSeq;
  p.heads = kHeads;
  p.head_dim = kHidden / kHeads;
  p.scale = 0.125f;
  p.out = c.attention;
  CHECK_CUDA(fusedrt::gpu::launch_attention_fp16(p, stream));
  gemm(c.rows, kHidden, kHidden, CUBLASLT_EPILOGUE_DEFAULT, c.attention, w.o, nullptr, c.y, stream);
  add_layernorm(w, c.y, w.o_bias, c.x, c.h, c.rows, stream);
  gemm(c.rows, kInter, kHidden, CUBLASLT_EPILOGUE_GELU_BIAS, c.h, w.ffn1, w.ffn1_bias, c.inter, stream);
  gemm(c.rows, kHidden, kInter, CUBLASLT_EPILOGUE_DEFAULT, c.inter, w.ffn2, nullptr, c.y, stream);
  add_layernorm(w, c.y, w.ffn2_bias, c.h, c.x, c.rows, stream);
}

struct Streams {
  std::vector<cudaStream_t> side;
  cudaEvent_t fork;
  std::vector<cudaEvent_t> joins;
};

// Every layer of every chain; side_by_side: chain i > 0 on side stream i - 1,
// forked from and joined back to main.
void enqueue_run(const std::vector<LayerWeights>& layers, const std::vector<Chain>& chains, bool side_by_side,
                 cudaStream_t main, Streams& s) {
  if (side_by_side) CHECK_CUDA(cudaEventRecord(s.fork, main));
  for (size_t i = 0; i < chains.size(); ++i) {
    cudaStream_t stream = side_by_side && i > 0 ? s.side[i - 1] : main;
    if (stream != main) CHECK_CUDA(cudaStreamWaitEvent(stream, s.fork));
    for (const LayerWeights& w : layers) enqueue_layer(w, chains[i], stream);
    if (stream != main) CHECK_CUDA(cudaEventRecord(s.joins[i - 1], stream));
  }
  if (side_by_side) {
    for (size_t i = 1; i < chains.size(); ++i) CHECK_CUDA(cudaStreamWaitEvent(main, s.joins[i - 1]));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> batches;
  for (int i = 1; i < argc; ++i) batches.push_back(std::atoi(argv[i]));
  if (batches.empty()) batches.push_back(32);
  CHECK_CUBLAS(cublasLtCreate(&g_lt));
  Rng rng{20261123};
  std::vector<LayerWeights> layers(kLayers);
  for (auto& w : layers) {
    static_cast<fusedrt::probe::BertGemmWeights&>(w) = fusedrt::probe::random_bert_gemm_weights(kHidden, kInter, rng);
    w.o_bias = random_floats(kHidden, -0.05f, 0.05f, rng);
    w.ffn2_bias = random_floats(kHidden, -0.05f, 0.05f, rng);
    w.gamma = random_floats(kHidden, 0.9f, 1.1f, rng);
    w.beta = random_floats(kHidden, -0.05f, 0.05f, rng);
  }
  cudaStream_t main_stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&main_stream, cudaStreamNonBlocking));
  Streams streams;
  streams.side.resize(3);
  streams.joins.resize(3);
  for (auto& s : streams.side) CHECK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (auto& e : streams.joins) CHECK_CUDA(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  CHECK_CUDA(cudaEventCreateWithFlags(&streams.fork, cudaEventDisableTiming));

  std::printf("%d layers of BERT-base, sequences of %d tokens, cuBLASLt %zu\n\n", kLayers, kSeq, cublasLtGetVersion());
  std::printf("| batch | chains | us per run, one after another | side by side | side by side / one chain |\n");
  std::printf("| ---: | ---: | ---: | ---: | ---: |\n");
  for (const int batch : batches) {
    const size_t tokens = static_cast<size_t>(batch) * kSeq;
    const __half* input = fusedrt::probe::random_device_halves(tokens * kHidden, 1.f, rng);
    double one_chain_us = 0;
    for (const int count : {1, 2, 4}) {
      if (batch % count != 0) continue;
      std::vector<Chain> chains;
      for (int i = 0; i < count; ++i) chains.push_back(make_chain(batch / count));
      const auto reset = [&] {
        for (int i = 0; i < count; ++i) {
          const size_t rows = chains[i].rows;
          CHECK_CUDA(cudaMemcpy(chains[i].x, input + i * rows * kHidden, rows * kHidden * 2, cudaMemcpyDeviceToDevice));
        }
      };
      const auto read = [&] {
        CHECK_CUDA(cudaStreamSynchronize(main_stream));
        std::vector<__half> out(tokens * kHidden);
        for (int i = 0; i < count; ++i) {
          const size_t rows = chains[i].rows;
          CHECK_CUDA(cudaMemcpy(out.data() + i * rows * kHidden, chains[i].x, rows * kHidden * 2, cudaMemcpyDeviceToHost));
        }
        return out;
      };
      // Eagerly and in sequence once: tunes every shape outside any capture.
      reset();
      enqueue_run(layers, chains, false, main_stream, streams);
      const std::vector<__half> serial = read();
      double us[2];
      for (int side_by_side = 0; side_by_side < 2; ++side_by_side) {
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CHECK_CUDA(cudaStreamBeginCapture(main_stream, cudaStreamCaptureModeThreadLocal));
        enqueue_run(layers, chains, side_by_side, main_stream, streams);
        CHECK_CUDA(cudaStreamEndCapture(main_stream, &graph));
        CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
        reset();
        CHECK_CUDA(cudaGraphLaunch(exec, main_stream));
        if (std::memcmp(read().data(), serial.data(), serial.size() * sizeof(__half)) != 0) {
          std::fprintf(stderr, "batch %d, %d chains: the graph's output differs from the eager run's\n", batch, count);
          return 1;
        }
        us[side_by_side] = median_graph_us(exec, main_stream, 50);
        CHECK_CUDA(cudaGraphExecDestroy(exec));
        CHECK_CUDA(cudaGraphDestroy(graph));
      }
      if (count == 1) one_chain_us = us[0];
      std::printf("| %d | %d | %.1f | %.1f | %.3f |\n", batch, count, us[0], us[1], us[1] / one_chain_us);
    }
  }
  return 0;
}
