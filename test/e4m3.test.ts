import * as assert from 'assert';
import { e4m3Scale, e4m3ToFloat32, encodeE4M3, float32ToE4M3 } from '../src/build/e4m3';

/** A code's value from its bit fields as the OCP FP8 spec states them: (-1)^s · 2^(e-7) · 1.m, subnormals 2^-6 · 0.m. */
function specValue(code: number): number {
  const negative = code >= 0x80;
  const e = (code & 0x7f) >> 3;
  const m = code & 7;
  if (e === 15 && m === 7) return NaN;
  const magnitude = e === 0 ? 2 ** -6 * (m / 8) : 2 ** (e - 7) * (1 + m / 8);
  return negative ? -magnitude : magnitude;
}

const ALL_CODES = Uint8Array.from({ length: 256 }, (_, c) => c);
const FINITE_CODES = ALL_CODES.filter((c) => (c & 0x7f) !== 0x7f);
const encode = (values: number[], scale = 1) => [...float32ToE4M3(Float32Array.from(values), scale)];

describe('E4M3', () => {
  it('decodes all 256 codes: 0x7F and 0xFF are NaN, 0x80 is -0, 0x7E is 448', () => {
    const decoded = e4m3ToFloat32(ALL_CODES, 1);
    for (const code of ALL_CODES) assert.ok(Object.is(decoded[code], specValue(code)), `code ${code.toString(16)}: ${decoded[code]}`);
    assert.ok(Number.isNaN(decoded[0x7f]) && Number.isNaN(decoded[0xff]));
    assert.ok(Object.is(decoded[0x80], -0));
    assert.deepStrictEqual([decoded[0x7e], decoded[0xfe], decoded[0x08], decoded[0x01]], [448, -448, 2 ** -6, 2 ** -9]);
  });

  it('decodes times the scale', () => {
    const decoded = e4m3ToFloat32(ALL_CODES, 0.37);
    for (const code of FINITE_CODES) assert.strictEqual(decoded[code], Math.fround(specValue(code) * 0.37), `code ${code}`);
  });

  it('every finite code round-trips, at scale 1, a power of two and an arbitrary scale', () => {
    for (const scale of [1, 2 ** -7, 0.0123]) {
      assert.deepStrictEqual(float32ToE4M3(e4m3ToFloat32(FINITE_CODES, scale), scale), FINITE_CODES, `scale ${scale}`);
    }
  });

  it('rounds a midpoint between neighbouring codes to the even one, and anything off it to the nearer', () => {
    // Codes 0..0x7E in order are increasing magnitudes: subnormals, into the normals, up to 448.
    for (let code = 0; code < 0x7e; code++) {
      const [low, high] = [specValue(code), specValue(code + 1)];
      const mid = (low + high) / 2;
      const even = code % 2 === 0 ? code : code + 1;
      const nudge = (high - low) / 64;
      assert.deepStrictEqual(encode([mid, -mid, mid - nudge, mid + nudge]), [even, 0x80 | even, code, code + 1], `between ${low} and ${high}`);
    }
  });

  it('saturates to ±448 beyond the largest finite value, Infinity included', () => {
    assert.deepStrictEqual(encode([448, 449, 464, 465, 480, 1e6, Infinity]), [0x7e, 0x7e, 0x7e, 0x7e, 0x7e, 0x7e, 0x7e]);
    assert.deepStrictEqual(encode([-449, -464, -1e6, -Infinity]), [0xfe, 0xfe, 0xfe, 0xfe]);
  });

  it('rounds tiny values into the subnormals or to a signed zero', () => {
    assert.deepStrictEqual(encode([2 ** -10, 2 ** -9 * 1.5, 2 ** -9 * 2.5, 2 ** -9 * 0.75, 2 ** -9 * 0.49, 1e-30]), [0x00, 0x02, 0x02, 0x01, 0x00, 0x00]);
    assert.deepStrictEqual(encode([-(2 ** -10), -(2 ** -9) * 1.5, 0, -0]), [0x80, 0x82, 0x00, 0x80]);
    // The largest subnormal rounds up across the step into the normals.
    assert.deepStrictEqual(encode([2 ** -9 * 7.75]), [0x08]);
  });

  it('encodes NaN as 0x7F whatever its sign', () => {
    const negativeNaN = new Float32Array(new Uint32Array([0xffc00000]).buffer);
    assert.ok(Number.isNaN(negativeNaN[0]));
    assert.deepStrictEqual([...float32ToE4M3(negativeNaN, 1)], [0x7f]);
    assert.deepStrictEqual(encode([NaN]), [0x7f]);
    assert.strictEqual(encodeE4M3(NaN), 0x7f);
    assert.ok(Number.isNaN(e4m3ToFloat32(float32ToE4M3(Float32Array.of(NaN), 1), 1)[0]));
  });

  it('encodes values divided by the scale', () => {
    assert.deepStrictEqual(encode([896, 3, -0.25], 2), [0x7e, encodeE4M3(1.5), encodeE4M3(-0.125)]);
    assert.deepStrictEqual(encode([3], 0.5), [encodeE4M3(6)]);
    for (const scale of [0, -1, NaN, Infinity]) {
      assert.throws(() => float32ToE4M3(Float32Array.of(1), scale), { code: 'E_INPUT' });
      assert.throws(() => e4m3ToFloat32(Uint8Array.of(1), scale), { code: 'E_INPUT' });
    }
  });

  it('scales a tensor so its largest finite magnitude becomes 448', () => {
    const values = Float32Array.of(0.5, -3.25, 1, Infinity);
    assert.strictEqual(e4m3Scale(values), Math.fround(3.25 / 448));
    assert.deepStrictEqual([...float32ToE4M3(values, e4m3Scale(values))].slice(1), [0xfe, encodeE4M3(448 / 3.25), 0x7e]);
    assert.strictEqual(e4m3Scale(new Float32Array(4)), 1);
    assert.strictEqual(e4m3Scale(Float32Array.of(1e-45)), 1, 'a scale that underflows float32 falls back to 1');
  });
});
