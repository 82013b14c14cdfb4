/**
 * How long the event loop is kept from running callbacks while some work
 * goes on: the measure behind "the event loop is never blocked more than
 * 1 ms" (issue 3, bench/gpu/README.md).
 *
 * A chain of setImmediate callbacks records the time between consecutive
 * turns. While an immediate is pending, libuv polls for I/O without waiting,
 * so the gap between two turns is the time spent in everything else the
 * loop ran in between (completion callbacks, promise continuations, timers,
 * garbage collection) plus the loop's own few microseconds. Unlike the
 * lateness of a 1 ms timer, no sleep or timer granularity enters the
 * number. The chain keeps one core busy while it runs: a measuring tool,
 * not something to leave on in production.
 */

export interface LoopStalls {
  /** Completed `work` calls while probing. */
  requests: number;
  /** Turns of the loop observed. */
  turns: number;
  /** Longest gap between two turns, milliseconds. */
  maxMs: number;
  /** 99th percentile of the gaps, milliseconds. */
  p99Ms: number;
}

/**
 * Runs `work` back to back (or nothing, for the baseline) for `durationMs`
 * while timing the loop's turns.
 */
export async function measureLoopStalls(work: (() => Promise<unknown>) | undefined, durationMs: number): Promise<LoopStalls> {
  const gaps: number[] = [];
  let probing = true;
  let last = process.hrtime.bigint();
  const turn = () => {
    const now = process.hrtime.bigint();
    gaps.push(Number(now - last) / 1e6);
    last = now;
    if (probing) setImmediate(turn);
  };
  setImmediate(turn);
  const end = Date.now() + durationMs;
  let requests = 0;
  try {
    while (Date.now() < end) {
      if (work) {
        await work();
        requests++;
      } else {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
  } finally {
    probing = false;
  }
  gaps.sort((a, b) => a - b);
  return {
    requests,
    turns: gaps.length,
    maxMs: gaps[gaps.length - 1] ?? NaN,
    p99Ms: gaps[Math.floor(0.99 * (gaps.length - 1))] ?? NaN,
  };
}
