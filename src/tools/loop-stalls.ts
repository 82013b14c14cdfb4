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
 *
 * Each gap over 1 ms is then attributed: V8's collections are observed
 * (perf_hooks 'gc' entries: the JS thread's pauses, on the clock of
 * performance.now()), and a long gap that overlaps one is one a collection
 * had a part in; the others are what the host or the code that ran (our
 * addon included) caused.
 */
import { constants, PerformanceObserver, type PerformanceEntry } from 'perf_hooks';

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
  /** Garbage collections that started while probing. */
  gcCount: number;
  /** Longest of their pauses, milliseconds (0 without one). */
  gcMaxMs: number;
  /** What kind of collection the longest pause was: 'minor' (a scavenge of the young generation), 'major' (mark-compact), 'incremental', 'weakcb', or '' without one. */
  gcMaxKind: string;
  /** Major (mark-compact) collections among them: these pause longest, and grow with what survives. */
  gcMajorCount: number;
  /** Their pauses added up, milliseconds. */
  gcTotalMs: number;
  /** Gaps longer than 1 ms that overlap a collection: stalls V8's garbage collector had a part in. */
  over1MsDuringGc: number;
  /** Longest gap over 1 ms that overlaps no collection, milliseconds (0 if there was none): a stall the host or the code that ran caused. */
  maxMsWithoutGc: number;
  /** Gaps longer than 1 ms past the first 4096, counted in over1Ms but not attributed (0 unless the loop stalled that often). */
  over1MsUnattributed: number;
}

/** Gaps are counted in 1 µs buckets up to this many; longer ones in the last. */
const HISTOGRAM_US = 100_000;
/** A gap from this many microseconds on is long: counted in over1Ms and kept for attribution. */
const LONG_GAP_US = 1000;
/** Long gaps kept for attribution, in arrays allocated up front so that keeping one allocates nothing. */
const LONG_GAPS = 4096;

/**
 * Runs `work` back to back (or nothing, for the baseline) for `durationMs`
 * while timing the loop's turns. The probe keeps nothing per turn (a
 * histogram instead of a list of gaps, the clock and the long gaps in typed
 * arrays allocated up front), so it makes no collection longer. It does
 * cause young-generation ones: each setImmediate allocates an Immediate
 * that dies young, a scavenge every few thousand turns (every 5-10 ms, mostly
 * of 0.1-0.3 ms, on a 2-core x86 box), counted like any other; the idle probe
 * shows them.
 */
export async function measureLoopStalls(work: (() => Promise<unknown>) | undefined, durationMs: number): Promise<LoopStalls> {
  const histogram = new Uint32Array(HISTOGRAM_US);
  const clock = new Float64Array(2);  // [last turn, longest gap], milliseconds
  const longStart = new Float64Array(LONG_GAPS);
  const longEnd = new Float64Array(LONG_GAPS);
  let longGaps = 0;
  let probing = true;
  const collections: PerformanceEntry[] = [];
  const observer = new PerformanceObserver((list) => { collections.push(...list.getEntries()); });
  observer.observe({ entryTypes: ['gc'] });
  const start = performance.now();
  clock[0] = start;
  const turn = () => {
    const now = performance.now();
    const gap = now - clock[0];
    const bucket = Math.min(HISTOGRAM_US - 1, Math.floor(gap * 1000));
    if (bucket >= LONG_GAP_US) {
      if (longGaps < LONG_GAPS) {
        longStart[longGaps] = clock[0];
        longEnd[longGaps] = now;
      }
      longGaps++;
    }
    clock[0] = now;
    if (gap > clock[1]) clock[1] = gap;
    histogram[bucket]++;
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
    // The turn already queued runs before this one. Node hands the observer
    // a collection's entry from a native immediate, which runs at the start
    // of the next check phase, so after the turn after that every
    // collection before the probe's last turn is in the observer's buffer,
    // if not delivered to it already.
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    collections.push(...observer.takeRecords());
    observer.disconnect();
  }
  const last = clock[0];
  const turns = histogram.reduce((n, count) => n + count, 0);
  let p99Us = 0;
  for (let seen = 0; p99Us < HISTOGRAM_US && seen + histogram[p99Us] < 0.99 * turns; p99Us++) seen += histogram[p99Us];
  const gcs = collections.filter((gc) => gc.startTime >= start && gc.startTime < last).sort((a, b) => a.startTime - b.startTime);
  const attributed = attributeGaps(longStart, longEnd, Math.min(longGaps, LONG_GAPS), gcs);
  const longestGc = gcs.reduce<PerformanceEntry | undefined>((max, gc) => (max && max.duration >= gc.duration ? max : gc), undefined);
  return {
    requests,
    turns,
    maxMs: turns > 0 ? clock[1] : NaN,
    p99Ms: turns > 0 ? (p99Us + 1) / 1000 : NaN,
    over1Ms: longGaps,
    gcCount: gcs.length,
    gcMaxMs: longestGc?.duration ?? 0,
    gcMaxKind: longestGc ? gcKind(longestGc) : '',
    gcMajorCount: gcs.filter((gc) => gcKind(gc) === 'major').length,
    gcTotalMs: gcs.reduce((sum, gc) => sum + gc.duration, 0),
    over1MsDuringGc: attributed.duringGc,
    maxMsWithoutGc: attributed.longestWithoutGcMs,
    over1MsUnattributed: Math.max(0, longGaps - LONG_GAPS),
  };
}

const GC_KINDS: ReadonlyArray<[number, string]> = [
  [constants.NODE_PERFORMANCE_GC_MINOR, 'minor'], [constants.NODE_PERFORMANCE_GC_MAJOR, 'major'],
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL, 'incremental'], [constants.NODE_PERFORMANCE_GC_WEAKCB, 'weakcb'],
];

/** The kind of a 'gc' entry (its detail.kind), by name. */
function gcKind(gc: PerformanceEntry): string {
  const kind = (gc as { detail?: { kind?: number } | null }).detail?.kind;
  return GC_KINDS.find(([value]) => value === kind)?.[1] ?? `kind ${kind}`;
}

/**
 * Splits the first `count` gaps (from `starts[i]` to `ends[i]`) into those
 * that overlap one of `gcs` and the others, of which it returns the longest
 * (0 if none); all in milliseconds on one clock, both lists in time order.
 */
export function attributeGaps(starts: Float64Array, ends: Float64Array, count: number,
  gcs: ReadonlyArray<Pick<PerformanceEntry, 'startTime' | 'duration'>>): { duringGc: number; longestWithoutGcMs: number } {
  let duringGc = 0;
  let longestWithoutGcMs = 0;
  // Neither list's intervals overlap each other, so one pass does; a
  // collection is passed over only once it ended before a gap began, since
  // one may span two gaps.
  for (let i = 0, g = 0; i < count; i++) {
    while (g < gcs.length && gcs[g].startTime + gcs[g].duration <= starts[i]) g++;
    if (g < gcs.length && gcs[g].startTime < ends[i]) duringGc++;
    else longestWithoutGcMs = Math.max(longestWithoutGcMs, ends[i] - starts[i]);
  }
  return { duringGc, longestWithoutGcMs };
}

/** The collections of a probe and the part they had in its long gaps, for one line of a report. */
export function describeGc(stalls: LoopStalls): string {
  const unattributed = stalls.over1MsUnattributed > 0 ? `, ${stalls.over1MsUnattributed} not attributed` : '';
  const longest = stalls.gcCount > 0 ? `longest ${stalls.gcMaxMs.toFixed(2)} ms ${stalls.gcMaxKind}, ` : '';
  return `${stalls.gcCount} GC pauses (${stalls.gcMajorCount} major; ${longest}${stalls.gcTotalMs.toFixed(2)} ms in all), `
    + `${stalls.over1MsDuringGc} during GC and ${stalls.over1Ms - stalls.over1MsDuringGc - stalls.over1MsUnattributed} without `
    + `(longest ${stalls.maxMsWithoutGc.toFixed(2)} ms)${unattributed} of ${stalls.over1Ms} over 1 ms`;
}
