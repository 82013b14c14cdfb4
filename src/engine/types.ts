/** The engine contract: what nodes, the CLI and benchmarks use. */
import type { PlanHeader } from '../build/plan-types';

/** `auto` takes CUDA when the addon was built with it and a GPU is present, else the CPU. */
export type DeviceOption = 'cpu' | 'cuda' | 'auto' | `cuda:${number}`;

/** EngineOptions.cpuPriority. */
export type CpuPriority = 'background' | 'normal';

export interface EngineOptions {
  /** Which backend runs the plan. Default: 'auto'. */
  device?: DeviceOption;
  /** CPU threads for this engine (0: one per core). Default: 0. */
  threads?: number;
  /**
   * CPU only: 'background' runs the engine's threads below the process's
   * priority (Linux: nice + 10), so that Node's event loop gets a core as
   * soon as it wakes even while a run keeps every core busy; on an idle
   * machine runs are as fast either way. 'normal' keeps the process's
   * priority, for a machine where other programs compete for the cores and
   * inference should not yield to them. Other systems than Linux run at
   * normal priority either way. Default: 'background'.
   */
  cpuPriority?: CpuPriority;
  /**
   * Execution contexts, 1 to 16: how many runs of this engine may be in
   * flight at once, each with its own workspace (and, on CUDA, its own
   * stream). On CUDA their work overlaps on the GPU; on the CPU the kernels
   * of different contexts run one after another (each uses every thread),
   * so more than 1 only overlaps the host-side work. Each context costs one
   * workspace (info.workspaceBytes counts them all). Engine.run's batcher
   * keeps up to this many merged batches in flight (docs/runtime.md,
   * "Concurrency"). Default: 2 on CUDA, 1 on the CPU.
   */
  contexts?: number;
  /** Most tokens in one packed batch; sizes the workspace. Default: 2048. */
  maxTokens?: number;
  /** Most sequences in one packed batch. Default: 64. */
  maxSequences?: number;
  /**
   * Most selected rows (e.g. [MASK] positions) in one packed batch; an MLM
   * head's logits take this many rows times the vocabulary. Default: 256.
   */
  maxSelectedRows?: number;
  /**
   * CUDA only: record the work of each launch shape (bucket of batch sizes)
   * once as a CUDA graph and replay it, which removes most per-kernel launch
   * cost; false launches every kernel on each run. Results are identical
   * either way. Default: true.
   */
  cudaGraphs?: boolean;
  /**
   * CUDA only: a replayed run (CUDA graphs) is settled by the JS thread
   * polling for its end between other callbacks (setImmediate turns), not
   * by a libuv worker waiting for it: about 30-90 µs sooner per run (H100),
   * for one busy CPU core while runs are in flight. The event loop keeps
   * turning; docs/runtime.md, "Spin wait", has its measured stalls. Runs
   * with more than 1 MB of outputs to copy always use a worker (outputs the
   * GPU wrote into their results copy nothing). Default: true.
   */
  spinWait?: boolean;
  /**
   * How long the batcher waits for more requests before running a batch, in
   * milliseconds. With 0 a request runs on the next turn of the event loop;
   * requests that arrive while a batch is running are merged either way. Default: 0.
   */
  batchWindowMs?: number;
}

/** One packed, padding-free batch (docs/plan-format.md, "Inputs of a run"). */
export interface PackedBatch {
  inputIds: Int32Array;
  tokenTypeIds?: Int32Array;
  /** [B + 1] sequence boundaries into inputIds, starting at 0. */
  cuSeqlens: Int32Array;
  /** Token indices (into inputIds) for outputs computed on selected rows only, e.g. [MASK] positions. */
  selectedRows?: Int32Array;
  /** Names of the plan outputs wanted. Default: all outputs the batch can produce. */
  outputs?: string[];
  /**
   * 1..64: outputs with selected rows (an MLM's logits) come back as the
   * softmax top-k of each row ({@link TopKTensor}), computed by the backend,
   * instead of full rows: only rows × k ids and scores leave the device.
   * Other outputs are unaffected. Default: undefined (full rows).
   */
  topK?: number;
}

export interface OutputTensor {
  /** Row-major [rows, cols]. */
  data: Float32Array;
  rows: number;
  cols: number;
}

/**
 * A selected-rows output of a run with `topK`: per row, the k most probable
 * token ids and their softmax probabilities (fp32, over the whole row), best
 * first; equal logits keep the lower id first.
 */
export interface TopKTensor {
  /** Row-major [rows, k]. */
  topIds: Int32Array;
  /** Row-major [rows, k], softmax probabilities matching topIds. */
  topScores: Float32Array;
  rows: number;
  k: number;
}

/**
 * The outputs of a run, by name. On CUDA the object also has a
 * non-enumerable `gpuMs` (read it with `runGpuMs()` of run-result.ts): the device time of the
 * run it came from.
 */
export type RunResult = Record<string, OutputTensor>;

/** The outputs of a run that may have asked for `topK`. */
export type TopKRunResult = Record<string, OutputTensor | TopKTensor>;

/** The GPU an engine runs on. */
export interface EngineDevice {
  /** As the driver names it, e.g. 'NVIDIA H100 80GB HBM3'. */
  name: string;
  /** The N of cuda:N. */
  ordinal: number;
  /**
   * Engines of this process on the GPU, this one included, when the info
   * was read (Engine.info: at load); they share one cuBLASLt handle
   * (docs/cuda.md, "The shared device").
   */
  engines: number;
  multiprocessors: number;
  memoryBytes: number;
}

export interface EngineInfo {
  backend: 'cpu' | 'cuda';
  /** How the CPU backend runs GEMMs: 'openblas' or 'builtin'. */
  blas: string;
  threads: number;
  /** CPU only: the priority its threads run at (EngineOptions.cpuPriority). */
  cpuPriority?: CpuPriority;
  /** Execution contexts: runs that may be in flight at once (EngineOptions.contexts). */
  contexts: number;
  /** Whether the work of different contexts overlaps on the device: true on CUDA, false on the CPU. */
  contextsOverlap: boolean;
  /** CUDA only: the GPU. */
  device?: EngineDevice;
  /**
   * Device 'auto' only, when it passed over GPUs the CUDA backend cannot run
   * on (compute capability below 8.0, or a driver older than the build's
   * CUDA): which, and why.
   */
  passedOver?: string;
  maxTokens: number;
  maxSequences: number;
  maxSelectedRows: number;
  /** Bytes of weights resident in the backend's memory. */
  weightBytes: number;
  /** Bytes of planned activation workspace of all contexts, including the host staging of inputs and outputs. */
  workspaceBytes: number;
  header: PlanHeader;
}
