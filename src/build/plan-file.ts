/**
 * Reading and writing the plan container (docs/plan-format.md). This layer
 * knows bytes, offsets and the checksum; what the header means is the
 * builder's (src/models/) and the runtime's business.
 */
import * as fs from 'fs';
import * as zlib from 'zlib';
import { FusedRTError } from '../errors';
import type { DType, PlanHeader, TensorEntry } from './plan-types';

export const PLAN_MAGIC = Buffer.from('FRTPLAN\0', 'latin1');
export const PLAN_FOOTER_MAGIC = Buffer.from('FEND', 'latin1');
export const PLAN_FORMAT_VERSION = 1;
export const PLAN_ALIGNMENT = 64;
const PREAMBLE_BYTES = 16;
const FOOTER_BYTES = 8;
const MAX_HEADER_BYTES = 16 * 1024 * 1024;

export const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, u8: 1 };

export function alignUp(n: number, alignment = PLAN_ALIGNMENT): number {
  return Math.ceil(n / alignment) * alignment;
}

/** A tensor to be written: its bytes are laid out exactly as the runtime reads them. */
export interface TensorData {
  name: string;
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

export type HeaderWithoutLayout = Omit<PlanHeader, 'tensors' | 'dataSize'>;

/** Assigns aligned offsets to the tensors; the result is the header that will be written. */
export function layoutTensors(header: HeaderWithoutLayout, tensors: TensorData[]): PlanHeader {
  const entries: TensorEntry[] = [];
  let offset = 0;
  const seen = new Set<string>();
  for (const t of tensors) {
    if (seen.has(t.name)) throw new FusedRTError('E_BUILD', `tensor "${t.name}" is written twice`);
    seen.add(t.name);
    const elements = t.shape.reduce((a, b) => a * b, 1);
    const size = elements * DTYPE_BYTES[t.dtype];
    if (size !== t.data.byteLength) {
      throw new FusedRTError('E_BUILD', `tensor "${t.name}" has ${t.data.byteLength} bytes, shape [${t.shape}] ${t.dtype} needs ${size}`);
    }
    entries.push({ name: t.name, dtype: t.dtype, shape: t.shape, offset, size });
    offset = alignUp(offset + size);
  }
  return { ...header, tensors: entries, dataSize: offset };
}

/**
 * Writes a plan file. Tensors are streamed one by one so that a large model
 * never needs a second in-memory copy. Returns the header as written.
 */
export function writePlan(path: string, header: HeaderWithoutLayout, tensors: TensorData[],
  onTensor?: (index: number, total: number) => void): PlanHeader {
  const full = layoutTensors(header, tensors);
  const headerBytes = Buffer.from(JSON.stringify(full), 'utf8');
  const preamble = Buffer.alloc(PREAMBLE_BYTES);
  PLAN_MAGIC.copy(preamble, 0);
  preamble.writeUInt32LE(PLAN_FORMAT_VERSION, 8);
  preamble.writeUInt32LE(headerBytes.length, 12);
  const dataStart = alignUp(PREAMBLE_BYTES + headerBytes.length);
  const fd = fs.openSync(path, 'w');
  try {
    let crc = 0;
    const put = (bytes: Uint8Array) => {
      // zlib.crc32 of an empty buffer can return 0 instead of the running value.
      if (bytes.byteLength === 0) return;
      fs.writeSync(fd, bytes);
      crc = zlib.crc32(bytes, crc);
    };
    put(preamble);
    put(headerBytes);
    put(Buffer.alloc(dataStart - PREAMBLE_BYTES - headerBytes.length));
    let written = 0;
    full.tensors.forEach((entry, i) => {
      put(Buffer.alloc(entry.offset - written));
      put(tensors[i].data);
      written = entry.offset + entry.size;
      onTensor?.(i + 1, tensors.length);
    });
    put(Buffer.alloc(full.dataSize - written));
    const footer = Buffer.alloc(FOOTER_BYTES);
    footer.writeUInt32LE(crc >>> 0, 0);
    PLAN_FOOTER_MAGIC.copy(footer, 4);
    fs.writeSync(fd, footer);
  } finally {
    fs.closeSync(fd);
  }
  return full;
}

/** A plan opened by the TypeScript side: the parsed header plus access to tensor bytes. */
export interface PlanContents {
  header: PlanHeader;
  /** Bytes of one tensor (a view into the file buffer, not a copy). */
  tensorBytes(name: string): Uint8Array;
  fileSize: number;
}

function corrupt(message: string): FusedRTError {
  return new FusedRTError('E_PLAN_CORRUPT', `invalid plan: ${message}`);
}

/**
 * Parses the container: magic, version, header JSON, tensor table bounds and
 * the checksum. Deep validation of ops and shapes is the native reader's job;
 * this reader is for tooling (inspect, the tokenizer) and checks what it uses.
 */
export function parsePlan(bytes: Uint8Array, verifyChecksum = true): PlanContents {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < PREAMBLE_BYTES + FOOTER_BYTES) throw corrupt(`file too small (${buf.length} bytes)`);
  if (!buf.subarray(0, 8).equals(PLAN_MAGIC)) throw corrupt('not a FusedRT plan (bad magic)');
  const version = buf.readUInt32LE(8);
  if (version !== PLAN_FORMAT_VERSION) {
    throw new FusedRTError('E_PLAN_VERSION', `plan format version ${version} is not supported (this build reads version ${PLAN_FORMAT_VERSION})`);
  }
  const headerLength = buf.readUInt32LE(12);
  if (headerLength < 2 || headerLength > MAX_HEADER_BYTES || PREAMBLE_BYTES + headerLength > buf.length - FOOTER_BYTES) {
    throw corrupt(`header length ${headerLength} out of range`);
  }
  let header: PlanHeader;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(PREAMBLE_BYTES, PREAMBLE_BYTES + headerLength)));
  } catch (e) {
    throw corrupt(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || header.format !== 'fusedrt-plan') throw corrupt('header is not a fusedrt-plan object');
  const dataStart = alignUp(PREAMBLE_BYTES + headerLength);
  if (!Number.isSafeInteger(header.dataSize) || header.dataSize < 0 || dataStart + header.dataSize + FOOTER_BYTES !== buf.length) {
    throw corrupt(`file size ${buf.length} does not match the header (data section ${header.dataSize} bytes)`);
  }
  const footerAt = buf.length - FOOTER_BYTES;
  if (!buf.subarray(footerAt + 4).equals(PLAN_FOOTER_MAGIC)) throw corrupt('missing footer (file truncated?)');
  if (verifyChecksum) {
    const expected = buf.readUInt32LE(footerAt);
    const actual = zlib.crc32(buf.subarray(0, footerAt)) >>> 0;
    if (expected !== actual) throw corrupt(`checksum mismatch (stored ${expected.toString(16)}, computed ${actual.toString(16)})`);
  }
  if (!Array.isArray(header.tensors)) throw corrupt('header has no tensor table');
  const byName = new Map<string, TensorEntry>();
  for (const t of header.tensors) {
    if (typeof t?.name !== 'string' || !Number.isSafeInteger(t.offset) || !Number.isSafeInteger(t.size) ||
      t.offset < 0 || t.size < 0 || t.offset + t.size > header.dataSize) {
      throw corrupt(`tensor ${JSON.stringify(t?.name)} lies outside the data section`);
    }
    byName.set(t.name, t);
  }
  return {
    header,
    fileSize: buf.length,
    tensorBytes(name: string): Uint8Array {
      const t = byName.get(name);
      if (!t) throw corrupt(`tensor "${name}" is missing`);
      return buf.subarray(dataStart + t.offset, dataStart + t.offset + t.size);
    },
  };
}

export function readPlanFile(path: string, verifyChecksum = true): PlanContents {
  return parsePlan(fs.readFileSync(path), verifyChecksum);
}
