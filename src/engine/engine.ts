/**
 * The engine façade: one loaded plan on one backend, a tokenizer from the
 * plan, and a batcher in front of the native engine and its execution
 * contexts.
 */
import * as fs from 'fs';
import * as os from 'os';
import { FusedRTError } from '../errors';
import { alignUp } from '../build/plan-file';
import type { PlanHeader, RowsKind, Task } from '../build/plan-types';
import { createTokenizer } from '../tokenize/tokenizer';
import type { FusedTokenizer } from '../tokenize/types';
import { Batcher, ResolvedBatch } from './batcher';
import { loadAddon, type CudaDeviceReport, NativeEngine } from './native';
import type {
  CpuPriority, DeviceOption, EngineInfo, EngineOptions, PackedBatch, RunResult, TopKRunResult,
} from './types';

/**
 * The outputs each task is read from. Embeddings: each text's vector under
 * both poolings, pooled by the engine (one row per text each); plans built
 * before those outputs existed have all theirs, `hidden` among them.
 */
const TASK_OUTPUTS: Record<Task, string[]> = {
  'fill-mask': ['logits'],
  classification: ['logits'],
  'token-classification': ['logits'],
  'question-answering': ['span_logits'],
  embedding: ['mean', 'cls'],
};

/** The largest `topK` a run may ask for (native/cpu/topk.h, kMaxTopK). */
export const MAX_TOP_K = 64;

/** The most execution contexts of one engine (native/runtime.h, kMaxContexts). */
export const MAX_CONTEXTS = 16;

export const ENGINE_DEFAULTS = {
  device: 'auto' as DeviceOption,
  threads: 0,
  cpuPriority: 'background' as CpuPriority,
  maxTokens: 2048,
  maxSequences: 64,
  maxSelectedRows: 256,
  batchWindowMs: 0,
  cudaGraphs: true,
  spinWait: true,
};

function positiveInteger(value: number, name: string, allowZero = false): number {
  const least = allowZero ? 0 : 1;
  if (!Number.isInteger(value) || value < least || value > 1 << 24) {
    throw new FusedRTError('E_INPUT', `${name} must be an integer from ${least} to ${1 << 24}, got ${value}`);
  }
  return value;
}

function cpuPriorityOption(value: unknown): CpuPriority {
  if (value !== 'background' && value !== 'normal') {
    throw new FusedRTError('E_INPUT', `cpuPriority must be "background" or "normal", got ${JSON.stringify(value)}`);
  }
  return value;
}

/** undefined leaves the default to the addon, which knows the backend (2 on CUDA, 1 on the CPU). */
function contextsOption(value: number | undefined): number | undefined {
  if (value !== undefined && (!Number.isInteger(value) || value < 1 || value > MAX_CONTEXTS)) {
    throw new FusedRTError('E_INPUT', `contexts must be an integer in [1, ${MAX_CONTEXTS}], got ${value}`);
  }
  return value;
}

function booleanOption(value: boolean, name: string): boolean {
  if (typeof value !== 'boolean') throw new FusedRTError('E_INPUT', `${name} must be true or false, got ${JSON.stringify(value)}`);
  return value;
}

/** The device a load asks the addon for, and, for 'auto', the GPUs it passed over and why. */
export interface DeviceChoice {
  device: string;
  passedOver?: string;
}

/**
 * Resolves 'auto' to the first GPU the CUDA backend runs on, else the CPU,
 * and checks that a requested backend was built. `backends`, `gpus` and
 * `unavailable` are the addon's backends(), cudaDevices() and
 * cudaUnavailable(). An explicit GPU the kernels cannot run on is the
 * addon's to refuse, with its reason.
 */
export function resolveDevice(device: DeviceOption, backends: string[], gpus: CudaDeviceReport[], unavailable = ''): DeviceChoice {
  if (device === 'auto') {
    // The addon lists CUDA among its backends exactly when one of gpus is usable.
    const usable = gpus.find((gpu) => gpu.unsupported === '');
    const skipped = gpus.filter((gpu) => gpu.unsupported !== '' && (usable === undefined || gpu.ordinal < usable.ordinal));
    const reasons = [...(usable ? [] : [unavailable].filter(Boolean)), ...skipped.map((gpu) => gpu.unsupported)];
    const chosen = usable ? `cuda:${usable.ordinal}` : 'cpu';
    return reasons.length === 0 ? { device: chosen } : { device: chosen, passedOver: reasons.join('; ') };
  }
  if (device === 'cpu') return { device };
  if (/^cuda(:\d+)?$/.test(device)) {
    if (!backends.includes('cuda') && gpus.length === 0) {
      throw new FusedRTError('E_BACKEND', unavailable
        ? `device "${device}" was asked for, but ${unavailable}`
        : `device "${device}" was asked for, but this build of FusedRT has no CUDA backend or this machine no CUDA device (usable: ${backends.join(', ')}); use device "cpu" or "auto"`);
    }
    return { device };
  }
  throw new FusedRTError('E_INPUT', `unknown device "${device}" (use auto, cpu, cuda or cuda:N)`);
}

/** Reads one tensor's bytes from a plan given as a path or as bytes, using the validated header. */
function readPlanTensor(plan: string | Uint8Array, header: PlanHeader, name: string): Uint8Array {
  const entry = header.tensors.find((t) => t.name === name);
  if (!entry) throw new FusedRTError('E_PLAN_CORRUPT', `invalid plan: tensor "${name}" is missing`);
  const readAt = (position: number, length: number): Uint8Array => {
    if (typeof plan !== 'string') return plan.subarray(position, position + length);
    const out = Buffer.alloc(length);
    const fd = fs.openSync(plan, 'r');
    try {
      fs.readSync(fd, out, 0, length, position);
    } finally {
      fs.closeSync(fd);
    }
    return out;
  };
  const headerLength = Buffer.from(readAt(12, 4)).readUInt32LE(0);
  return readAt(alignUp(16 + headerLength) + entry.offset, entry.size);
}

export class Engine {
  readonly info: EngineInfo;
  readonly tokenizer: FusedTokenizer;
  private readonly batcher: Batcher;
  private readonly rowsOf: Map<string, RowsKind>;
  private disposing: Promise<void> | undefined;

  private constructor(private readonly native: NativeEngine, info: EngineInfo, tokenizer: FusedTokenizer, batchWindowMs: number) {
    this.info = info;
    this.tokenizer = tokenizer;
    const buffers = new Map(info.header.buffers.map((b) => [b.name, b.rows]));
    this.rowsOf = new Map(info.header.outputs.map((o) => [o.name, buffers.get(o.buffer) ?? 'tokens']));
    this.batcher = new Batcher((batch) => this.native.run(batch), (name) => this.rowsOf.get(name) ?? 'tokens',
      { maxTokens: info.maxTokens, maxSequences: info.maxSequences, maxSelectedRows: info.maxSelectedRows }, batchWindowMs,
      info.contexts);
  }

  /** Loads a plan (a file path or the plan's bytes) onto a backend. */
  static async load(plan: string | Uint8Array, options: EngineOptions = {}): Promise<Engine> {
    const addon = loadAddon();
    const opts = { ...ENGINE_DEFAULTS, ...options };
    const { device, passedOver } = resolveDevice(opts.device, addon.backends(), addon.cudaDevices(), addon.cudaUnavailable());
    const threads = positiveInteger(opts.threads, 'threads', true) || os.availableParallelism();
    const cpuPriority = cpuPriorityOption(opts.cpuPriority ?? ENGINE_DEFAULTS.cpuPriority);
    const native = await addon.loadEngine(plan, {
      device,
      threads,
      cpuPriority,
      maxTokens: positiveInteger(opts.maxTokens, 'maxTokens'),
      maxSequences: positiveInteger(opts.maxSequences, 'maxSequences'),
      maxSelectedRows: positiveInteger(opts.maxSelectedRows, 'maxSelectedRows'),
      cudaGraphs: booleanOption(opts.cudaGraphs ?? ENGINE_DEFAULTS.cudaGraphs, 'cudaGraphs'),
      spinWait: booleanOption(opts.spinWait ?? ENGINE_DEFAULTS.spinWait, 'spinWait'),
      contexts: contextsOption(opts.contexts),
    });
    try {
      const { headerJson, ...nativeInfo } = native.info();
      const header = JSON.parse(headerJson) as PlanHeader;
      const tokenizerJson = Buffer.from(readPlanTensor(plan, header, header.tokenizer.tensor)).toString('utf8');
      const tokenizer = createTokenizer(tokenizerJson, { maxLength: header.config.maxSeq });
      const info: EngineInfo = {
        ...nativeInfo, blas: addon.gemmImplementation(), header,
        ...(nativeInfo.backend === 'cpu' ? { cpuPriority } : {}), ...(passedOver ? { passedOver } : {}),
      };
      return new Engine(native, info, tokenizer, positiveInteger(opts.batchWindowMs, 'batchWindowMs', true));
    } catch (err) {
      await native.dispose();
      throw err;
    }
  }

  get header(): PlanHeader {
    return this.info.header;
  }

  /** Output names in the plan, e.g. ['logits', 'hidden']. */
  get outputNames(): string[] {
    return this.info.header.outputs.map((o) => o.name);
  }

  /**
   * The outputs the plan's task is read from (fill-mask: the [MASK] rows'
   * logits; embedding: the pooled vectors `mean` and `cls`...), or every
   * output when the plan lacks one. What a caller asks for when it does not
   * need the others: each output costs a download.
   */
  get taskOutputs(): string[] {
    const own = TASK_OUTPUTS[this.info.header.task];
    return own.every((name) => this.outputNames.includes(name)) ? own : this.outputNames;
  }

  /** Requests queued or running. */
  get pending(): number {
    return this.batcher.pending;
  }

  get disposed(): boolean {
    return this.disposing !== undefined;
  }

  /**
   * Runs one packed batch; resolves with the requested outputs (all the batch
   * can produce by default). With `topK`, outputs with selected rows come back
   * as TopKTensors; the result is typed so only when topK is typed a number
   * (a batch whose topK may be undefined is typed RunResult: check with isTopK).
   */
  run(batch: PackedBatch & { topK: number }): Promise<TopKRunResult>;
  run(batch: PackedBatch): Promise<RunResult>;
  run(batch: PackedBatch): Promise<TopKRunResult> {
    if (this.disposing) return Promise.reject(new FusedRTError('E_DISPOSED', 'this engine has been disposed'));
    let outputs: string[];
    try {
      outputs = this.resolveOutputs(batch);
      if (batch.topK !== undefined && (!Number.isInteger(batch.topK) || batch.topK < 1 || batch.topK > MAX_TOP_K)) {
        throw new FusedRTError('E_INPUT', `topK must be an integer in [1, ${MAX_TOP_K}], got ${batch.topK}`);
      }
    } catch (err) {
      return Promise.reject(err);
    }
    const resolved: ResolvedBatch = { ...batch, outputs };
    return this.batcher.submit(resolved);
  }

  private resolveOutputs(batch: PackedBatch): string[] {
    if (batch.outputs) {
      for (const name of batch.outputs) {
        if (!this.rowsOf.has(name)) {
          throw new FusedRTError('E_INPUT', `output "${name}" is not in this plan (it has: ${this.outputNames.join(', ')})`);
        }
      }
      return batch.outputs;
    }
    const hasSelected = (batch.selectedRows?.length ?? 0) > 0;
    return this.outputNames.filter((name) => this.rowsOf.get(name) !== 'selected' || hasSelected);
  }

  /** Waits for queued and running requests, then frees the native engine. Safe to call twice. */
  dispose(): Promise<void> {
    this.disposing ??= this.batcher.idle().then(() => this.native.dispose());
    return this.disposing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

export function nativeMemoryBytes(): number {
  return loadAddon().nativeMemoryBytes();
}

export function availableBackends(): string[] {
  return loadAddon().backends();
}
