/** Helpers over run results: top-k outputs, the per-run GPU time and host timing. */
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

/**
 * Where a native run's host time went, in microseconds (native/runtime.h,
 * RunTiming): queueUs from engine.run() to a libuv worker picking the run
 * up, then validation, waiting for an execution context, staging the inputs,
 * issuing the device work, waiting for the device, reading the outputs, and
 * deliverUs from the worker finishing to the result reaching JS. A run whose
 * recorded work was replayed (CUDA graphs) is issued on the JS thread
 * (issuedOnJsThread): its queueUs then overlaps deviceWaitUs. With spinWait
 * the JS thread also settles it by polling: queueUs is 0, and deliverUs is
 * the poll interval in which the run ended (how late it was seen at most).
 */
export interface RunTiming {
  issuedOnJsThread: boolean;
  spinWait: boolean;
  /** The JS thread's time in the addon for this run: run() (reading the batch, and issuing it when issuedOnJsThread) and building the result. */
  jsThreadUs: number;
  queueUs: number;
  validateUs: number;
  contextWaitUs: number;
  stageUs: number;
  launchUs: number;
  deviceWaitUs: number;
  collectUs: number;
  deliverUs: number;
  /**
   * Full outputs that a GPU's copy engine wrote straight into the result's
   * own page-locked memory, leaving the host nothing to copy (docs/runtime.md,
   * "Outputs land in their result").
   */
  landedOutputs: number;
}

/**
 * The addon packs a result's timing into a Float64Array in this order
 * (native/run_result_object.cpp, TimingField): twelve named properties cost
 * a small result a third of its JS-thread time to build, and few results
 * are ever asked for their timing.
 */
const TIMING_FIELDS = ['queueUs', 'validateUs', 'contextWaitUs', 'stageUs', 'launchUs', 'deviceWaitUs', 'collectUs',
  'deliverUs', 'landedOutputs', 'issuedOnJsThread', 'spinWait', 'jsThreadUs'] as const;

/** The host timing of the native run a result came from; undefined for results cut from or joined of several runs. */
export function runTiming(result: object): RunTiming | undefined {
  const packed = (result as { timing?: unknown }).timing;
  if (!(packed instanceof Float64Array) || packed.length !== TIMING_FIELDS.length) return undefined;
  const value = (field: typeof TIMING_FIELDS[number]) => packed[TIMING_FIELDS.indexOf(field)];
  return {
    queueUs: value('queueUs'), validateUs: value('validateUs'), contextWaitUs: value('contextWaitUs'),
    stageUs: value('stageUs'), launchUs: value('launchUs'), deviceWaitUs: value('deviceWaitUs'),
    collectUs: value('collectUs'), deliverUs: value('deliverUs'), landedOutputs: value('landedOutputs'),
    issuedOnJsThread: value('issuedOnJsThread') !== 0, spinWait: value('spinWait') !== 0, jsThreadUs: value('jsThreadUs'),
  };
}
