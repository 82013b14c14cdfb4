/** The raw addon (build/Release/fusedrt.node) with the types the native tests rely on. */
import * as path from 'path';

export interface NativeOutput { data: Float32Array; rows: number; cols: number }

export interface NativeRunRequest {
  inputIds: Int32Array;
  tokenTypeIds?: Int32Array;
  cuSeqlens: Int32Array;
  selectedRows?: Int32Array;
  outputs: string[];
}

export interface NativeEngine {
  info(): { backend: string; threads: number; maxTokens: number; maxSequences: number; weightBytes: number; workspaceBytes: number; headerJson: string };
  run(request: NativeRunRequest): Promise<Record<string, NativeOutput>>;
  dispose(): Promise<void>;
}

export interface NativeLoadOptions {
  device?: string; threads?: number; maxTokens?: number; maxSequences?: number; cpuPriority?: string;
}

export interface NativeAddon {
  backends(): string[];
  cudaDevices(): Array<{ ordinal: number; name: string; computeCapability: string; unsupported: string }>;
  cudaUnavailable(): string;
  gemmImplementation(): string;
  nativeMemoryBytes(): number;
  loadEngine(plan: string | Uint8Array, options: NativeLoadOptions): Promise<NativeEngine>;
}

/**
 * The addon under test: FUSEDRT_ADDON names another build of it (e.g. the
 * AddressSanitizer one, docs/runtime.md). Default: build/Release/fusedrt.node
 * of this checkout (dist/test/support/ is three levels below the root).
 */
export const ADDON_PATH = process.env.FUSEDRT_ADDON ?? path.join(__dirname, '..', '..', '..', 'build', 'Release', 'fusedrt.node');
export const addon: NativeAddon = require(ADDON_PATH);

/** Resolves with the error code a promise rejects with; fails when it resolves. */
export async function rejectionCode(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (e) {
    if (!(e instanceof Error)) throw new Error(`rejected with a non-Error: ${String(e)}`);
    const code = (e as Error & { code?: unknown }).code;
    if (typeof code !== 'string') throw new Error(`error without a code: ${e.message}`);
    return code;
  }
  throw new Error('expected a rejection, but the promise resolved');
}
