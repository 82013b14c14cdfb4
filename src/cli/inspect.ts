/** `fusedrt inspect <model.plan> [--json]`: what a plan holds, without loading it into an engine. */
import * as fs from 'fs';
import * as zlib from 'zlib';
import { parsePlan } from '../build/plan-file';
import type { PlanHeader, PlanOp, TensorEntry } from '../build/plan-types';
import { FusedRTError } from '../errors';
import { formatBytes, formatFields, parseCommandArgs, type CliCommand } from './command';

const HELP = `Usage: fusedrt inspect <model.plan> [--json]

Prints a plan's header: format and builder, source model and hash, task,
precision, config, labels, tokenizer, tensors, ops (one block per repeated
layer), outputs, and whether the checksum matches.

Options:
      --json    print the header and checksum status as JSON
  -h, --help    show this help`;

const FOOTER_BYTES = 8;

interface ChecksumStatus {
  ok: boolean;
  stored: string;
  computed: string;
}

function checksumOf(bytes: Buffer): ChecksumStatus {
  const footerAt = bytes.length - FOOTER_BYTES;
  const stored = bytes.readUInt32LE(footerAt);
  const computed = zlib.crc32(bytes.subarray(0, footerAt)) >>> 0;
  const hex = (n: number) => n.toString(16).padStart(8, '0');
  return { ok: stored === computed, stored: hex(stored), computed: hex(computed) };
}

const LAYER_PATTERN = /\.layer\.(\d+)\./;

function layerOf(name: string): number | undefined {
  const match = LAYER_PATTERN.exec(name);
  return match ? Number(match[1]) : undefined;
}

function templated(name: string): string {
  return name.replace(LAYER_PATTERN, '.layer.{i}.');
}

/** "0-11" for a contiguous run, else the list. */
function describeIndices(indices: number[]): string {
  const contiguous = indices.every((v, i) => i === 0 || v === indices[i - 1] + 1);
  return contiguous && indices.length > 1 ? `${indices[0]}-${indices[indices.length - 1]}` : indices.join(',');
}

/** One row per tensor, with per-layer tensors of equal dtype and shape folded into one "{i}" row. */
function tensorTable(tensors: TensorEntry[]): string {
  const groups = new Map<string, { entry: TensorEntry; layers: number[]; count: number }>();
  for (const t of tensors) {
    const key = `${templated(t.name)}|${t.dtype}|${t.shape}`;
    const group = groups.get(key) ?? { entry: t, layers: [], count: 0 };
    group.count++;
    const layer = layerOf(t.name);
    if (layer !== undefined) group.layers.push(layer);
    groups.set(key, group);
  }
  const rows = [...groups.values()].map(({ entry, layers, count }) => [
    count > 1 ? `${templated(entry.name)} (i=${describeIndices(layers)})` : entry.name,
    entry.dtype,
    entry.shape.join('×'),
    count > 1 ? `${count} × ${formatBytes(entry.size)}` : formatBytes(entry.size),
  ]);
  const widths = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => `  ${r[0].padEnd(widths[0])}  ${r[1].padEnd(widths[1])}  ${r[2].padEnd(widths[2])}  ${r[3]}`).join('\n');
}

function describeOp(op: PlanOp): string {
  const { type, in: input, out, ...rest } = op as PlanOp & { in?: string };
  const fields = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === 'string' ? templated(v) : v}`);
  return `${type.padEnd(15)} ${(input ?? 'inputs').padStart(6)} → ${out.padEnd(10)} ${fields.join(' ')}`;
}

/** The layer an op belongs to: from its tensors, or (attention has none) from the ops around it. */
function opLayers(ops: PlanOp[]): Array<number | undefined> {
  const own = ops.map((op) => {
    const layers = Object.values(op).filter((v): v is string => typeof v === 'string').map(layerOf).filter((l) => l !== undefined);
    return layers[0];
  });
  return own.map((layer, i) => {
    if (layer !== undefined) return layer;
    const before = own.slice(0, i).reverse().find((l) => l !== undefined);
    const after = own.slice(i + 1).find((l) => l !== undefined);
    return before !== undefined && before === after ? before : undefined;
  });
}

/** The op list with consecutive identical layers printed once. */
function opList(ops: PlanOp[]): string {
  const layers = opLayers(ops);
  const blocks: Array<{ layers: number[]; lines: string[] }> = [];
  ops.forEach((op, i) => {
    const last = blocks[blocks.length - 1];
    const layer = layers[i];
    if (layer !== undefined && last && last.layers.length === 1 && last.layers[0] === layer) last.lines.push(describeOp(op));
    else blocks.push({ layers: layer === undefined ? [] : [layer], lines: [describeOp(op)] });
  });
  const merged: typeof blocks = [];
  for (const block of blocks) {
    const last = merged[merged.length - 1];
    if (last && block.layers.length && last.layers.length && last.lines.join('\n') === block.lines.join('\n')) last.layers.push(...block.layers);
    else merged.push({ layers: [...block.layers], lines: block.lines });
  }
  return merged.map((block) => block.layers.length
    ? `  layers ${describeIndices(block.layers)} (×${block.layers.length}):\n${block.lines.map((l) => `    ${l}`).join('\n')}`
    : block.lines.map((l) => `  ${l}`).join('\n')).join('\n');
}

function describe(file: string, fileSize: number, header: PlanHeader, checksum: ChecksumStatus): string {
  const c = header.config;
  const buffersByName = new Map(header.buffers.map((b) => [b.name, b]));
  const tokenizerEntry = header.tensors.find((t) => t.name === header.tokenizer.tensor);
  const weightBytes = header.tensors.reduce((n, t) => n + (t.dtype === 'u8' ? 0 : t.size), 0);
  return [
    `${file} (${formatBytes(fileSize)})`,
    formatFields([
      ['format', `${header.format} v${header.formatVersion}`],
      ['builder', `${header.builder.name} ${header.builder.version}, ${header.createdAt}`],
      ['source', `${header.source.architecture} (${header.source.files.join(', ')})`],
      ['source sha256', header.source.sha256],
      ['family', header.family],
      ['task', header.task],
      ['precision', header.precision],
      ['config', `hidden ${c.hiddenSize}, layers ${c.numLayers}, heads ${c.numHeads}, intermediate ${c.intermediateSize}, ` +
        `vocab ${c.vocabSize}, positions ${c.maxPositions}, type vocab ${c.typeVocabSize}, eps ${c.layerNormEps}, act ${c.hiddenAct}, max seq ${c.maxSeq}`],
      ['labels', header.labels ? header.labels.join(', ') : 'none'],
      ['problem type', header.problemType ?? 'none'],
      ['tokenizer', `${header.tokenizer.tensor} (${tokenizerEntry ? formatBytes(tokenizerEntry.size) : 'missing'}), mask ${header.tokenizer.maskToken}, ${header.tokenizer.doLowerCase ? 'lowercase' : 'cased'}`],
      ['checksum', checksum.ok ? `ok (crc32 ${checksum.stored})` : `MISMATCH (stored ${checksum.stored}, computed ${checksum.computed})`],
    ]),
    `tensors (${header.tensors.length}, weights ${formatBytes(weightBytes)}):`,
    tensorTable(header.tensors),
    `ops (${header.ops.length}):`,
    opList(header.ops),
    'outputs:',
    formatFields(header.outputs.map((o) => {
      const b = buffersByName.get(o.buffer);
      return [o.name, `${o.buffer} [${b ? `${b.rows} × ${b.cols}` : 'undeclared buffer'}]`];
    })),
  ].join('\n');
}

async function run(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs('inspect', args, { json: { type: 'boolean' } });
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  if (positionals.length !== 1) throw new FusedRTError('E_INPUT', `inspect: expected one plan file, got ${positionals.length} (see fusedrt inspect --help)`);
  const file = positionals[0];
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new FusedRTError('E_PLAN_IO', `cannot read ${file} (${(e as Error).message})`);
  }
  // The checksum is reported rather than enforced here, so a damaged plan can still be looked at.
  const { header } = parsePlan(bytes, false);
  const checksum = checksumOf(bytes);
  process.stdout.write(values.json
    ? `${JSON.stringify({ file, fileSize: bytes.length, checksum, header }, null, 2)}\n`
    : `${describe(file, bytes.length, header, checksum)}\n`);
  if (!checksum.ok) throw new FusedRTError('E_PLAN_CORRUPT', `${file}: checksum mismatch (stored ${checksum.stored}, computed ${checksum.computed})`);
}

export const inspectCommand: CliCommand = { name: 'inspect', summary: 'print what a plan file holds', help: HELP, run };
