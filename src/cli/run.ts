/** `fusedrt run <model.plan> <text...>`: one request through tokenizer, engine and post-processing. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { planFor } from '../build/plan-cache';
import { Engine, MAX_TOP_K } from '../engine/engine';
import { PACKAGE_ROOT } from '../engine/native';
import { packEncodings } from '../engine/pack';
import type { DeviceOption } from '../engine/types';
import { FusedRTError } from '../errors';
import { classify, defaultActivation, embeddingsOfRows, fillMask, labelNames, poolEmbeddings } from '../post';
import type { TextPair } from '../tokenize/types';
import { nonNegativeIntegerOption, parseCommandArgs, type CliCommand } from './command';

const HELP = `Usage: fusedrt run [<model>] <text> [<text> ...] [options]

Runs a model on the texts (one batch) and prints what its task produces:
fill-mask predictions for each [MASK], class scores, token labels, answer
spans (question-answering: give --question), or embedding sizes and norms.

<model> is a .plan file or a Hugging Face directory (built once and cached in
${os.tmpdir()}/fusedrt-cache). Without one, the bundled demo model
(models/demo, a small BERT trained on the Brown corpus) answers.

Options:
      --model <path>      the model, when the first text could be mistaken for a path
      --top-k <k>         predictions or labels to print (default 5)
      --question <text>   the question, for question-answering plans (texts are the contexts)
      --device <d>        auto | cpu | cuda | cuda:N (default auto)
      --threads <n>       CPU threads, 0 for one per core (default 0)
      --json              print the results as JSON
  -h, --help              show this help`;

function integerOption(value: string | boolean | undefined, name: string, fallback: number): number {
  return nonNegativeIntegerOption('run', value, name, fallback);
}

async function predict(engine: Engine, texts: Array<string | TextPair>, topK: number): Promise<unknown[]> {
  const header = engine.header;
  const tokenizer = engine.tokenizer;
  const encodings = tokenizer.encodeBatch(texts);
  const fillMaskTask = header.task === 'fill-mask';
  const { batch } = packEncodings(encodings, fillMaskTask ? { selectTokenId: tokenizer.maskTokenId } : {});
  switch (header.task) {
    case 'fill-mask': {
      if (batch.selectedRows!.length === 0) {
        throw new FusedRTError('E_INPUT', `no ${tokenizer.maskToken} in the text: a fill-mask model predicts the tokens at ${tokenizer.maskToken}`);
      }
      // The top-k on the device when it can: only rows x k scores come back, not rows x vocab logits.
      const onDevice = topK <= MAX_TOP_K && topK <= header.config.vocabSize;
      const { logits } = onDevice
        ? await engine.run({ ...batch, outputs: ['logits'], topK })
        : await engine.run({ ...batch, outputs: ['logits'] });
      return fillMask(logits, encodings, tokenizer, { topK, texts });
    }
    case 'classification': {
      const { logits } = await engine.run({ ...batch, outputs: ['logits'] });
      return classify(logits, header.labels, { activation: defaultActivation(header.problemType), topK });
    }
    case 'token-classification': {
      const { logits } = await engine.run({ ...batch, outputs: ['logits'] });
      const labels = labelNames(header.labels, logits.cols);
      return encodings.map((encoding, s) => encoding.tokens.map((token, i) => {
        const row = batch.cuSeqlens[s] + i;
        const [best] = classify({ data: logits.data.subarray(row * logits.cols, (row + 1) * logits.cols), rows: 1, cols: logits.cols }, labels);
        return { token, label: best.label, score: Number(best.score.toFixed(4)) };
      }).filter((_, i) => encoding.specialTokensMask[i] === 0));
    }
    case 'question-answering': {
      const { span_logits: span } = await engine.run({ ...batch, outputs: ['span_logits'] });
      return encodings.map((encoding, s) => bestSpan(span.data, batch.cuSeqlens[s], encoding, texts[s]));
    }
    case 'embedding': {
      // Pooled by the engine (plans built before `mean` existed: here, from every token's state).
      const vectors = engine.outputNames.includes('mean')
        ? embeddingsOfRows((await engine.run({ ...batch, outputs: ['mean'] })).mean)
        : poolEmbeddings((await engine.run({ ...batch, outputs: ['hidden'] })).hidden, batch.cuSeqlens, { pooling: 'mean' });
      return vectors.map((v) => ({
        dimensions: v.length,
        norm: Number(Math.hypot(...v).toFixed(4)),
        first: Array.from(v.subarray(0, 4), (x) => Number(x.toFixed(4))),
      }));
    }
  }
}

/** The highest-scoring span (start ≤ end, at most 30 tokens) inside the context of a question–context pair. */
function bestSpan(span: Float32Array, base: number, encoding: { offsets: Array<[number, number]>; sequenceIds: Int8Array }, text: string | TextPair) {
  const context = typeof text === 'string' ? text : text.pair;
  let best = { score: -Infinity, start: 0, end: 0 };
  for (let i = 0; i < encoding.sequenceIds.length; i++) {
    if (encoding.sequenceIds[i] !== 1) continue;
    for (let j = i; j < Math.min(i + 30, encoding.sequenceIds.length) && encoding.sequenceIds[j] === 1; j++) {
      const score = span[(base + i) * 2] + span[(base + j) * 2 + 1];
      if (score > best.score) best = { score, start: i, end: j };
    }
  }
  return { answer: context.slice(encoding.offsets[best.start][0], encoding.offsets[best.end][1]), score: Number(best.score.toFixed(4)) };
}

function printResult(task: string, texts: Array<string | TextPair>, results: unknown[]): void {
  results.forEach((result, s) => {
    const text = texts[s];
    process.stdout.write(`${typeof text === 'string' ? text : `${text.text} | ${text.pair}`}\n`);
    if (task === 'fill-mask') {
      const r = result as ReturnType<typeof fillMask>[number];
      r.masks.forEach((mask, m) => {
        process.stdout.write(`  mask ${m + 1}: ${mask.predictions.map((p) => `${p.token} (${p.score.toFixed(3)})`).join(', ')}\n`);
      });
      process.stdout.write(`  → ${r.sequence}\n`);
    } else {
      process.stdout.write(`  ${JSON.stringify(result)}\n`);
    }
  });
}

export const runCommand: CliCommand = {
  name: 'run',
  summary: 'run a plan on texts and print its predictions',
  help: HELP,
  async run(args) {
    const { values, positionals } = parseCommandArgs('run', args, {
      model: { type: 'string' }, 'top-k': { type: 'string' }, question: { type: 'string' }, device: { type: 'string' },
      threads: { type: 'string' }, json: { type: 'boolean' },
    });
    if (values.help) {
      process.stdout.write(`${HELP}\n`);
      return;
    }
    const firstIsModel = values.model === undefined && positionals.length > 1 && fs.existsSync(positionals[0]);
    const model = (values.model as string | undefined) ?? (firstIsModel ? positionals[0] : path.join(PACKAGE_ROOT, 'models', 'demo'));
    const rawTexts = firstIsModel ? positionals.slice(1) : positionals;
    if (rawTexts.length === 0) throw new FusedRTError('E_INPUT', 'run: give at least one text (see fusedrt run --help)');
    if (!fs.existsSync(model)) throw new FusedRTError('E_PLAN_IO', `run: model ${model} does not exist`);
    const planPath = await planFor(model, { precision: 'fp32' }, path.join(os.tmpdir(), 'fusedrt-cache'));
    const question = values.question as string | undefined;
    const texts: Array<string | TextPair> = question ? rawTexts.map((pair) => ({ text: question, pair })) : rawTexts;
    const engine = await Engine.load(planPath, {
      device: (values.device as DeviceOption | undefined) ?? 'auto',
      threads: integerOption(values.threads, 'threads', 0),
      batchWindowMs: 0,
    });
    try {
      const { device, passedOver } = engine.info;
      if (passedOver) process.stderr.write(`fusedrt: running on ${device ? `cuda:${device.ordinal}` : 'the CPU'}; GPUs not used: ${passedOver}\n`);
      if (engine.header.task === 'question-answering' && !question) {
        throw new FusedRTError('E_INPUT', 'run: this is a question-answering plan; give --question "<text>" and the contexts');
      }
      const results = await predict(engine, texts, integerOption(values['top-k'], 'top-k', 5) || 5);
      if (values.json) {
        process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
      } else {
        printResult(engine.header.task, texts, results);
      }
    } finally {
      await engine.dispose();
    }
  },
};
