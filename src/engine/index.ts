export { Engine, nativeMemoryBytes, availableBackends, ENGINE_DEFAULTS } from './engine';
export { packEncodings } from './pack';
export type { PackedEncodings } from './pack';
export * from './types';
