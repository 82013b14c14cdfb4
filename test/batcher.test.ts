import { strict as assert } from 'assert';
import { Batcher, mergeBatches, ResolvedBatch, splitBatch, splitResult } from '../src/engine/batcher';
import type { RunResult } from '../src/engine/types';

/** A batch of sequences with the given lengths; ids encode (sequence, position) so slices can be checked. */
function batchOf(lengths: number[], selectEvery = 0, base = 0): ResolvedBatch {
  const ids: number[] = [];
  const cu = [0];
  const selected: number[] = [];
  lengths.forEach((len, s) => {
    for (let i = 0; i < len; i++) {
      if (selectEvery && i % selectEvery === 0) selected.push(ids.length);
      ids.push(base + s * 1000 + i);
    }
    cu.push(ids.length);
  });
  return {
    inputIds: Int32Array.from(ids),
    cuSeqlens: Int32Array.from(cu),
    selectedRows: Int32Array.from(selected),
    outputs: ['hidden', 'pooled', 'logits'],
  };
}

/** What a backend would return: each output row carries the id of the token (or first token) it came from. */
function fakeRun(b: ResolvedBatch): RunResult {
  const seqs = b.cuSeqlens.length - 1;
  return {
    hidden: { data: Float32Array.from(b.inputIds), rows: b.inputIds.length, cols: 1 },
    pooled: { data: Float32Array.from({ length: seqs }, (_, s) => b.inputIds[b.cuSeqlens[s]]), rows: seqs, cols: 1 },
    logits: { data: Float32Array.from(b.selectedRows!, (r) => b.inputIds[r]), rows: b.selectedRows!.length, cols: 1 },
  };
}

const kinds = { hidden: 'tokens', pooled: 'sequences', logits: 'selected' } as const;
const rowsKindOf = (name: string) => kinds[name as keyof typeof kinds];

describe('batcher', () => {
  it('merges requests and gives each its own rows back', () => {
    const parts = [batchOf([3, 5], 2, 0), batchOf([1], 1, 50000), batchOf([4, 2, 6], 3, 90000)];
    const merged = mergeBatches(parts);
    assert.deepEqual(Array.from(merged.cuSeqlens), [0, 3, 8, 9, 13, 15, 21]);
    const split = splitResult(fakeRun(merged), parts, rowsKindOf);
    parts.forEach((p, i) => assert.deepEqual(split[i], fakeRun(p)));
  });

  it('splits a request larger than the limits into whole sequences and reassembles it', async () => {
    const big = batchOf([5, 7, 3, 9, 2, 8], 2);
    const pieces = splitBatch(big, { maxTokens: 12, maxSequences: 2, maxSelectedRows: 12 });
    assert.ok(pieces.length > 1);
    for (const p of pieces) {
      assert.ok(p.inputIds.length <= 12 && p.cuSeqlens.length - 1 <= 2);
    }
    const batcher = new Batcher(async (b) => fakeRun(b), rowsKindOf, { maxTokens: 12, maxSequences: 2, maxSelectedRows: 12 }, 0);
    assert.deepEqual(await batcher.submit(big), fakeRun(big));
  });

  it('splits when the selected rows exceed maxSelectedRows', async () => {
    const masked = batchOf([4, 4, 4, 4], 2);
    const limits = { maxTokens: 100, maxSequences: 10, maxSelectedRows: 4 };
    const pieces = splitBatch(masked, limits);
    assert.deepEqual(pieces.map((p) => p.selectedRows!.length), [4, 4]);
    const batcher = new Batcher(async (b) => fakeRun(b), rowsKindOf, limits, 0);
    assert.deepEqual(await batcher.submit(masked), fakeRun(masked));
  });

  it('rejects a single sequence longer than maxTokens with E_SHAPE', () => {
    assert.throws(() => splitBatch(batchOf([20]), { maxTokens: 8, maxSequences: 4, maxSelectedRows: 8 }), { code: 'E_SHAPE' });
  });

  it('coalesces requests that arrive together into one run', async () => {
    const seen: number[] = [];
    const batcher = new Batcher(async (b) => { seen.push(b.cuSeqlens.length - 1); return fakeRun(b); },
      rowsKindOf, { maxTokens: 1000, maxSequences: 64, maxSelectedRows: 1000 }, 5);
    const requests = Array.from({ length: 10 }, (_, i) => batchOf([i + 1], 1, i * 10000));
    const results = await Promise.all(requests.map((r) => batcher.submit(r)));
    results.forEach((r, i) => assert.deepEqual(r, fakeRun(requests[i])));
    assert.deepEqual(seen, [10]);
    assert.equal(batcher.pending, 0);
  });

  it('fails only the bad request of a merged batch', async () => {
    const batcher = new Batcher(async (b) => {
      if (Array.from(b.inputIds).includes(-1)) throw Object.assign(new Error('bad id'), { code: 'E_INPUT' });
      return fakeRun(b);
    }, rowsKindOf, { maxTokens: 1000, maxSequences: 64, maxSelectedRows: 1000 }, 5);
    const good = batchOf([3], 1);
    const bad = { ...batchOf([2], 1), inputIds: Int32Array.from([-1, 4]) };
    const [a, b] = await Promise.allSettled([batcher.submit(good), batcher.submit(bad)]);
    assert.equal(a.status, 'fulfilled');
    assert.equal(b.status, 'rejected');
    assert.equal((b as PromiseRejectedResult).reason.code, 'E_INPUT');
  });

  it('keeps up to `concurrency` batches in flight and merges what arrives while all are busy', async () => {
    const started: number[] = [];
    const releases: Array<() => void> = [];
    let inFlight = 0;
    let mostInFlight = 0;
    const batcher = new Batcher(async (b) => {
      started.push(b.cuSeqlens.length - 1);
      inFlight++;
      mostInFlight = Math.max(mostInFlight, inFlight);
      await new Promise<void>((resolve) => releases.push(resolve));
      inFlight--;
      return fakeRun(b);
    }, rowsKindOf, { maxTokens: 1000, maxSequences: 64, maxSelectedRows: 1000 }, 0, 2);
    const nextTurn = () => new Promise((resolve) => setImmediate(resolve));
    const requests = Array.from({ length: 5 }, (_, i) => batchOf([i + 1], 1, i * 10000));
    const first = batcher.submit(requests[0]);
    await nextTurn();
    const second = batcher.submit(requests[1]);
    await nextTurn();
    // Both contexts are busy now: the last three wait and then run as one batch.
    const rest = requests.slice(2).map((r) => batcher.submit(r));
    await nextTurn();
    assert.deepEqual(started, [1, 1]);
    releases.shift()!();
    await first;
    await nextTurn();
    assert.deepEqual(started, [1, 1, 3]);
    releases.splice(0).forEach((release) => release());
    const results = await Promise.all([first, second, ...rest]);
    results.forEach((r, i) => assert.deepEqual(r, fakeRun(requests[i])));
    assert.equal(mostInFlight, 2);
    await batcher.idle();
    assert.equal(batcher.pending, 0);
  });
});
