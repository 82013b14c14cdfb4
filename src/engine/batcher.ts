/**
 * Dynamic batching: requests that arrive while the engine is busy (or within
 * a short window) are packed into one batch, run once, and their outputs
 * sliced back. Packing is padding-free, so merging costs nothing but the copy.
 * Up to `concurrency` merged batches run at once (the engine's execution
 * contexts); requests merge while all of them are busy.
 */
import { FusedRTError } from '../errors';
import type { RowsKind } from '../build/plan-types';
import { isTopK, runGpuMs, withGpuMs } from './run-result';
import type { OutputTensor, PackedBatch, TopKRunResult, TopKTensor } from './types';

export interface BatchLimits {
  maxTokens: number;
  maxSequences: number;
  maxSelectedRows: number;
}

/** A batch whose outputs are resolved (never undefined). */
export type ResolvedBatch = PackedBatch & { outputs: string[] };

interface RowCounts {
  tokens: number;
  sequences: number;
  selected: number;
}

function rowCounts(batch: PackedBatch): RowCounts {
  return { tokens: batch.inputIds.length, sequences: batch.cuSeqlens.length - 1, selected: batch.selectedRows?.length ?? 0 };
}

/** Concatenates batches; cu_seqlens and selected rows are shifted to their new token positions. */
export function mergeBatches(batches: ResolvedBatch[]): ResolvedBatch {
  if (batches.length === 1) return batches[0];
  const totals = batches.map(rowCounts).reduce((a, c) => ({
    tokens: a.tokens + c.tokens, sequences: a.sequences + c.sequences, selected: a.selected + c.selected,
  }));
  const inputIds = new Int32Array(totals.tokens);
  const tokenTypeIds = new Int32Array(totals.tokens);
  const cuSeqlens = new Int32Array(totals.sequences + 1);
  const selectedRows = new Int32Array(totals.selected);
  let tokens = 0;
  let sequences = 0;
  let selected = 0;
  for (const b of batches) {
    inputIds.set(b.inputIds, tokens);
    if (b.tokenTypeIds) tokenTypeIds.set(b.tokenTypeIds, tokens);
    for (let i = 1; i < b.cuSeqlens.length; i++) cuSeqlens[sequences + i] = b.cuSeqlens[i] + tokens;
    b.selectedRows?.forEach((row, i) => { selectedRows[selected + i] = row + tokens; });
    tokens += b.inputIds.length;
    sequences += b.cuSeqlens.length - 1;
    selected += b.selectedRows?.length ?? 0;
  }
  return { inputIds, tokenTypeIds, cuSeqlens, selectedRows, outputs: batches[0].outputs, topK: batches[0].topK };
}

function sliceRows(t: OutputTensor | TopKTensor, start: number, rows: number): OutputTensor | TopKTensor {
  if (isTopK(t)) {
    const [from, to] = [start * t.k, (start + rows) * t.k];
    return { topIds: t.topIds.slice(from, to), topScores: t.topScores.slice(from, to), rows, k: t.k };
  }
  return { data: t.data.slice(start * t.cols, (start + rows) * t.cols), rows, cols: t.cols };
}

/** Cuts a merged result back into one result per batch, in order. */
export function splitResult(result: TopKRunResult, batches: PackedBatch[], rowsKindOf: (output: string) => RowsKind): TopKRunResult[] {
  if (batches.length === 1) return [result];
  const at: RowCounts = { tokens: 0, sequences: 0, selected: 0 };
  const gpuMs = runGpuMs(result);
  return batches.map((b) => {
    const counts = rowCounts(b);
    const part: TopKRunResult = withGpuMs({}, gpuMs);
    for (const [name, tensor] of Object.entries(result)) {
      const kind = rowsKindOf(name);
      part[name] = sliceRows(tensor, at[kind], counts[kind]);
    }
    at.tokens += counts.tokens;
    at.sequences += counts.sequences;
    at.selected += counts.selected;
    return part;
  });
}

/**
 * Splits a request that exceeds the engine's limits into consecutive runs of
 * whole sequences. Selected rows follow their sequence; they must be in
 * ascending token order (packEncodings produces them so) for the pieces to
 * reassemble in the caller's order.
 */
export function splitBatch(batch: ResolvedBatch, limits: BatchLimits): ResolvedBatch[] {
  const counts = rowCounts(batch);
  if (counts.tokens <= limits.maxTokens && counts.sequences <= limits.maxSequences && counts.selected <= limits.maxSelectedRows) {
    return [batch];
  }
  const selected = batch.selectedRows ?? new Int32Array(0);
  for (let i = 1; i < selected.length; i++) {
    if (selected[i] < selected[i - 1]) {
      throw new FusedRTError('E_INPUT', 'selectedRows must be in ascending order when a batch is larger than the engine limits');
    }
  }
  const pieces: ResolvedBatch[] = [];
  let first = 0;
  let selectedAt = 0;
  while (first < counts.sequences) {
    const start = batch.cuSeqlens[first];
    let last = first;
    let selectedEnd = selectedAt;
    while (last < counts.sequences && last - first < limits.maxSequences &&
      batch.cuSeqlens[last + 1] - start <= limits.maxTokens) {
      let next = selectedEnd;
      while (next < selected.length && selected[next] < batch.cuSeqlens[last + 1]) next++;
      if (next - selectedAt > limits.maxSelectedRows) break;
      selectedEnd = next;
      last++;
    }
    if (last === first) {
      throw new FusedRTError('E_SHAPE', `sequence ${first} has ${batch.cuSeqlens[first + 1] - start} tokens and ` +
        `${countBelow(selected, batch.cuSeqlens[first + 1]) - selectedAt} selected rows, more than this engine's ` +
        `maxTokens (${limits.maxTokens}) or maxSelectedRows (${limits.maxSelectedRows})`);
    }
    const end = batch.cuSeqlens[last];
    pieces.push({
      inputIds: batch.inputIds.subarray(start, end),
      tokenTypeIds: batch.tokenTypeIds?.subarray(start, end),
      cuSeqlens: batch.cuSeqlens.slice(first, last + 1).map((v) => v - start),
      selectedRows: batch.selectedRows ? selected.slice(selectedAt, selectedEnd).map((v) => v - start) : undefined,
      outputs: batch.outputs,
      topK: batch.topK,
    });
    first = last;
    selectedAt = selectedEnd;
  }
  return pieces;
}

function countBelow(sorted: Int32Array, bound: number): number {
  let n = 0;
  while (n < sorted.length && sorted[n] < bound) n++;
  return n;
}

/** Joins results of pieces made by splitBatch (all rows kinds are consecutive). */
export function concatResults(parts: TopKRunResult[]): TopKRunResult {
  if (parts.length === 1) return parts[0];
  const times = parts.map(runGpuMs);
  const gpuMs = times.every((ms) => ms !== undefined) ? times.reduce((a, ms) => a + ms!, 0) : undefined;
  const joined: TopKRunResult = withGpuMs({}, gpuMs);
  for (const name of Object.keys(parts[0])) {
    const tensors = parts.map((p) => p[name]);
    const rows = tensors.reduce((n, t) => n + t.rows, 0);
    const first = tensors[0];
    if (isTopK(first)) {
      const pieces = tensors as TopKTensor[];
      joined[name] = {
        topIds: concat(Int32Array, pieces.map((t) => t.topIds)),
        topScores: concat(Float32Array, pieces.map((t) => t.topScores)),
        rows, k: first.k,
      };
    } else {
      joined[name] = { data: concat(Float32Array, (tensors as OutputTensor[]).map((t) => t.data)), rows, cols: first.cols };
    }
  }
  return joined;
}

function concat<A extends Int32Array | Float32Array>(make: new (length: number) => A, arrays: A[]): A {
  const out = new make(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.length;
  }
  return out;
}

interface Waiting {
  batch: ResolvedBatch;
  key: string;
  resolve(result: TopKRunResult): void;
  reject(err: unknown): void;
}

export class Batcher {
  private readonly queue: Waiting[] = [];
  /** Requests in the batches now running. */
  private running = 0;
  /** Batches now running, at most `concurrency`. */
  private inFlight = 0;
  /** A flush is due (a microtask or the window's timer). */
  private scheduled = false;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly runNative: (batch: ResolvedBatch) => Promise<TopKRunResult>,
    private readonly rowsKindOf: (output: string) => RowsKind,
    private readonly limits: BatchLimits,
    private readonly windowMs: number,
    private readonly concurrency = 1,
  ) {}

  /** Requests queued or running. */
  get pending(): number {
    return this.queue.length + this.running;
  }

  async submit(batch: ResolvedBatch): Promise<TopKRunResult> {
    const pieces = splitBatch(batch, this.limits);
    const results = await Promise.all(pieces.map((piece) => new Promise<TopKRunResult>((resolve, reject) => {
      // Only requests for the same outputs and the same top-k share a run.
      this.queue.push({ batch: piece, key: `${piece.outputs.join('\0')}\0k${piece.topK ?? 0}`, resolve, reject });
      this.schedule();
    })));
    return concatResults(results);
  }

  /** Resolves once nothing is queued or running. */
  idle(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * With no window (or a full batch) the queue runs in a microtask, as soon
   * as the code that submitted returns: requests submitted together still
   * merge, a lone request waits for no turn of the event loop (tens of
   * microseconds on a busy host) nor timer (setTimeout(0) costs ~1 ms), and
   * requests arriving while every context is busy merge into the next run.
   */
  private schedule(): void {
    if (this.inFlight >= this.concurrency || this.scheduled) return;
    this.scheduled = true;
    const flush = () => {
      this.scheduled = false;
      void this.flush();
    };
    const full = this.queuedTokens() >= this.limits.maxTokens;
    if (full || this.windowMs === 0) {
      queueMicrotask(flush);
    } else {
      setTimeout(flush, this.windowMs);
    }
  }

  private queuedTokens(): number {
    return this.queue.reduce((n, w) => n + w.batch.inputIds.length, 0);
  }

  /** Takes the oldest request and every later one with the same outputs that still fits. */
  private takeGroup(): Waiting[] {
    const key = this.queue[0].key;
    const group: Waiting[] = [];
    const used: RowCounts = { tokens: 0, sequences: 0, selected: 0 };
    for (let i = 0; i < this.queue.length;) {
      const w = this.queue[i];
      const c = rowCounts(w.batch);
      const fits = used.tokens + c.tokens <= this.limits.maxTokens &&
        used.sequences + c.sequences <= this.limits.maxSequences &&
        used.selected + c.selected <= this.limits.maxSelectedRows;
      if (w.key === key && fits) {
        group.push(w);
        used.tokens += c.tokens;
        used.sequences += c.sequences;
        used.selected += c.selected;
        this.queue.splice(i, 1);
      } else {
        i++;
      }
    }
    return group;
  }

  private async flush(): Promise<void> {
    if (this.queue.length === 0) return;
    const group = this.takeGroup();
    this.running += group.length;
    this.inFlight++;
    // Another context may be free: what is still queued can start now.
    if (this.queue.length > 0) this.schedule();
    try {
      await this.runGroup(group);
    } finally {
      this.running -= group.length;
      this.inFlight--;
      if (this.queue.length > 0) {
        this.schedule();
      } else if (this.pending === 0) {
        this.idleWaiters.splice(0).forEach((wake) => wake());
      }
    }
  }

  private async runGroup(group: Waiting[]): Promise<void> {
    const batches = group.map((w) => w.batch);
    try {
      const results = splitResult(await this.runNative(mergeBatches(batches)), batches, this.rowsKindOf);
      group.forEach((w, i) => w.resolve(results[i]));
    } catch (err) {
      if (group.length === 1) {
        group[0].reject(err);
        return;
      }
      // One bad request must not fail its neighbours: run each on its own.
      for (const w of group) {
        try {
          w.resolve(await this.runNative(w.batch));
        } catch (single) {
          w.reject(single);
        }
      }
    }
  }
}
