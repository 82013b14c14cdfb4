/**
 * OCP FP8 E4M3 (NVIDIA's __nv_fp8_e4m3): sign, 4 exponent bits (bias 7),
 * 3 mantissa bits; no infinities; 0x7F and 0xFF are NaN; the largest finite
 * magnitude is 448. Encoding rounds to nearest, ties to even, and saturates
 * as cvt.rn.satfinite does, so the builder's weights round as the GPU's
 * activations do.
 */
import { FusedRTError } from '../errors';

/** Largest finite E4M3 magnitude (code 0x7E). */
export const E4M3_MAX = 448;
const NAN_CODE = 0x7f;
/** The smallest normal exponent; below it the same 3-bit step continues as subnormals (m * 2^-9). */
const MIN_EXPONENT = -6;

/** Value of each of the 256 codes. */
const DECODED = Float64Array.from({ length: 256 }, (_, code) => {
  const sign = code & 0x80 ? -1 : 1;
  const exponent = (code >> 3) & 0xf;
  const mantissa = code & 0x7;
  if (exponent === 0xf && mantissa === 0x7) return NaN;
  if (exponent === 0) return sign * mantissa * 2 ** -9;
  return sign * (8 + mantissa) * 2 ** (exponent - 10);
});

function checkScale(scale: number): void {
  if (!(scale > 0) || !Number.isFinite(scale)) throw new FusedRTError('E_INPUT', `E4M3 scale must be a finite number > 0, got ${scale}`);
}

/** The E4M3 code nearest to `value` (ties to even); beyond ±448, including ±Infinity, ±448. */
export function encodeE4M3(value: number): number {
  if (Number.isNaN(value)) return NAN_CODE;
  const sign = value < 0 || Object.is(value, -0) ? 0x80 : 0;
  const magnitude = Math.abs(value);
  // Everything from 448 up rounds to 448: up to 464 by nearest-even, above it by saturation.
  if (magnitude >= E4M3_MAX) return sign | 0x7e;
  let exponent = Math.max(MIN_EXPONENT, Math.floor(Math.log2(magnitude)));
  // Math.log2 may be off by one next to a power of two.
  if (exponent > MIN_EXPONENT && 2 ** exponent > magnitude) exponent--;
  else if (2 ** (exponent + 1) <= magnitude) exponent++;
  // The significand in eighths of the binade, [8, 16) for normals and [0, 8) for subnormals; scaling by 2^k is exact.
  const eighths = magnitude * 2 ** (3 - exponent);
  const floor = Math.floor(eighths);
  const fraction = eighths - floor;
  const rounded = fraction > 0.5 || (fraction === 0.5 && floor % 2 === 1) ? floor + 1 : floor;
  // Rounding up to 16 eighths carries into the next exponent, and a subnormal rounding up to 8 becomes the smallest normal.
  return sign | (((exponent - MIN_EXPONENT + 1) << 3) + rounded - 8);
}

/** E4M3 codes of values[i] / scale. */
export function float32ToE4M3(values: Float32Array, scale: number): Uint8Array {
  checkScale(scale);
  const out = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = encodeE4M3(values[i] / scale);
  return out;
}

/** The values of E4M3 codes times scale. */
export function e4m3ToFloat32(bytes: Uint8Array, scale: number): Float32Array {
  checkScale(scale);
  const out = new Float32Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = DECODED[bytes[i]] * scale;
  return out;
}

/**
 * Per-tensor scale that maps the largest finite magnitude onto 448, so the
 * tensor uses E4M3's whole range. It is a float32 value because the runtime
 * reads it as one: encoding and decoding then use the same scale. A tensor
 * of zeros (or values so small that the scale underflows) gets 1, which
 * encodes it as zeros all the same.
 */
export function e4m3Scale(values: Float32Array): number {
  let largest = 0;
  for (let i = 0; i < values.length; i++) {
    const magnitude = Math.abs(values[i]);
    if (magnitude > largest && magnitude !== Infinity) largest = magnitude;
  }
  const scale = Math.fround(largest / E4M3_MAX);
  return scale > 0 ? scale : 1;
}
