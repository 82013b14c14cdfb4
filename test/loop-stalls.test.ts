import { strict as assert } from 'assert';
import { attributeGaps, measureLoopStalls } from '../src/tools/loop-stalls';

/** Busy-waits on the JS thread, as a callback that blocks the loop would. */
function blockFor(ms: number): void {
  const end = process.hrtime.bigint() + BigInt(Math.round(ms * 1e6));
  while (process.hrtime.bigint() < end) { /* blocking on purpose */ }
}

const futex = new Int32Array(new SharedArrayBuffer(4));

/**
 * Holds the JS thread for at least `ms`, asleep in Atomics.wait: nothing is
 * allocated meanwhile, so V8 has no reason to collect (a spin on a clock
 * would box its numbers in unoptimised code and trigger scavenges).
 */
function holdWithoutAllocating(ms: number): void {
  const end = performance.now() + ms;
  for (let left = ms; left > 0; left = end - performance.now()) Atomics.wait(futex, 0, 0, left);
}

/** Allocates about 20 MB of small arrays kept until it returns: more than the young generation holds, so V8 collects during it. */
function allocateAndKeep(): number {
  const kept: number[][] = [];
  for (let i = 0; i < 20_000; i++) kept.push(new Array<number>(128).fill(i));
  return kept.length;
}

describe('measureLoopStalls (the event-loop measure of the GPU bench)', () => {
  it('reports a callback that blocks the loop as the longest stall', async () => {
    const stalls = await measureLoopStalls(async () => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      blockFor(30);
    }, 300);
    assert.ok(stalls.requests >= 3, `${stalls.requests} requests`);
    assert.ok(stalls.maxMs >= 29, `longest stall ${stalls.maxMs} ms, a 30 ms block ran`);
    assert.ok(stalls.over1Ms >= stalls.requests, `${stalls.over1Ms} stalls over 1 ms for ${stalls.requests} blocks`);
    assert.ok(stalls.turns > stalls.requests, 'the loop turned between the blocks');
  });

  it('sees the loop turning freely when nothing blocks it', async () => {
    const stalls = await measureLoopStalls(undefined, 200);
    assert.ok(stalls.turns > 100, `${stalls.turns} turns in 200 ms`);
    assert.ok(stalls.p99Ms < 5, `p99 gap ${stalls.p99Ms} ms with nothing running`);
  });

  it('attributes each gap to a collection it overlaps, if any', () => {
    const gaps: Array<[number, number]> = [[0, 2], [10, 12], [20, 22], [30, 33], [35, 37], [50, 56], [60, 61.5], [70, 75]];
    const gcs = [
      { startTime: 9, duration: 1.5 },    // began before [10, 12], ended in it
      { startTime: 21, duration: 0.1 },   // inside [20, 22]
      { startTime: 32.5, duration: 3 },   // spans [30, 33] and [35, 37]
      { startTime: 45, duration: 1 },     // between gaps
      { startTime: 56, duration: 1 },     // begins as [50, 56] ends
      { startTime: 58, duration: 2 },     // ends as [60, 61.5] begins
    ];
    const attributed = attributeGaps(Float64Array.from(gaps, (g) => g[0]), Float64Array.from(gaps, (g) => g[1]), gaps.length, gcs);
    assert.deepStrictEqual(attributed, { duringGc: 4, longestWithoutGcMs: 6 });
    const firstTwo = attributeGaps(Float64Array.from(gaps, (g) => g[0]), Float64Array.from(gaps, (g) => g[1]), 2, gcs);
    assert.deepStrictEqual(firstTwo, { duringGc: 1, longestWithoutGcMs: 2 });
    assert.deepStrictEqual(attributeGaps(Float64Array.of(0), Float64Array.of(3), 1, []), { duringGc: 0, longestWithoutGcMs: 3 });
  });

  it('attributes a block that collects no garbage to no collection', async () => {
    const stalls = await measureLoopStalls(async () => {
      await new Promise((resolve) => setTimeout(resolve, 2));
      holdWithoutAllocating(5);
    }, 300);
    assert.ok(stalls.requests >= 3, `${stalls.requests} requests`);
    assert.ok(stalls.over1Ms >= 1, `${stalls.over1Ms} stalls over 1 ms`);
    // Each hold is a gap of its own, in which V8 has no reason to collect: at most a few share their gap with a collection.
    assert.ok(stalls.maxMsWithoutGc >= 4, `longest stall without GC ${stalls.maxMsWithoutGc} ms: ${JSON.stringify(stalls)}`);
  });

  it('attributes a stall in which V8 collects garbage to a collection', async () => {
    const stalls = await measureLoopStalls(async () => {
      await new Promise((resolve) => setTimeout(resolve, 2));
      allocateAndKeep();
    }, 200);
    assert.ok(stalls.requests >= 1, `${stalls.requests} requests`);
    assert.ok(stalls.gcCount > 0, `no collection seen: ${JSON.stringify(stalls)}`);
    assert.ok(stalls.gcMaxMs > 0 && stalls.gcTotalMs >= stalls.gcMaxMs, JSON.stringify(stalls));
    assert.ok(['minor', 'major', 'incremental', 'weakcb'].includes(stalls.gcMaxKind), `kind of the longest: ${stalls.gcMaxKind}`);
    assert.ok(stalls.gcMajorCount <= stalls.gcCount, JSON.stringify(stalls));
    // The collections happen inside the allocation, which holds the loop for milliseconds.
    assert.ok(stalls.over1MsDuringGc >= 1, `no stall over 1 ms overlaps a collection: ${JSON.stringify(stalls)}`);
    assert.ok(stalls.over1MsDuringGc <= stalls.over1Ms, JSON.stringify(stalls));
  });
});
