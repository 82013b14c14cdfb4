/**
 * Loads the compiled addon (build/Release/fusedrt.node) once and describes the
 * surface it exports; native/engine_object.cpp is the other side of this file.
 */
import * as fs from 'fs';
import * as path from 'path';
import { FusedRTError } from '../errors';
import type { EngineInfo, TopKRunResult } from './types';

/** EngineInfo as the addon reports it: the header still as JSON text, no GEMM implementation. */
export interface NativeEngineInfo extends Omit<EngineInfo, 'blas' | 'header'> {
  headerJson: string;
}

export interface NativeRunInputs {
  inputIds: Int32Array;
  tokenTypeIds?: Int32Array;
  cuSeqlens: Int32Array;
  selectedRows?: Int32Array;
  outputs: string[];
  /** 1..64: softmax top-k of outputs with selected rows. */
  topK?: number;
}

export interface NativeEngine {
  info(): NativeEngineInfo;
  /** The result has a non-enumerable gpuMs on CUDA and timing everywhere (run-result.ts). */
  run(inputs: NativeRunInputs): Promise<TopKRunResult>;
  dispose(): Promise<void>;
}

/** A CUDA device as the addon sees it (docs/cuda.md, "Which GPUs"). */
export interface CudaDeviceReport {
  /** The N of cuda:N. */
  ordinal: number;
  name: string;
  /** Major.minor, e.g. '8.6'. */
  computeCapability: string;
  /** Why the CUDA backend cannot run on it, naming it and what to do instead; '' when it can. */
  unsupported: string;
}

export interface NativeAddon {
  backends(): string[];
  /** Every CUDA device the process sees; empty without the CUDA backend, a driver or a GPU. */
  cudaDevices(): CudaDeviceReport[];
  /**
   * Why CUDA cannot start although a driver is installed (one older than the
   * build's CUDA runtime, most often), saying what to do; '' when it starts,
   * without a driver or a GPU, and without the CUDA backend.
   */
  cudaUnavailable(): string;
  gemmImplementation(): string;
  nativeMemoryBytes(): number;
  loadEngine(plan: string | Uint8Array, options: {
    device: string; threads: number; maxTokens: number; maxSequences: number; maxSelectedRows: number;
    /** The CPU backend's thread priority (default 'background'); CUDA ignores it. */
    cpuPriority?: 'background' | 'normal';
    /** CUDA graphs on (the default) or off; the CPU backend ignores it. */
    cudaGraphs?: boolean;
    /** 1..16; absent: 2 on CUDA, 1 on the CPU. */
    contexts?: number;
    /** Replayed CUDA runs are settled by polling from the JS thread (docs/runtime.md, "Spin wait"); default true. */
    spinWait?: boolean;
  }): Promise<NativeEngine>;
}

/** The package root: dist/src/engine/native.js sits three levels below it. */
export const PACKAGE_ROOT = path.resolve(__dirname, '..', '..', '..');

let addon: NativeAddon | undefined;

/**
 * OpenBLAS 0.3.21 (Debian 12) does not recognise recent x86 CPUs and falls
 * back to its oldest kernels, 3–5× slower (docs/decisions/0003). It reads
 * OPENBLAS_CORETYPE when the library loads, so before loading the addon we
 * name the kernel family the CPU's flags support, unless the user chose one.
 */
function chooseOpenBlasCore(): void {
  if (process.platform !== 'linux' || process.arch !== 'x64' || process.env.OPENBLAS_CORETYPE) return;
  let flags: Set<string>;
  try {
    const line = fs.readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags'));
    flags = new Set((line ?? '').split(':')[1]?.trim().split(/\s+/) ?? []);
  } catch {
    return;
  }
  if (['avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512cd'].every((f) => flags.has(f))) {
    process.env.OPENBLAS_CORETYPE = 'SkylakeX';
  } else if (['avx2', 'fma'].every((f) => flags.has(f))) {
    process.env.OPENBLAS_CORETYPE = 'Haswell';
  }
}

export function loadAddon(): NativeAddon {
  if (addon) return addon;
  // FUSEDRT_ADDON names another build of the addon, e.g. one with
  // AddressSanitizer (docs/runtime.md, "Checking memory safety").
  const file = process.env.FUSEDRT_ADDON || path.join(PACKAGE_ROOT, 'build', 'Release', 'fusedrt.node');
  chooseOpenBlasCore();
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addon = require(file) as NativeAddon;
  } catch (e) {
    throw new FusedRTError('E_NATIVE',
      `the FusedRT native addon could not be loaded from ${file} (${(e as Error).message}); ` +
      'build it with "npm run build:native" (needs cmake and a C++ compiler)');
  }
  return addon;
}
