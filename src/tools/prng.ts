/**
 * A counter-based pseudo-random generator built from 32-bit integer operations
 * only, so that TypeScript and numpy (bench/make_bench_onnx.py) produce the
 * very same float32 weights bit for bit: the benchmark model is generated on
 * both machines instead of being transferred. The specification is in
 * bench/README.md ("The weight generator"); changing anything here changes
 * every generated model and the golden values in test/random-model.test.ts.
 */

const FNV_OFFSET_BASIS = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
/** 2^32 / golden ratio: consecutive counters land far apart before mixing. */
const COUNTER_STEP = 0x9e3779b1;
const TWO_POW_24 = 16777216;

/** FNV-1a over the UTF-8 bytes of `text`, as an unsigned 32-bit integer. */
export function fnv1a32(text: string): number {
  let hash = FNV_OFFSET_BASIS;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash = Math.imul(hash ^ byte, FNV_PRIME) >>> 0;
  }
  return hash;
}

/** murmur3's 32-bit finaliser: every input bit affects every output bit. */
export function fmix32(value: number): number {
  let x = value >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/** The per-tensor stream key: tensors of one model are independent streams. */
export function streamSeed(tensorName: string, seed: number): number {
  return (fnv1a32(tensorName) ^ seed) >>> 0;
}

/** The `index`-th 32-bit output of the stream `streamKey`. */
export function randomUint32(streamKey: number, index: number): number {
  return fmix32((Math.imul(index, COUNTER_STEP) + streamKey) >>> 0);
}

/** Element `index` of the stream as a uniform number in [0, 1) with 24 random bits. */
export function randomUnit(streamKey: number, index: number): number {
  return (randomUint32(streamKey, index) >>> 8) / TWO_POW_24;
}

/**
 * `count` float32 values `center + (u - 0.5) * 2 * amplitude`, u from
 * randomUnit, computed in float64 and rounded once to float32: uniform on
 * [center - amplitude, center + amplitude), standard deviation amplitude/√3.
 */
export function uniformFloat32(
  tensorName: string, seed: number, count: number, center: number, amplitude: number,
): Float32Array {
  const key = streamSeed(tensorName, seed);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    out[i] = center + (randomUnit(key, i) - 0.5) * 2 * amplitude;
  }
  return out;
}
