import * as assert from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import {
  float32ToHalfBits, halfToFloat32, readSafetensorsHeader, SafetensorsCheckpoint, writeSafetensors,
} from '../src/build/safetensors';
import { makeTempDir } from './support/tiny-hf-bert';

function expectModelError(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (err: Error & { code?: string }) => {
    assert.strictEqual(err.code, 'E_MODEL', err.message);
    for (const f of fragments) assert.ok(err.message.includes(f), `"${err.message}" mentions "${f}"`);
    return true;
  });
}

/** A safetensors file from a header object and a data section, for hand-made damage. */
function writeRaw(file: string, header: unknown, data: Uint8Array, headerLength?: bigint): void {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(headerLength ?? BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([prefix, json, data]));
}

describe('safetensors', () => {
  let dir: string;
  before(() => { dir = makeTempDir('safetensors'); });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  describe('float32 → float16', () => {
    it('rounds to nearest with ties to even, including subnormals and overflow', () => {
      const cases: Array<[number, number]> = [
        [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [0.1, 0x2e66], [65504, 0x7bff],
        [65519.99, 0x7bff], [65520, 0x7c00], [1e9, 0x7c00], [-Infinity, 0xfc00],
        [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [1 + 2 ** -11 + 2 ** -20, 0x3c01],
        [2 ** -14, 0x0400], [2 ** -24, 0x0001], [2 ** -25, 0x0000], [3 * 2 ** -26, 0x0001], [3 * 2 ** -25, 0x0002],
        [2 ** -14 - 2 ** -25, 0x0400], [1e-10, 0x0000],
      ];
      for (const [value, bits] of cases) assert.strictEqual(float32ToHalfBits(value), bits, `${value}`);
      assert.strictEqual(float32ToHalfBits(NaN) & 0x7c00, 0x7c00);
      assert.notStrictEqual(float32ToHalfBits(NaN) & 0x3ff, 0);
    });

    it('maps every finite half back to itself', () => {
      const all = new Uint16Array(65536).map((_, i) => i);
      const values = halfToFloat32(all);
      for (let i = 0; i < 65536; i++) {
        if (!Number.isNaN(values[i])) assert.strictEqual(float32ToHalfBits(values[i]), i, `bits ${i.toString(16)}`);
      }
    });
  });

  describe('write and read', () => {
    it('round-trips F32, F16 and BF16 with 8-byte aligned data and metadata', () => {
      const file = path.join(dir, 'roundtrip.safetensors');
      const f32 = Float32Array.from([1.5, -2, 3.25, 0, 7, 8]);
      const f16 = Uint16Array.from([0x3c00, 0xc000, 0x3800]);
      const bf16 = Uint16Array.from([0x3f80, 0xc040]);
      writeSafetensors(file, [
        { name: 'b', dtype: 'F16', shape: [3], data: f16 },
        { name: 'a', dtype: 'F32', shape: [2, 3], data: f32 },
        { name: 'c', dtype: 'BF16', shape: [1, 2], data: bf16 },
      ], { format: 'pt' });
      const bytes = fs.readFileSync(file);
      const headerLength = Number(bytes.readBigUInt64LE(0));
      assert.strictEqual(headerLength % 8, 0);
      const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
      assert.deepStrictEqual(header.__metadata__, { format: 'pt' });
      assert.deepStrictEqual(header.a, { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] });
      assert.deepStrictEqual(header.b.data_offsets, [24, 30]);
      assert.strictEqual(bytes.length, 8 + headerLength + 34);

      const { metadata, entries } = readSafetensorsHeader(file);
      assert.deepStrictEqual(metadata, { format: 'pt' });
      assert.deepStrictEqual(entries.map((e) => e.name).sort(), ['a', 'b', 'c']);
      const checkpoint = new SafetensorsCheckpoint([file]);
      assert.deepStrictEqual(checkpoint.readFloat32('a'), f32);
      assert.deepStrictEqual(checkpoint.readFloat32('b'), Float32Array.from([1, -2, 0.5]));
      assert.deepStrictEqual(checkpoint.readFloat32('c'), Float32Array.from([1, -3]));
    });

    it('reads a tensor at an odd offset', () => {
      const file = path.join(dir, 'unaligned.safetensors');
      const data = Buffer.alloc(2 + 8);
      data.writeUInt16LE(0x3c00, 0);
      data.writeFloatLE(0.25, 2);
      data.writeFloatLE(-4, 6);
      writeRaw(file, { h: { dtype: 'F16', shape: [1], data_offsets: [0, 2] }, f: { dtype: 'F32', shape: [2], data_offsets: [2, 10] } }, data);
      assert.deepStrictEqual(new SafetensorsCheckpoint([file]).readFloat32('f'), Float32Array.from([0.25, -4]));
    });
  });

  describe('validation', () => {
    const good = { t: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };

    it('rejects header lengths beyond the file and files that are too small', () => {
      const file = path.join(dir, 'long.safetensors');
      writeRaw(file, good, new Uint8Array(8), 10_000n);
      expectModelError(() => readSafetensorsHeader(file), 'long.safetensors', 'header length 10000');
      fs.writeFileSync(file, Buffer.alloc(4));
      expectModelError(() => readSafetensorsHeader(file), 'long.safetensors', 'too small');
    });

    it('rejects a header that is not JSON', () => {
      const file = path.join(dir, 'json.safetensors');
      writeRaw(file, '{"t": {', new Uint8Array(8));
      expectModelError(() => readSafetensorsHeader(file), 'json.safetensors', 'not valid JSON');
    });

    it('rejects offsets outside the data and sizes that disagree with the shape, naming the tensor', () => {
      const file = path.join(dir, 'offsets.safetensors');
      writeRaw(file, { t: { dtype: 'F32', shape: [2], data_offsets: [0, 16] } }, new Uint8Array(8));
      expectModelError(() => readSafetensorsHeader(file), 'offsets.safetensors', 'tensor "t"', 'outside');
      writeRaw(file, { t: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8));
      expectModelError(() => readSafetensorsHeader(file), 'tensor "t"', 'needs 12 bytes');
      writeRaw(file, { t: { dtype: 'F32', shape: [-1], data_offsets: [0, 8] } }, new Uint8Array(8));
      expectModelError(() => readSafetensorsHeader(file), 'tensor "t"', 'shape');
    });

    it('lists unreadable dtypes only when such a tensor is read', () => {
      const file = path.join(dir, 'ints.safetensors');
      writeRaw(file, { ids: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, new Uint8Array(8));
      const checkpoint = new SafetensorsCheckpoint([file]);
      expectModelError(() => checkpoint.readFloat32('ids'), 'tensor "ids"', 'dtype I64');
    });

    it('checks the shard index against the shards', () => {
      const shardDir = path.join(dir, 'shards');
      fs.mkdirSync(shardDir);
      writeSafetensors(path.join(shardDir, 'a.safetensors'), [{ name: 'x', dtype: 'F32', shape: [1], data: Float32Array.from([1]) }]);
      const index = path.join(shardDir, 'model.safetensors.index.json');
      fs.writeFileSync(index, JSON.stringify({ weight_map: { x: 'a.safetensors', y: 'a.safetensors' } }));
      expectModelError(() => SafetensorsCheckpoint.openDirectory(shardDir), 'lists tensor "y"');
      fs.writeFileSync(index, JSON.stringify({ weight_map: { x: '../a.safetensors' } }));
      expectModelError(() => SafetensorsCheckpoint.openDirectory(shardDir), 'invalid shard file');
      fs.writeFileSync(index, JSON.stringify({ weight_map: { x: 'a.safetensors' } }));
      const checkpoint = SafetensorsCheckpoint.openDirectory(shardDir);
      assert.strictEqual(checkpoint.indexFile, index);
      assert.deepStrictEqual(checkpoint.readFloat32('x'), Float32Array.from([1]));
    });
  });
});
