/**
 * Reading and writing the plan container (docs/plan-format.md). This layer
 * knows bytes, offsets and the checksum; what the header means is the
 * builder's (src/models/) and the runtime's business.
 */
import * as fs from 'fs';
import * as zlib from 'zlib';
import { FusedRTError } from '../errors';
import type { BufferDecl, DType, PlanHeader, PlanOp, TensorEntry } from './plan-types';

export const PLAN_MAGIC = Buffer.from('FRTPLAN\0', 'latin1');
export const PLAN_FOOTER_MAGIC = Buffer.from('FEND', 'latin1');
export const PLAN_FORMAT_VERSION = 1;
export const PLAN_ALIGNMENT = 64;
const PREAMBLE_BYTES = 16;
const FOOTER_BYTES = 8;
const MAX_HEADER_BYTES = 16 * 1024 * 1024;

export const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, u8: 1, f8e4m3: 1 };

export function alignUp(n: number, alignment = PLAN_ALIGNMENT): number {
  return Math.ceil(n / alignment) * alignment;
}

/** A tensor to be written: its bytes are laid out exactly as the runtime reads them. */
export interface TensorData {
  name: string;
  dtype: DType;
  shape: number[];
  data: Uint8Array;
  /** f8e4m3 only (and required there): what each decoded byte is multiplied by. */
  scale?: number;
}

/** The runtime reads a scale as a float32, so it must be positive and finite as one. */
function validScale(scale: unknown): boolean {
  return typeof scale === 'number' && Math.fround(scale) > 0 && Number.isFinite(Math.fround(scale));
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
    if (t.dtype === 'f8e4m3' ? !validScale(t.scale) : t.scale !== undefined) {
      throw new FusedRTError('E_BUILD', `tensor "${t.name}" is ${t.dtype} with scale ${t.scale}; f8e4m3 needs a finite scale > 0, other dtypes none`);
    }
    entries.push({ name: t.name, dtype: t.dtype, shape: t.shape, ...(t.scale !== undefined ? { scale: t.scale } : {}), offset, size });
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

const isF8 = (b: BufferDecl | undefined) => b?.dtype === 'f8e4m3';

/**
 * The buffers an op reads and writes (leaving out a gemm's input, whose rule
 * depends on its weight) and the tensors it reads other than a gemm's weight.
 */
function operands(op: PlanOp, where: string): { reads: [string, string | undefined][]; out: string; tensors: (string | undefined)[] } {
  switch (op?.type) {
    case 'embed_layernorm': return { reads: [], out: op.out, tensors: [op.word, op.position, op.tokenType, op.gamma, op.beta] };
    case 'gemm': return { reads: [], out: op.out, tensors: [op.bias] };
    case 'add_layernorm': return { reads: [['in', op.in], ['residual', op.residual]], out: op.out, tensors: [op.bias, op.gamma, op.beta] };
    case 'attention':
    case 'gather_rows':
    case 'mean_rows': return { reads: [['in', op.in]], out: op.out, tensors: [] };
    default: throw corrupt(`${where} has unknown op type`);
  }
}

/**
 * The f8e4m3 rules of docs/plan-format.md, as the native reader enforces
 * them: E4M3 tensors carry a scale and are only gemm weights; E4M3 buffers
 * are written by attention, those gemms and LayerNorms' `out8`, and read only as
 * those gemms' input. `inspect` thus never shows an fp8 plan the runtime
 * would refuse.
 */
function checkFp8(header: PlanHeader, tensors: Map<string, TensorEntry>): void {
  for (const t of header.tensors) {
    if (t.dtype === 'f8e4m3' && !validScale(t.scale)) throw corrupt(`f8e4m3 tensor "${t.name}" needs a finite scale > 0, has ${JSON.stringify(t.scale)}`);
    if (t.dtype !== 'f8e4m3' && 'scale' in t) throw corrupt(`tensor "${t.name}" has a scale, which only f8e4m3 tensors have`);
  }
  if (!Array.isArray(header.buffers) || !Array.isArray(header.ops) || !Array.isArray(header.outputs)) {
    throw corrupt('header lacks the buffers, ops or outputs table');
  }
  const buffers = new Map<string, BufferDecl>();
  for (const b of header.buffers) {
    if (b?.dtype !== undefined && b.dtype !== 'f8e4m3') throw corrupt(`buffer "${b.name}" has unknown dtype ${JSON.stringify(b.dtype)}`);
    buffers.set(b?.name, b);
  }
  const isF8Tensor = (name: string | undefined) => name !== undefined && tensors.get(name)?.dtype === 'f8e4m3';
  header.ops.forEach((op, i) => {
    const where = `op ${i} (${op?.type})`;
    const { reads, out, tensors: read } = operands(op, where);
    for (const name of read) {
      if (isF8Tensor(name)) throw corrupt(`${where} reads f8e4m3 tensor "${name}", which only a gemm's weight may be`);
    }
    for (const [field, name] of reads) {
      if (name !== undefined && isF8(buffers.get(name))) throw corrupt(`${where} reads f8e4m3 buffer "${name}" as ${field}: only gemms with an f8e4m3 weight may`);
    }
    const fp8Gemm = op.type === 'gemm' && isF8Tensor(op.weight);
    if (op.type === 'gemm' && isF8(buffers.get(op.in)) !== fp8Gemm) {
      throw corrupt(fp8Gemm
        ? `${where}: its weight "${op.weight}" is f8e4m3, so its input must be an f8e4m3 buffer, not "${op.in}"`
        : `${where}: its input "${op.in}" is an f8e4m3 buffer, which only a gemm with an f8e4m3 weight may read`);
    }
    if (isF8(buffers.get(out)) && !fp8Gemm && op.type !== 'attention') {
      throw corrupt(`${where} writes f8e4m3 buffer "${out}" as out: only attention and gemms with an f8e4m3 weight may`);
    }
    if ((op.type === 'embed_layernorm' || op.type === 'add_layernorm') && op.out8 !== undefined) {
      const out8 = buffers.get(op.out8);
      const target = buffers.get(op.out);
      if (!isF8(out8)) throw corrupt(`${where}.out8 names buffer "${op.out8}", which is not an f8e4m3 buffer`);
      if (out8?.rows !== target?.rows || out8?.cols !== target?.cols) {
        throw corrupt(`${where}.out8 buffer "${op.out8}" (${out8?.rows} × ${out8?.cols}) is not shaped as out "${op.out}" (${target?.rows} × ${target?.cols})`);
      }
    }
  });
  for (const o of header.outputs) {
    if (isF8(buffers.get(o?.buffer))) throw corrupt(`output "${o.name}" names f8e4m3 buffer "${o.buffer}"`);
  }
}

/**
 * Parses the container: magic, version, header JSON, tensor table bounds and
 * the checksum, and the f8e4m3 rules. Deep validation of ops and shapes is the
 * native reader's job; this reader is for tooling (inspect, the tokenizer)
 * and checks what it uses.
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
  checkFp8(header, byName);
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
