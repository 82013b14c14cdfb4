/**
 * The event loop while texts are tokenised back to back on the JS thread,
 * as the nodes do for every message: the whole batch in one go
 * (tokenizer.encodeBatch, the nodes before) against encodeBatchYielding (the
 * nodes now), with bert-base-uncased's tokenizer from ../shared/data.
 *
 *   node dist/bench/tokenize-loop.js [--texts 32] [--words 100] [--seconds 2] [--max-length 128]
 *
 * Prints, per way, the batches tokenised, the median time of one, the
 * longest stall of the loop, how many stalls passed 1 ms and V8's
 * collections (src/tools/loop-stalls.ts), then the same probe idle.
 */
import { createTokenizer, encodeBatchYielding } from '../src/tokenize';
import { describeGc, measureLoopStalls } from '../src/tools/loop-stalls';
import { option } from './args';
import { benchTexts, bertTokenizerJson } from './tokenizer-texts';

async function main(): Promise<void> {
  const texts = Number(option('--texts', '32'));
  const words = Number(option('--words', '100'));
  const seconds = Number(option('--seconds', '2'));
  const maxLength = Number(option('--max-length', '128'));
  const tokenizer = createTokenizer(bertTokenizerJson(), { maxLength });
  const batch = benchTexts(texts, words);
  // Each batch starts in a turn of its own, as a message arriving from I/O
  // does (back to back in promise continuations, the probe would never run).
  const nextTurn = () => new Promise((resolve) => setImmediate(resolve));
  const ways: Array<[string, () => Promise<unknown>]> = [
    ['encodeBatch (whole batch at once)', () => nextTurn().then(() => tokenizer.encodeBatch(batch))],
    ['encodeBatchYielding', () => nextTurn().then(() => encodeBatchYielding(tokenizer, batch))],
  ];
  console.log(`${texts} texts of ${words} words, truncated to ${maxLength} tokens, ${seconds} s each:`);
  for (const [name, work] of ways) {
    const times: number[] = [];
    const timed = async () => {
      const start = performance.now();
      await work();
      times.push(performance.now() - start);
    };
    const stalls = await measureLoopStalls(timed, seconds * 1000);
    times.sort((a, b) => a - b);
    console.log(`  ${name}: ${stalls.requests} batches, median ${times[times.length >> 1].toFixed(2)} ms each; `
      + `longest stall ${stalls.maxMs.toFixed(2)} ms, ${describeGc(stalls)}`);
  }
  const idle = await measureLoopStalls(undefined, seconds * 1000);
  console.log(`  idle: longest stall ${idle.maxMs.toFixed(2)} ms, ${describeGc(idle)}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
