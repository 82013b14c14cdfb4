/** `fusedrt bench <model.plan>`: latency and throughput of one engine on random packed batches. */
import { Engine } from '../engine/engine';
import type { CpuPriority, DeviceOption, PackedBatch } from '../engine/types';
import { FusedRTError } from '../errors';
import { runGpuMs, runTiming } from '../engine/run-result';
import { describeGc, measureLoopStalls } from '../tools/loop-stalls';
import { randomUnit } from '../tools/prng';
import { nonNegativeIntegerOption, parseCommandArgs, type CliCommand } from './command';

const HELP = `Usage: fusedrt bench <model.plan> [options]

Times the engine on random token ids: for each batch size, warm-up runs, then
timed runs; prints median and p90 latency (wall time of engine.run, host work
included), on a GPU the median device time of the same runs, and
throughput. With --varlen each sequence's length is uniform in [seq/8, seq]
(the same lengths every run). Fill-mask plans score one row per sequence;
--top-k returns only the k best tokens of it, computed on the device. Last, the
longest stall of the event loop while the largest batch runs back to back,
next to the same probe with the engine idle, with the garbage collections seen
and how many of the stalls over 1 ms they overlapped (the longest of the
others is the host's or the engine's), and the most time one run held the JS
thread in the addon (reading the batch, issuing it, building the result).

Options:
      --batch <list>    batch sizes, comma-separated (default 1,8)
      --seq <n>         tokens per sequence, [CLS]/[SEP] included (default 128)
      --varlen          variable lengths instead of fixed
      --outputs <list>  outputs to compute, comma-separated, or "all" (default: the
                        task's own, e.g. logits for fill-mask, mean and cls for embedding)
      --top-k <k>       fill-mask plans: k best tokens per row instead of all logits
      --runs <n>        timed runs per case (default 50)
      --loop-seconds <s>  how long to probe the event loop, idle then busy (default 1)
      --warmup <n>      untimed runs first (default 5)
      --device <d>      auto | cpu | cuda | cuda:N (default auto)
      --threads <n>     CPU threads, 0 for one per core (default 0)
      --cpu-priority background|normal
                        the CPU threads' priority (default background: below the
                        event loop's, see the engine's cpuPriority option)
      --json            print the table as JSON
  -h, --help            show this help`;

/** A stream of uniform numbers in [0, 1) from the project's counter-based PRNG. */
function uniformStream(seed: number): () => number {
  let index = 0;
  return () => randomUnit(seed, index++);
}

function integerOption(value: string | boolean | undefined, name: string, fallback: number): number {
  return nonNegativeIntegerOption('bench', value, name, fallback);
}

/**
 * Uniform random ids in [0, vocab), no special tokens: the engine's cost does
 * not depend on which ids it embeds. With `selectOne`, each sequence's middle
 * token is the selected row, as one [MASK] per text would be for MLM plans.
 */
export function randomBatch(vocab: number, lengths: number[], seed: number, selectOne: boolean): PackedBatch {
  const random = uniformStream(seed);
  const total = lengths.reduce((a, b) => a + b, 0);
  const inputIds = new Int32Array(total);
  const cuSeqlens = new Int32Array(lengths.length + 1);
  const selected: number[] = [];
  let at = 0;
  lengths.forEach((len, b) => {
    for (let i = 0; i < len; i++) inputIds[at + i] = Math.min(vocab - 1, Math.floor(random() * vocab));
    if (selectOne) selected.push(at + Math.floor(len / 2));
    at += len;
    cuSeqlens[b + 1] = at;
  });
  return { inputIds, cuSeqlens, selectedRows: selectOne ? Int32Array.from(selected) : undefined };
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

export const benchCommand: CliCommand = {
  name: 'bench',
  summary: 'time a plan on random batches (latency, throughput)',
  help: HELP,
  async run(args) {
    const { values, positionals } = parseCommandArgs('bench', args, {
      batch: { type: 'string' }, seq: { type: 'string' }, varlen: { type: 'boolean' }, runs: { type: 'string' },
      warmup: { type: 'string' }, device: { type: 'string' }, threads: { type: 'string' }, json: { type: 'boolean' },
      'top-k': { type: 'string' }, 'loop-seconds': { type: 'string' }, outputs: { type: 'string' },
      'cpu-priority': { type: 'string' },
    });
    if (values.help) {
      process.stdout.write(`${HELP}\n`);
      return;
    }
    const [planPath] = positionals;
    if (!planPath) throw new FusedRTError('E_INPUT', 'bench: give a plan (see fusedrt bench --help)');
    const batches = String(values.batch ?? '1,8').split(',').map((b) => integerOption(b, 'batch', 1));
    const seq = integerOption(values.seq, 'seq', 128);
    const runs = Math.max(1, integerOption(values.runs, 'runs', 50));
    const warmup = integerOption(values.warmup, 'warmup', 5);
    const topK = integerOption(values['top-k'], 'top-k', 0);
    const loopMs = 1000 * Math.max(1, integerOption(values['loop-seconds'], 'loop-seconds', 1));
    const maxBatch = Math.max(...batches);
    const engine = await Engine.load(planPath, {
      device: (values.device as DeviceOption | undefined) ?? 'auto',
      threads: integerOption(values.threads, 'threads', 0),
      cpuPriority: (values['cpu-priority'] ?? 'background') as CpuPriority,
      maxTokens: Math.max(maxBatch * seq, 1),
      maxSequences: maxBatch,
      maxSelectedRows: maxBatch,
      batchWindowMs: 0,
    });
    try {
      if (seq > engine.header.config.maxSeq) {
        throw new FusedRTError('E_INPUT', `bench: --seq ${seq} exceeds the plan's maximum sequence length ${engine.header.config.maxSeq}`);
      }
      const { info } = engine;
      const where = (info.backend === 'cpu'
        ? `cpu (GEMM ${info.blas}), ${info.threads} threads at ${info.cpuPriority} priority` : info.backend)
        + (info.passedOver ? ` (GPUs not used: ${info.passedOver})` : '');
      if (topK > 0 && engine.header.task !== 'fill-mask') {
        throw new FusedRTError('E_INPUT', `bench: --top-k applies to fill-mask plans, this one is ${engine.header.task}`);
      }
      const outputs = values.outputs === undefined ? engine.taskOutputs
        : values.outputs === 'all' ? engine.outputNames : String(values.outputs).split(',').map((name) => name.trim());
      process.stderr.write(`backend ${where}, ${engine.header.task}, ` +
        `${engine.header.config.numLayers} layers × hidden ${engine.header.config.hiddenSize}, ${engine.header.precision}; ` +
        `outputs ${outputs.join(', ')}${topK > 0 ? `, top ${topK}` : ''}\n`);
      const rows = [];
      let largest: PackedBatch | undefined;
      for (const batchSize of batches) {
        const lengthRandom = uniformStream(seq * 7919 + batchSize);
        const lengths = Array.from({ length: batchSize }, () => values.varlen
          ? Math.max(2, Math.ceil(seq / 8 + lengthRandom() * (seq - seq / 8))) : seq);
        const batch: PackedBatch = {
          ...randomBatch(engine.header.config.vocabSize, lengths, batchSize, engine.header.task === 'fill-mask'),
          outputs,
          ...(topK > 0 ? { topK } : {}),
        };
        if (batchSize === maxBatch) largest = batch;
        for (let i = 0; i < warmup; i++) await engine.run(batch);
        const times: number[] = [];
        const gpu: number[] = [];
        let jsThreadMaxUs = 0;
        for (let i = 0; i < runs; i++) {
          const start = process.hrtime.bigint();
          const result = await engine.run(batch);
          times.push(Number(process.hrtime.bigint() - start) / 1e6);
          const ms = runGpuMs(result);
          if (ms !== undefined) gpu.push(ms);
          jsThreadMaxUs = Math.max(jsThreadMaxUs, runTiming(result)?.jsThreadUs ?? 0);
        }
        times.sort((a, b) => a - b);
        gpu.sort((a, b) => a - b);
        const median = quantile(times, 0.5);
        const tokens = lengths.reduce((a, b) => a + b, 0);
        rows.push({ batch: batchSize, seq, tokens, medianMs: median, p90Ms: quantile(times, 0.9),
          gpuMedianMs: gpu.length === runs ? quantile(gpu, 0.5) : undefined, jsThreadMaxUs,
          sequencesPerS: (batchSize * 1000) / median, tokensPerS: (tokens * 1000) / median });
      }
      const idle = await measureLoopStalls(undefined, loopMs);
      const stalls = await measureLoopStalls(() => engine.run(largest!), loopMs);
      if (values.json) {
        process.stdout.write(`${JSON.stringify({ rows, eventLoop: { batch: maxBatch, ...stalls, idle } }, null, 2)}\n`);
        return;
      }
      process.stdout.write('batch  seq  tokens  median ms   p90 ms   GPU ms    seq/s    tokens/s  JS thread max us\n');
      for (const r of rows) {
        const gpuMs = r.gpuMedianMs === undefined ? '-' : r.gpuMedianMs.toFixed(3);
        process.stdout.write(`${String(r.batch).padStart(5)}  ${String(r.seq).padStart(3)}  ${String(r.tokens).padStart(6)}  ` +
          `${r.medianMs.toFixed(2).padStart(9)}  ${r.p90Ms.toFixed(2).padStart(7)}  ${gpuMs.padStart(7)}  ` +
          `${r.sequencesPerS.toFixed(1).padStart(7)}  ${r.tokensPerS.toFixed(0).padStart(9)}  ${r.jsThreadMaxUs.toFixed(0).padStart(16)}\n`);
      }
      process.stdout.write(`event loop, batch ${maxBatch} back to back for ${loopMs / 1000} s (${stalls.requests} runs): ` +
        `longest stall ${stalls.maxMs.toFixed(2)} ms, p99 ${stalls.p99Ms.toFixed(3)} ms, ${describeGc(stalls)}; ` +
        `idle: longest ${idle.maxMs.toFixed(2)} ms, ${describeGc(idle)}\n`);
    } finally {
      await engine.dispose();
    }
  },
};
