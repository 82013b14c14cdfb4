/**
 * Reading and writing Hugging Face safetensors checkpoints
 * (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
 * length N, N bytes of JSON (`{name: {dtype, shape, data_offsets}}` plus an
 * optional `__metadata__`), then the tensor bytes. Reading is lazy: only the
 * header is parsed up front, tensors are read at their offsets when asked
 * for, so a 1.3 GB checkpoint never sits in memory as a whole.
 */
import * as fs from 'fs';
import * as path from 'path';
import { FusedRTError } from '../errors';

/** Bytes per element of every safetensors dtype, so sizes can be checked even for tensors we never read. */
const ELEMENT_BYTES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
};

/** The safetensors library refuses headers above 100 MB; so do we. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
const LENGTH_PREFIX_BYTES = 8;
/** Largest single read; Node's readSync takes at most 2^31 - 1 bytes per call. */
const READ_CHUNK_BYTES = 1 << 30;

export interface SafetensorsEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** The file holding the tensor. */
  file: string;
  /** Absolute byte offset of the tensor's data in `file`. */
  fileOffset: number;
  byteLength: number;
}

function modelError(file: string, message: string): FusedRTError {
  return new FusedRTError('E_MODEL', `${path.basename(file)}: ${message}`);
}

function readExactly(fd: number, target: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < target.byteLength) {
    const length = Math.min(READ_CHUNK_BYTES, target.byteLength - done);
    const n = fs.readSync(fd, target, done, length, position + done);
    if (n === 0) throw modelError(file, `unexpected end of file at byte ${position + done}`);
    done += n;
  }
}

/** Parses and validates the header of one safetensors file; reads only the header bytes. */
export function readSafetensorsHeader(file: string): { entries: SafetensorsEntry[]; metadata: Record<string, string> } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw modelError(file, `cannot open (${(e as Error).message})`);
  }
  try {
    const fileSize = fs.fstatSync(fd).size;
    if (fileSize < LENGTH_PREFIX_BYTES) throw modelError(file, `file is too small to be safetensors (${fileSize} bytes)`);
    const prefix = Buffer.alloc(LENGTH_PREFIX_BYTES);
    readExactly(fd, prefix, 0, file);
    const headerLength = prefix.readBigUInt64LE(0);
    if (headerLength < 2n || headerLength > BigInt(MAX_HEADER_BYTES) || headerLength > BigInt(fileSize - LENGTH_PREFIX_BYTES)) {
      throw modelError(file, `header length ${headerLength} is out of range for a ${fileSize}-byte file (not a safetensors file?)`);
    }
    const headerBytes = Buffer.alloc(Number(headerLength));
    readExactly(fd, headerBytes, LENGTH_PREFIX_BYTES, file);
    const dataStart = LENGTH_PREFIX_BYTES + headerBytes.length;
    return parseHeader(file, headerBytes, dataStart, fileSize - dataStart);
  } finally {
    fs.closeSync(fd);
  }
}

function parseHeader(file: string, headerBytes: Buffer, dataStart: number, dataSize: number) {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (e) {
    throw modelError(file, `header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw modelError(file, 'header is not a JSON object');
  const entries: SafetensorsEntry[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof value !== 'object' || value === null) throw modelError(file, '__metadata__ is not an object');
      metadata = value as Record<string, string>;
      continue;
    }
    entries.push(parseEntry(file, name, value, dataStart, dataSize));
  }
  return { entries, metadata };
}

function parseEntry(file: string, name: string, value: unknown, dataStart: number, dataSize: number): SafetensorsEntry {
  const bad = (why: string) => modelError(file, `tensor "${name}": ${why}`);
  if (typeof value !== 'object' || value === null) throw bad('entry is not an object');
  const { dtype, shape, data_offsets: offsets } = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (typeof dtype !== 'string') throw bad('dtype is missing');
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw bad(`shape ${JSON.stringify(shape)} is invalid`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    throw bad(`data_offsets ${JSON.stringify(offsets)} are invalid`);
  }
  const [begin, end] = offsets as number[];
  if (begin > end || end > dataSize) throw bad(`data_offsets [${begin}, ${end}] lie outside the ${dataSize}-byte data section`);
  const elementBytes = ELEMENT_BYTES[dtype];
  if (elementBytes !== undefined) {
    const expected = (shape as number[]).reduce((a, b) => a * b, 1) * elementBytes;
    if (expected !== end - begin) throw bad(`shape [${shape}] ${dtype} needs ${expected} bytes, data_offsets give ${end - begin}`);
  }
  return { name, dtype, shape: shape as number[], file, fileOffset: dataStart + begin, byteLength: end - begin };
}

/**
 * A checkpoint of one or more safetensors files, addressed by tensor name.
 * Tensors are read from disk on each `readFloat32` call.
 */
export class SafetensorsCheckpoint {
  private readonly entries = new Map<string, SafetensorsEntry>();

  /**
   * `files` are read in order; a tensor name found in two files is an error.
   * `indexFile` is the shard index the files came from, if any.
   */
  constructor(readonly files: string[], readonly indexFile?: string) {
    for (const file of files) {
      for (const entry of readSafetensorsHeader(file).entries) {
        const previous = this.entries.get(entry.name);
        if (previous) throw modelError(file, `tensor "${entry.name}" also appears in ${path.basename(previous.file)}`);
        this.entries.set(entry.name, entry);
      }
    }
  }

  /**
   * Opens `model.safetensors` in `dir`, or the shards listed by
   * `model.safetensors.index.json` (its `weight_map`, tensor name → shard).
   */
  static openDirectory(dir: string): SafetensorsCheckpoint {
    const single = path.join(dir, 'model.safetensors');
    const index = path.join(dir, 'model.safetensors.index.json');
    if (fs.existsSync(single)) return new SafetensorsCheckpoint([single]);
    if (fs.existsSync(index)) return SafetensorsCheckpoint.openIndex(index);
    const hasPytorchBin = fs.existsSync(path.join(dir, 'pytorch_model.bin')) || fs.existsSync(path.join(dir, 'pytorch_model.bin.index.json'));
    throw new FusedRTError('E_MODEL', hasPytorchBin
      ? `${dir} has only PyTorch .bin weights; convert them to model.safetensors first (transformers: model.save_pretrained(dir, safe_serialization=True))`
      : `${dir} has neither model.safetensors nor model.safetensors.index.json`);
  }

  private static openIndex(indexFile: string): SafetensorsCheckpoint {
    let weightMap: unknown;
    try {
      weightMap = (JSON.parse(fs.readFileSync(indexFile, 'utf8')) as { weight_map?: unknown }).weight_map;
    } catch (e) {
      throw modelError(indexFile, `cannot be read as JSON (${(e as Error).message})`);
    }
    if (typeof weightMap !== 'object' || weightMap === null) throw modelError(indexFile, 'has no weight_map object');
    const shards = [...new Set(Object.values(weightMap as Record<string, unknown>))];
    for (const shard of shards) {
      // Shard names are plain file names next to the index; anything else could read outside the model directory.
      if (typeof shard !== 'string' || shard !== path.basename(shard) || shard === '..' || shard === '.') {
        throw modelError(indexFile, `weight_map names an invalid shard file ${JSON.stringify(shard)}`);
      }
    }
    const dir = path.dirname(indexFile);
    const checkpoint = new SafetensorsCheckpoint((shards as string[]).sort().map((s) => path.join(dir, s)), indexFile);
    for (const [name, shard] of Object.entries(weightMap as Record<string, string>)) {
      const entry = checkpoint.entries.get(name);
      if (!entry) throw modelError(indexFile, `weight_map lists tensor "${name}" but ${shard} does not contain it`);
      if (path.basename(entry.file) !== shard) throw modelError(indexFile, `weight_map puts "${name}" in ${shard} but it is in ${path.basename(entry.file)}`);
    }
    return checkpoint;
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  entry(name: string): SafetensorsEntry | undefined {
    return this.entries.get(name);
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  /** Reads one tensor and converts it to float32 (F32, F16 and BF16 are supported). */
  readFloat32(name: string): Float32Array {
    const entry = this.entries.get(name);
    if (!entry) throw new FusedRTError('E_MODEL', `tensor "${name}" is not in the checkpoint`);
    const bad = (why: string) => modelError(entry.file, `tensor "${name}": ${why}`);
    if (entry.dtype !== 'F32' && entry.dtype !== 'F16' && entry.dtype !== 'BF16') {
      throw bad(`dtype ${entry.dtype} is not supported (F32, F16 or BF16 expected)`);
    }
    const elements = entry.shape.reduce((a, b) => a * b, 1);
    // Reading straight into a fresh ArrayBuffer keeps the typed-array views aligned; safetensors data offsets need not be.
    const raw = new Uint8Array(entry.byteLength);
    const fd = fs.openSync(entry.file, 'r');
    try {
      readExactly(fd, raw, entry.fileOffset, entry.file);
    } finally {
      fs.closeSync(fd);
    }
    if (entry.dtype === 'F32') return new Float32Array(raw.buffer, 0, elements);
    const halves = new Uint16Array(raw.buffer, 0, elements);
    return entry.dtype === 'F16' ? halfToFloat32(halves) : bfloat16ToFloat32(halves);
  }
}

export function bfloat16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = bits[i] << 16;
  return new Float32Array(out.buffer);
}

export function halfToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    if (exponent === 0) out[i] = sign * mantissa * 2 ** -24;
    else if (exponent === 31) out[i] = mantissa ? NaN : sign * Infinity;
    else out[i] = sign * (1024 + mantissa) * 2 ** (exponent - 25);
  }
  return out;
}

const f32 = new Float32Array(1);
const f32Bits = new Uint32Array(f32.buffer);

/** IEEE binary16 bits of one float32, rounded to nearest, ties to even; overflow gives ±Infinity. */
export function float32ToHalfBits(value: number): number {
  f32[0] = value;
  const x = f32Bits[0];
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  const mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 31) return sign | 0x7c00;
  if (halfExponent <= 0) {
    // Subnormal half (or zero): shift the full significand into place, then round.
    if (halfExponent < -10) return sign;
    const significand = mantissa | 0x800000;
    const shift = 14 - halfExponent;
    return sign | roundShift(significand, shift);
  }
  // A carry out of the mantissa correctly bumps the exponent (up to Infinity).
  return sign | ((halfExponent << 10) + roundShift(mantissa, 13));
}

/** value >> shift, rounded to nearest with ties to even. */
function roundShift(value: number, shift: number): number {
  const truncated = value >>> shift;
  const remainder = value - truncated * 2 ** shift;
  const half = 2 ** (shift - 1);
  return remainder > half || (remainder === half && (truncated & 1)) ? truncated + 1 : truncated;
}

export function float32ToHalf(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = float32ToHalfBits(values[i]);
  return out;
}

export interface SafetensorsTensor {
  name: string;
  /** BF16 data is raw bfloat16 bits, as F16 data is raw binary16 bits. */
  dtype: 'F32' | 'F16' | 'BF16';
  shape: number[];
  data: Float32Array | Uint16Array;
}

/**
 * Writes a safetensors file as the reference implementation lays it out:
 * header padded with spaces to a multiple of 8 bytes, tensors contiguous,
 * ordered by element size (largest first) then name.
 */
export function writeSafetensors(file: string, tensors: SafetensorsTensor[], metadata?: Record<string, string>): void {
  const ordered = [...tensors].sort((a, b) => ELEMENT_BYTES[b.dtype] - ELEMENT_BYTES[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of ordered) {
    const elements = t.shape.reduce((a, b) => a * b, 1);
    const expectedArray = t.dtype === 'F32' ? Float32Array : Uint16Array;
    if (!(t.data instanceof expectedArray) || t.data.length !== elements) {
      throw new FusedRTError('E_INPUT', `writeSafetensors: tensor "${t.name}" needs ${elements} elements in a ${expectedArray.name} for ${t.dtype} [${t.shape}]`);
    }
    if (t.name in header) throw new FusedRTError('E_INPUT', `writeSafetensors: tensor "${t.name}" is given twice`);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const prefix = Buffer.alloc(LENGTH_PREFIX_BYTES);
  prefix.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, prefix);
    fs.writeSync(fd, Buffer.from(json, 'utf8'));
    for (const t of ordered) fs.writeSync(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  } finally {
    fs.closeSync(fd);
  }
}
