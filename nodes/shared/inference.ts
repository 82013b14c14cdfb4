/**
 * Tokenizing and running messages: what fusedrt-tokenize puts in msg.tokens,
 * what fusedrt-infer puts in msg.fusedrt, and the checks on both when they
 * come back in (possibly cloned by a fan-out, or built by hand).
 */
import type { RowsKind, Task } from '../../src/build/plan-types';
import type { Engine } from '../../src/engine/engine';
import { packEncodings } from '../../src/engine/pack';
import { isTopK } from '../../src/engine/run-result';
import type { OutputTensor, TopKTensor } from '../../src/engine/types';
import { encodeBatchYielding } from '../../src/tokenize/encode-yielding';
import type { Encoding } from '../../src/tokenize/types';
import type { Truncation } from './engine-host';
import { nodeError } from './messages';
import type { TextBatch, TextInput } from './texts';

/** msg.tokens, written by fusedrt-tokenize. */
export interface TokensMessage {
  /** Id of the fusedrt-engine whose tokenizer made the encodings. */
  engine: string;
  batch: boolean;
  texts: TextInput[];
  encodings: Encoding[];
}

export interface OutputData extends OutputTensor {
  /** What the rows are: one per token, per sequence, or per selected token (e.g. [MASK]). */
  rowsKind: RowsKind;
}

/** A selected-rows output of a run with topK (InferOptions.topK). */
export interface TopKData extends TopKTensor {
  rowsKind: 'selected';
}

export interface InferOptions {
  /**
   * For fill-mask plans: compute the softmax top-k of the selected rows on
   * the engine (1..64), so the result holds k ids and scores per [MASK]
   * instead of a row of vocabulary logits. Ignored for other tasks.
   * Default: undefined (full logits).
   */
  topK?: number;
}

/** msg.fusedrt, written by fusedrt-infer. */
export interface FusedResult {
  /** Id of the fusedrt-engine that ran the batch. */
  engine: string;
  task: Task;
  batch: boolean;
  texts: TextInput[];
  encodings: Encoding[];
  /** [B + 1] token rows of each sequence in `tokens` outputs. */
  cuSeqlens: Int32Array;
  /** Per sequence: its rows in `selected` outputs. */
  selectedBySequence: number[][];
  outputs: Record<string, OutputData | TopKData>;
  labels: string[] | null;
  problemType: string | null;
  /** Time from the engine call to its result, in milliseconds. */
  runMs: number;
}

/** Which outputs to compute: the task's own ('task'), every one ('all'), or a list of names. */
export type OutputSelection = 'task' | 'all' | string[];


/** Copies the fields of the Encoding contract only, so the msg holds plain data that cloneMessage copies faithfully. */
function plainEncoding(e: Encoding): Encoding {
  return {
    ids: e.ids, typeIds: e.typeIds, tokens: e.tokens, offsets: e.offsets,
    sequenceIds: e.sequenceIds, specialTokensMask: e.specialTokensMask, truncated: e.truncated,
  };
}

/** Per engine, the last tokenisation queued: the next starts after it, so messages keep their order. */
const tokenizing = new WeakMap<Engine, Promise<unknown>>();

/**
 * The texts' encodings, made without holding the event loop for more than
 * a quarter of a millisecond at a time (encodeBatchYielding), one message
 * after another per engine.
 */
export function tokenize(engine: Engine, engineId: string, input: TextBatch, truncation: Truncation,
  addSpecialTokens = true): Promise<TokensMessage> {
  const options = { addSpecialTokens, truncation: truncation === 'truncate' ? 'longest_first' : 'none' } as const;
  const encoded = (tokenizing.get(engine) ?? Promise.resolve())
    .then(() => encodeBatchYielding(engine.tokenizer, input.texts, options));
  tokenizing.set(engine, encoded.catch(() => undefined));
  return encoded.then((encodings) => ({
    engine: engineId, batch: input.batch, texts: input.texts, encodings: encodings.map(plainEncoding),
  }));
}

function int32(value: unknown): Int32Array | undefined {
  if (value instanceof Int32Array) return value;
  if (Array.isArray(value) && value.every((v) => Number.isInteger(v))) return Int32Array.from(value as number[]);
  return undefined;
}

/**
 * Checks msg[property] is a TokensMessage. Id arrays that went through JSON
 * (plain number arrays) are turned back into Int32Arrays.
 */
export function readTokens(value: unknown, property: string): TokensMessage {
  const bad = () => nodeError('E_INPUT', 'badTokens', { property });
  if (typeof value !== 'object' || value === null) throw bad();
  const v = value as Partial<TokensMessage>;
  if (!Array.isArray(v.encodings) || v.encodings.length === 0 || !Array.isArray(v.texts) || v.texts.length !== v.encodings.length) throw bad();
  const encodings = v.encodings.map((e) => {
    const ids = int32(e?.ids);
    const typeIds = e?.typeIds === undefined ? new Int32Array(ids?.length ?? 0) : int32(e.typeIds);
    if (!ids || ids.length === 0 || !typeIds || typeIds.length !== ids.length) throw bad();
    return { ...e, ids, typeIds };
  });
  return { engine: typeof v.engine === 'string' ? v.engine : '', batch: v.batch === true, texts: v.texts, encodings };
}

function rowsKinds(engine: Engine): Map<string, RowsKind> {
  const buffers = new Map(engine.info.header.buffers.map((b) => [b.name, b.rows]));
  return new Map(engine.info.header.outputs.map((o) => [o.name, buffers.get(o.buffer) ?? 'tokens']));
}

function resolveOutputs(engine: Engine, selection: OutputSelection): string[] {
  const names = engine.info.header.outputs.map((o) => o.name);
  if (selection === 'all') return names;
  if (selection === 'task') return engine.taskOutputs;
  return selection;
}

function preview(text: TextInput): string {
  const s = typeof text === 'string' ? text : `${text.text} / ${text.pair}`;
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** Packs the encodings into one batch, runs it, and returns what msg.fusedrt holds. */
export async function infer(engine: Engine, engineId: string, tokens: TokensMessage, selection: OutputSelection,
  options: InferOptions = {}): Promise<FusedResult> {
  const header = engine.info.header;
  const kinds = rowsKinds(engine);
  const outputs = resolveOutputs(engine, selection);
  const needsSelected = outputs.some((name) => kinds.get(name) === 'selected');
  const maskId = engine.tokenizer.maskTokenId;
  const packed = packEncodings(tokens.encodings, needsSelected && maskId !== undefined ? { selectTokenId: maskId } : {});
  if (needsSelected) {
    const missing = packed.selectedBySequence.findIndex((rows) => rows.length === 0);
    if (missing >= 0) {
      throw nodeError('E_INPUT', 'noMask', { index: missing, mask: engine.tokenizer.maskToken, text: preview(tokens.texts[missing]) });
    }
  }
  packed.batch.outputs = outputs;
  if (header.task === 'fill-mask' && needsSelected) packed.batch.topK = options.topK;
  const started = process.hrtime.bigint();
  const result = await engine.run(packed.batch);
  const runMs = Number(process.hrtime.bigint() - started) / 1e6;
  const data: Record<string, OutputData | TopKData> = {};
  for (const [name, tensor] of Object.entries(result)) {
    data[name] = isTopK(tensor) ? { ...tensor, rowsKind: 'selected' } : { ...tensor, rowsKind: kinds.get(name) ?? 'tokens' };
  }
  return {
    engine: engineId,
    task: header.task,
    batch: tokens.batch,
    texts: tokens.texts,
    encodings: tokens.encodings,
    cuSeqlens: packed.batch.cuSeqlens,
    selectedBySequence: packed.selectedBySequence,
    outputs: data,
    labels: header.labels,
    problemType: header.problemType,
    runMs,
  };
}

/** Checks msg.fusedrt looks like an infer result before post-processing reads it. */
export function readResult(value: unknown): FusedResult {
  if (value === undefined) throw nodeError('E_INPUT', 'noResult');
  const v = value as Partial<FusedResult> | null;
  if (typeof v !== 'object' || v === null || typeof v.outputs !== 'object' || v.outputs === null ||
    !Array.isArray(v.encodings) || !(v.cuSeqlens instanceof Int32Array) || typeof v.task !== 'string') {
    throw nodeError('E_INPUT', 'badResult');
  }
  return v as FusedResult;
}

/** The named output of a result (full rows), with a hint on how to get it when it is missing. */
export function requireOutput(result: FusedResult, name: string, hint: string): OutputData {
  const output = result.outputs[name];
  if (!output || isTopK(output) || !(output.data instanceof Float32Array)) {
    throw nodeError('E_INPUT', 'missingOutput', { output: name, available: Object.keys(result.outputs).join(', ') || 'none', hint });
  }
  return output;
}

/** Like requireOutput, but a top-k output (InferOptions.topK) is accepted too: what fillMask reads. */
export function requireMaskScores(result: FusedResult, name: string, hint: string): OutputData | TopKData {
  const output = result.outputs[name];
  if (output && isTopK(output) && output.topIds instanceof Int32Array && output.topScores instanceof Float32Array) return output;
  return requireOutput(result, name, hint);
}
