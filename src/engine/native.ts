/**
 * Loads the compiled addon (build/Release/fusedrt.node) once and describes the
 * surface it exports; native/engine_object.cpp is the other side of this file.
 */
import * as path from 'path';
import { FusedRTError } from '../errors';
import type { OutputTensor } from './types';

export interface NativeEngineInfo {
  backend: 'cpu' | 'cuda';
  threads: number;
  maxTokens: number;
  maxSequences: number;
  weightBytes: number;
  workspaceBytes: number;
  headerJson: string;
}

export interface NativeRunInputs {
  inputIds: Int32Array;
  tokenTypeIds?: Int32Array;
  cuSeqlens: Int32Array;
  selectedRows?: Int32Array;
  outputs: string[];
}

export interface NativeEngine {
  info(): NativeEngineInfo;
  run(inputs: NativeRunInputs): Promise<Record<string, OutputTensor>>;
  dispose(): Promise<void>;
}

export interface NativeAddon {
  backends(): string[];
  gemmImplementation(): string;
  nativeMemoryBytes(): number;
  loadEngine(plan: string | Uint8Array, options: {
    device: string; threads: number; maxTokens: number; maxSequences: number;
  }): Promise<NativeEngine>;
}

/** The package root: dist/src/engine/native.js sits three levels below it. */
export const PACKAGE_ROOT = path.resolve(__dirname, '..', '..', '..');

let addon: NativeAddon | undefined;

export function loadAddon(): NativeAddon {
  if (addon) return addon;
  const file = path.join(PACKAGE_ROOT, 'build', 'Release', 'fusedrt.node');
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
