/** `fusedrt build <hf-dir> -o model.plan [--precision fp32|fp16|tf32|fp8] [--max-seq N]` */
import * as fs from 'fs';
import { buildPlan } from '../build/builder';
import type { Precision } from '../build/plan-types';
import { FusedRTError } from '../errors';
import { formatBytes, formatFields, parseCommandArgs, type CliCommand } from './command';

const HELP = `Usage: fusedrt build <hf-dir> -o <model.plan> [options]

Builds a plan from a Hugging Face BERT directory (config.json, model.safetensors
or a sharded model.safetensors.index.json, tokenizer.json or vocab.txt).

Options:
  -o, --output <file>         plan file to write (required)
      --precision fp32|fp16|tf32|fp8
                              weight precision (default: fp32); tf32 keeps
                              fp32 weights and runs GEMMs in TF32 on CUDA;
                              fp8 is fp16 with FP8 (E4M3) weights and inputs
                              in the encoder's GEMMs (QKV, attention output,
                              feed-forward); it runs on GPUs of compute
                              capability 8.9+ (Ada, Hopper) and on the CPU
                              (emulated, slower), with answers further from
                              fp32's than fp16's
      --max-seq <n>           longest sequence in tokens, at most the model's
                              max_position_embeddings (default: that maximum)
  -h, --help                  show this help`;

/** A percentage line rewritten in place on a terminal; on a pipe or file, one line per phase. */
function progressPrinter(stream: NodeJS.WriteStream): { update(message: string, fraction: number): void; end(): void } {
  let lastLine = '';
  let lastMessage = '';
  return {
    update(message, fraction) {
      if (stream.isTTY) {
        const line = `${String(Math.floor(fraction * 100)).padStart(3)}% ${message}`;
        if (line !== lastLine) stream.write(`\r\x1b[K${line}`);
        lastLine = line;
      } else if (message !== lastMessage) {
        stream.write(`${message}\n`);
      }
      lastMessage = message;
    },
    end() {
      if (stream.isTTY && lastLine) stream.write('\r\x1b[K');
    },
  };
}

function parsePrecision(value: string | undefined): Precision | undefined {
  if (value === undefined || value === 'fp32' || value === 'fp16' || value === 'tf32' || value === 'fp8') return value;
  throw new FusedRTError('E_INPUT', `build: --precision must be fp32 or fp16 or tf32 or fp8, got "${value}"`);
}

function parseMaxSeq(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) < 2) throw new FusedRTError('E_INPUT', `build: --max-seq must be an integer of at least 2, got "${value}"`);
  return Number(value);
}

async function run(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs('build', args, {
    output: { type: 'string', short: 'o' },
    precision: { type: 'string' },
    'max-seq': { type: 'string' },
  });
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  if (positionals.length !== 1) throw new FusedRTError('E_INPUT', `build: expected one model directory, got ${positionals.length} (see fusedrt build --help)`);
  if (!values.output) throw new FusedRTError('E_INPUT', 'build: -o <model.plan> is required');
  const precision = parsePrecision(values.precision as string | undefined);
  const maxSeq = parseMaxSeq(values['max-seq'] as string | undefined);
  const output = values.output as string;
  const started = Date.now();
  const progress = progressPrinter(process.stderr);
  try {
    const header = await buildPlan(positionals[0], output, { precision, maxSeq, onProgress: progress.update });
    progress.end();
    process.stdout.write(`built ${output}\n${formatFields([
      ['architecture', header.source.architecture],
      ['task', header.task],
      ['layers', String(header.config.numLayers)],
      ['hidden', String(header.config.hiddenSize)],
      ['precision', header.precision],
      ['max seq', String(header.config.maxSeq)],
      ['size', formatBytes(fs.statSync(output).size)],
      ['time', `${((Date.now() - started) / 1000).toFixed(1)} s`],
    ])}\n`);
  } catch (e) {
    progress.end();
    throw e;
  }
}

export const buildCommand: CliCommand = { name: 'build', summary: 'build a plan from a Hugging Face BERT directory', help: HELP, run };
