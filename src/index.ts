/** FusedRT's library surface: everything the nodes and the CLI use, for use from code too. */
export * from './engine';
export { buildPlan } from './build/builder';
export { parsePlan, readPlanFile, writePlan } from './build/plan-file';
export type { PlanHeader, Precision, Task } from './build/plan-types';
export { createTokenizer } from './tokenize/tokenizer';
export { encodeBatchYielding } from './tokenize/encode-yielding';
export type { Encoding, EncodeOptions, FusedTokenizer, TextPair } from './tokenize/types';
export { FusedRTError, errorCode } from './errors';
export type { ErrorCode } from './errors';
