/**
 * Every error FusedRT raises carries a stable `code`, so flows (Catch nodes,
 * switch on msg.error) and callers can react without parsing messages.
 * Codes thrown by the native addon use the same names.
 */
export type ErrorCode =
  | 'E_INPUT'           // bad argument or message (empty text, wrong type, bad option)
  | 'E_SHAPE'           // a batch that exceeds the engine's limits or the plan's max sequence length
  | 'E_PLAN_IO'         // the plan file cannot be read
  | 'E_PLAN_CORRUPT'    // the plan fails validation
  | 'E_PLAN_VERSION'    // the plan was written by an incompatible builder
  | 'E_MODEL'           // the source model cannot be built (unknown architecture, missing tensor)
  | 'E_BUILD'           // the builder failed for another reason
  | 'E_TOKENIZER'       // the tokenizer cannot be loaded or applied
  | 'E_BACKEND'         // the requested backend is not available in this build
  | 'E_DISPOSED'        // the engine was disposed
  | 'E_NATIVE'          // the addon is missing or failed unexpectedly
  | 'E_OOM';            // memory for weights or workspace could not be allocated

export class FusedRTError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'FusedRTError';
    this.code = code;
  }
}

/** Errors from the addon are plain Errors with a `code`; this keeps both kinds recognisable. */
export function errorCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'string'
    ? (err as { code: string }).code : undefined;
}
