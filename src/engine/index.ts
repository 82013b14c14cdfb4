export { Engine, nativeMemoryBytes, availableBackends, ENGINE_DEFAULTS, MAX_TOP_K } from './engine';
export { isTopK, runGpuMs } from './run-result';
export { packEncodings } from './pack';
export type { PackedEncodings } from './pack';
export * from './types';
