/** Helpers over run results: top-k outputs and the per-run GPU time. */
import type { OutputTensor, TopKTensor } from './types';

export function isTopK(output: OutputTensor | TopKTensor): output is TopKTensor {
  return (output as Partial<TopKTensor>).topIds !== undefined;
}

/**
 * Milliseconds the device spent on the run a result came from (CUDA events
 * around its work); undefined on the CPU. A result cut out of a merged batch
 * reports the whole batch's time; one joined from pieces the sum.
 */
export function runGpuMs(result: object): number | undefined {
  const ms = (result as { gpuMs?: unknown }).gpuMs;
  return typeof ms === 'number' ? ms : undefined;
}

/** Sets gpuMs on a result as the addon does: not enumerable, so iterating a result visits outputs only. */
export function withGpuMs<T extends object>(result: T, ms: number | undefined): T {
  if (ms !== undefined) Object.defineProperty(result, 'gpuMs', { value: ms, enumerable: false });
  return result;
}
