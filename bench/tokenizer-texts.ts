/** What the tokenizer benches tokenize: bert-base-uncased's tokenizer.json from ../shared/data, and texts of cycled words. */
import * as fs from 'fs';
import * as path from 'path';

const WORDS = ('the quick brown fox jumps over the lazy dog while researchers investigate unbelievable phenomena '
  + 'in quantum electrodynamics, and a Node-RED flow reads the [MASK] of each text').split(' ');

export function bertTokenizerJson(): string {
  return fs.readFileSync(path.join(__dirname, '..', '..', '..', 'shared', 'data', 'bert-base-uncased', 'tokenizer.json'), 'utf8');
}

/** `count` texts of `words` words each, text t starting at a different word. */
export function benchTexts(count: number, words: number): string[] {
  return Array.from({ length: count }, (_, t) => Array.from({ length: words }, (_, w) => WORDS[(w * 7 + t) % WORDS.length]).join(' '));
}
