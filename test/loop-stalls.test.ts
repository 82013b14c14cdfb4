import { strict as assert } from 'assert';
import { measureLoopStalls } from '../src/tools/loop-stalls';

/** Busy-waits on the JS thread, as a callback that blocks the loop would. */
function blockFor(ms: number): void {
  const end = process.hrtime.bigint() + BigInt(Math.round(ms * 1e6));
  while (process.hrtime.bigint() < end) { /* blocking on purpose */ }
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
});
