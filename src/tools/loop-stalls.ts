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
  /** 99th percentile of the gaps, milliseconds (to 1 µs). */
  p99Ms: number;
  /** Gaps longer than 1 ms: compare with an idle probe, since a busy or virtual host stalls now and then on its own. */
  over1Ms: number;
}

/** Gaps are counted in 1 µs buckets up to this many; longer ones in the last. */
const HISTOGRAM_US = 100_000;

/**
 * Runs `work` back to back (or nothing, for the baseline) for `durationMs`
 * while timing the loop's turns. The probe allocates nothing that survives
 * a turn (a histogram instead of a list of gaps, the clock kept in a typed
 * array), so it does not itself cause the garbage collections it would then
 * measure.
 */
export async function measureLoopStalls(work: (() => Promise<unknown>) | undefined, durationMs: number): Promise<LoopStalls> {
  const histogram = new Uint32Array(HISTOGRAM_US);
  const clock = new Float64Array(2);  // [last turn, longest gap], milliseconds
  let probing = true;
  clock[0] = performance.now();
  const turn = () => {
    const now = performance.now();
    const gap = now - clock[0];
    clock[0] = now;
    if (gap > clock[1]) clock[1] = gap;
    histogram[Math.min(HISTOGRAM_US - 1, Math.floor(gap * 1000))]++;
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
    // One more turn, so that the gap the last request caused (its callbacks
    // ran just before this) is counted; the probe's pending turn runs first.
    await new Promise((resolve) => setImmediate(resolve));
    probing = false;
  }
  const turns = histogram.reduce((n, count) => n + count, 0);
  let p99Us = 0;
  for (let seen = 0; p99Us < HISTOGRAM_US && seen + histogram[p99Us] < 0.99 * turns; p99Us++) seen += histogram[p99Us];
  return {
    requests,
    turns,
    maxMs: turns > 0 ? clock[1] : NaN,
    p99Ms: turns > 0 ? (p99Us + 1) / 1000 : NaN,
    over1Ms: histogram.subarray(1000).reduce((n, count) => n + count, 0),
  };
}
