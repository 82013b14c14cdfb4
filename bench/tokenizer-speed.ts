/**
 * How long tokenizer.encodeBatch holds the JS thread: bert-base-uncased's
 * tokenizer (../shared/data) on 1, 32 and 128 texts of 100 words and one
 * text of 10,000 words, truncated to 128 tokens; the median of 40 calls
 * after 10, in milliseconds.
 *
 *   node dist/bench/tokenizer-speed.js [--tokenizer <dist/src/tokenize/tokenizer.js of another checkout>]
 *
 * --tokenizer times another build (a git worktree of an older commit, built
 * with tsc) with the same texts, for before/after tables.
 */
import * as path from 'path';
import type { createTokenizer as CreateTokenizer } from '../src/tokenize/tokenizer';
import { option } from './args';
import { benchTexts, bertTokenizerJson } from './tokenizer-texts';

const modulePath = path.resolve(option('--tokenizer', path.join(__dirname, '..', 'src', 'tokenize', 'tokenizer.js')));
const { createTokenizer } = require(modulePath) as { createTokenizer: typeof CreateTokenizer };
const tokenizer = createTokenizer(bertTokenizerJson(), { maxLength: 128 });
const cells: string[] = [];
for (const [texts, words] of [[1, 100], [32, 100], [128, 100], [1, 10000]]) {
  const batch = benchTexts(texts, words);
  for (let i = 0; i < 10; i++) tokenizer.encodeBatch(batch);
  const times: number[] = [];
  for (let i = 0; i < 40; i++) {
    const start = performance.now();
    tokenizer.encodeBatch(batch);
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  cells.push(`${texts} × ${words} words ${times[20].toFixed(3)} ms`);
}
console.log(`${modulePath}: ${cells.join(' | ')}`);
