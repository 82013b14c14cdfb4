/**
 * Regenerates models/demo/ (a small BertForMaskedLM) and
 * models/demo-classifier/ (a BertForSequenceClassification with labels
 * negative/positive), both with a vocabulary of real English words and RANDOM
 * weights, so the demo flows, examples and tests have models without
 * downloading one. Their predictions are arbitrary.
 *
 *   node dist/src/tools/make-demo-model.js [modelsDir]   (default: models)
 */
import * as fs from 'fs';
import * as path from 'path';
import { DEMO_WORDS } from './demo-words';
import { RandomBertOptions, writeRandomBertModel } from './random-model';

const SPECIAL_TOKENS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];
/** Every ASCII punctuation character: BERT's pre-tokenizer splits each into its own token. */
const PUNCTUATION = [...'!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~'];
const DIGITS = [...'0123456789'];
const LETTERS = [...'abcdefghijklmnopqrstuvwxyz'];
/** Frequent endings, so inflected words outside the list split into word + suffix. */
const SUFFIXES = ['##s', '##es', '##ed', '##ing', '##ly', '##er', '##est', '##ness', '##ment', '##tion',
  '##al', '##ful', '##less', '##able', '##ity', '##ous', '##ive'];

/**
 * The demo vocabulary in id order: specials ([PAD] is 0), punctuation,
 * digits, single letters, ##-continuations of letters and digits (so any
 * lower-case word or number is tokenised without [UNK]), suffixes, then the
 * words of demo-words.ts.
 */
export function demoVocabulary(): string[] {
  const tokens = [
    ...SPECIAL_TOKENS, ...PUNCTUATION, ...DIGITS, ...LETTERS,
    ...LETTERS.map((c) => `##${c}`), ...DIGITS.map((c) => `##${c}`), ...SUFFIXES, ...DEMO_WORDS,
  ];
  return [...new Set(tokens)];
}

export const DEMO_MODEL_OPTIONS: RandomBertOptions = {
  architecture: 'BertForMaskedLM',
  hiddenSize: 128,
  numLayers: 2,
  numHeads: 4,
  intermediateSize: 256,
  maxPositions: 128,
  vocab: demoVocabulary(),
  seed: 4,
};

export const DEMO_CLASSIFIER_OPTIONS: RandomBertOptions = {
  ...DEMO_MODEL_OPTIONS,
  architecture: 'BertForSequenceClassification',
  hiddenSize: 64,
  intermediateSize: 128,
  labels: ['negative', 'positive'],
  seed: 5,
};

function readme(options: RandomBertOptions): string {
  const what = options.architecture === 'BertForMaskedLM'
    ? 'its fill-mask predictions are random words from its vocabulary'
    : `its ${options.labels!.join('/')} scores are arbitrary`;
  return `# Demo model: RANDOM weights

This is a ${options.architecture} whose weights are **random numbers**, not a trained
model: ${what}. It
exists so the demo flows, the examples and the tests run without downloading
a model. It will be replaced by a small trained demo model (issue 4).

- Shape: hidden ${options.hiddenSize}, ${options.numLayers} layers, ${options.numHeads} heads, intermediate ${options.intermediateSize}, max positions ${options.maxPositions}.
- Vocabulary: ${options.vocab.length} tokens: [PAD] [UNK] [CLS] [SEP] [MASK], ASCII punctuation,
  digits, letters, ##-continuations of letters and digits, a few suffixes, and
  about 2,200 common English words (src/tools/demo-words.ts); lower-cased.
- Weights: seed ${options.seed} of the generator in src/tools/prng.ts (specified in bench/README.md).

Regenerate (bit-identical) with:

    npx tsc -p tsconfig.json && node dist/src/tools/make-demo-model.js
`;
}

/** Writes one demo model (HF files and README.md) into `outDir`. */
export function makeDemoModel(outDir: string, options: RandomBertOptions = DEMO_MODEL_OPTIONS): void {
  writeRandomBertModel(outDir, options);
  fs.writeFileSync(path.join(outDir, 'README.md'), readme(options));
}

if (require.main === module) {
  const repoRoot = path.resolve(__dirname, '..', '..', '..');
  const modelsDir = path.resolve(process.argv[2] ?? path.join(repoRoot, 'models'));
  for (const [name, options] of [['demo', DEMO_MODEL_OPTIONS], ['demo-classifier', DEMO_CLASSIFIER_OPTIONS]] as const) {
    makeDemoModel(path.join(modelsDir, name), options);
    console.log(`wrote ${path.join(modelsDir, name)} (${options.architecture}, ${options.vocab.length} tokens, random weights)`);
  }
}
