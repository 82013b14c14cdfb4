import * as assert from 'assert';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { errorCode } from '../src/errors';
import { createTokenizer, encodeBatchYielding, tokenizerJsonFromVocab } from '../src/tokenize';
import type { EncodeOptions, Encoding, FusedTokenizer, TextPair, TruncationStrategy } from '../src/tokenize';
import { mulberry32 } from './support/mulberry32';

const ROOT = path.resolve(__dirname, '../..');
const BERT_DIR = path.resolve(__dirname, '../../../shared/data/bert-base-uncased');
const STRINGS_FILE = path.join(ROOT, 'tools/fixtures/tokenizer-strings.json');
const EXPECTED_FILE = path.join(ROOT, 'test/fixtures/tokenizer-expected.json');
const MAKE_EXPECTED = 'python3 tools/fixtures/make_tokenizer_expected.py --tokenizer ../shared/data/bert-base-uncased/tokenizer.json '
  + '--strings tools/fixtures/tokenizer-strings.json --out test/fixtures/tokenizer-expected.json';

interface TruncationCase { text: string; pair?: string; max_length: number; strategy: TruncationStrategy }
interface StringsFile { singles: string[]; pairs: Array<[string, string]>; truncation: TruncationCase[] }

interface Case {
  kind: 'single' | 'pair' | 'truncation';
  text: string;
  pair?: string;
  max_length?: number;
  strategy?: TruncationStrategy;
  input: string | TextPair;
  options: EncodeOptions;
}

interface ExpectedCase {
  kind: string;
  text: string;
  pair?: string;
  error?: string;
  ids: number[];
  type_ids: number[];
  tokens: string[];
  offsets: Array<[number, number]>;
  special_tokens_mask: number[];
  sequence_ids: Array<number | null>;
  decoded: string;
  decoded_skip_special: string;
}

function loadCases(): Case[] {
  const strings = JSON.parse(fs.readFileSync(STRINGS_FILE, 'utf8')) as StringsFile;
  return [
    ...strings.singles.map((text): Case => ({ kind: 'single', text, input: text, options: { maxLength: 100000 } })),
    ...strings.pairs.map(([text, pair]): Case => ({ kind: 'pair', text, pair, input: { text, pair }, options: { maxLength: 100000 } })),
    ...strings.truncation.map((c): Case => ({
      kind: 'truncation', text: c.text, pair: c.pair, max_length: c.max_length, strategy: c.strategy,
      input: c.pair === undefined ? c.text : { text: c.text, pair: c.pair },
      options: { maxLength: c.max_length, truncation: c.strategy },
    })),
  ];
}

function describeCase(c: Case): string {
  const head = JSON.stringify(c.text) + (c.pair === undefined ? '' : ` + ${JSON.stringify(c.pair)}`);
  return c.kind === 'truncation' ? `${head} (max ${c.max_length}, ${c.strategy})` : head;
}

function expectInputError(fn: () => unknown, pattern?: RegExp): void {
  assert.throws(fn, (err: Error) => {
    assert.strictEqual(errorCode(err), 'E_INPUT', `expected E_INPUT, got ${errorCode(err)}: ${err.message}`);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

function expectTokenizerError(json: string | object, pattern: RegExp): void {
  assert.throws(() => createTokenizer(json), (err: Error) => {
    assert.strictEqual(errorCode(err), 'E_TOKENIZER', err.message);
    assert.match(err.message, pattern);
    return true;
  });
}

const tokenizerJsonText = fs.readFileSync(path.join(BERT_DIR, 'tokenizer.json'), 'utf8');
const cases = loadCases();

describe('tokenizer: parity with Hugging Face tokenizers (bert-base-uncased)', () => {
  const tokenizer = createTokenizer(tokenizerJsonText);

  it('has at least 220 single inputs, 30 pairs and 15 truncation cases to compare', () => {
    const count = (kind: Case['kind']) => cases.filter((c) => c.kind === kind).length;
    assert.ok(count('single') >= 220 && count('pair') >= 30 && count('truncation') >= 15);
  });

  it('matches the recorded ids, type ids, offsets, tokens, masks and decodes of every case', function () {
    if (!fs.existsSync(EXPECTED_FILE)) {
      assert.fail(`${path.relative(ROOT, EXPECTED_FILE)} is missing. Generate it where Python has tokenizers and transformers `
        + `(the GPU machine), from the repository root:\n  ${MAKE_EXPECTED}\nand commit it.`);
    }
    const expected = JSON.parse(fs.readFileSync(EXPECTED_FILE, 'utf8')) as { generator: Record<string, unknown>; cases: ExpectedCase[] };
    assert.strictEqual(expected.generator.tokenizer_sha256, createHash('sha256').update(tokenizerJsonText).digest('hex'),
      `the fixture was made from another tokenizer.json; regenerate it:\n  ${MAKE_EXPECTED}`);
    assert.deepStrictEqual(expected.cases.map((e) => [e.kind, e.text, e.pair]), cases.map((c) => [c.kind, c.text, c.pair]),
      `the fixture was made from another version of tokenizer-strings.json; regenerate it:\n  ${MAKE_EXPECTED}`);
    const mismatches: string[] = [];
    cases.forEach((c, i) => {
      const want = expected.cases[i];
      let got: Encoding;
      try {
        got = tokenizer.encode(c.input, c.options);
      } catch (err) {
        if (want.error === undefined || errorCode(err) !== 'E_INPUT') mismatches.push(`${describeCase(c)}: threw ${(err as Error).message}`);
        return;
      }
      if (want.error !== undefined) {
        mismatches.push(`${describeCase(c)}: HF refused (${want.error}) but FusedRT returned ${got.ids.length} tokens`);
        return;
      }
      const fields: Array<[string, unknown, unknown]> = [
        ['ids', Array.from(got.ids), want.ids],
        ['type ids', Array.from(got.typeIds), want.type_ids],
        ['offsets', got.offsets, want.offsets],
        ['tokens', got.tokens, want.tokens],
        ['special tokens mask', Array.from(got.specialTokensMask), want.special_tokens_mask],
        ['sequence ids', Array.from(got.sequenceIds), want.sequence_ids.map((s) => s ?? -1)],
        ['decode', tokenizer.decode(got.ids), want.decoded],
        ['decode skipping specials', tokenizer.decode(got.ids, true), want.decoded_skip_special],
      ];
      for (const [name, actual, wanted] of fields) {
        if (JSON.stringify(actual) !== JSON.stringify(wanted)) {
          mismatches.push(`${describeCase(c)}: ${name}\n      got  ${JSON.stringify(actual)}\n      want ${JSON.stringify(wanted)}`);
        }
      }
    });
    assert.ok(mismatches.length === 0, `${mismatches.length} of ${cases.length} cases differ from HF tokenizers:\n  ${mismatches.join('\n  ')}`);
  });

  it('was recorded with transformers agreeing with tokenizers on every case', function () {
    if (!fs.existsSync(EXPECTED_FILE)) assert.fail(`${path.relative(ROOT, EXPECTED_FILE)} is missing (see the test above)`);
    const expected = JSON.parse(fs.readFileSync(EXPECTED_FILE, 'utf8')) as { generator: { transformers: string | null }; transformers_disagreements: number[] };
    assert.ok(expected.generator.transformers, 'the fixture was made without transformers; regenerate it where transformers is installed');
    assert.deepStrictEqual(expected.transformers_disagreements, [], 'BertTokenizerFast disagreed with tokenizers on these case indices');
  });
});

describe('tokenizer: tokenizerJsonFromVocab', () => {
  const vocabText = fs.readFileSync(path.join(BERT_DIR, 'vocab.txt'), 'utf8');
  const real = JSON.parse(tokenizerJsonText) as Record<string, unknown>;
  const built = tokenizerJsonFromVocab(vocabText, { doLowerCase: true }) as Record<string, unknown>;

  it('builds the same pipeline as the real tokenizer.json (padding and truncation aside)', () => {
    for (const key of ['added_tokens', 'normalizer', 'pre_tokenizer', 'post_processor', 'decoder', 'model']) {
      assert.deepStrictEqual(JSON.parse(JSON.stringify(built[key])), real[key], key);
    }
  });

  it('gives the same encodings as the real tokenizer.json on all test inputs', () => {
    const fromJson = createTokenizer(tokenizerJsonText);
    const fromVocab = createTokenizer(built);
    const differing = cases.filter((c) => {
      const run = (t: FusedTokenizer) => {
        try {
          const e = t.encode(c.input, c.options);
          return JSON.stringify([Array.from(e.ids), Array.from(e.typeIds), e.offsets]);
        } catch (err) {
          return `error ${errorCode(err)}`;
        }
      };
      return run(fromJson) !== run(fromVocab);
    });
    assert.deepStrictEqual(differing.map(describeCase), []);
  });

  it('follows doLowerCase, keeps "__proto__" as a token and rejects a vocabulary without BERT tokens', () => {
    const cased = createTokenizer(tokenizerJsonFromVocab('[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nHello\nhello\n__proto__\n', { doLowerCase: false }));
    assert.deepStrictEqual(Array.from(cased.encode('Hello hello').ids), [2, 5, 6, 3]);
    assert.strictEqual(cased.tokenToId('__proto__'), 7);
    const uncased = createTokenizer(tokenizerJsonFromVocab('[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nhello\r\n'));
    assert.deepStrictEqual(Array.from(uncased.encode('HELLO').ids), [2, 4, 3]);
    assert.strictEqual(uncased.maskTokenId, undefined);
    assert.throws(() => tokenizerJsonFromVocab('a\nb\n'), (err: Error) => errorCode(err) === 'E_TOKENIZER' && /\[UNK\]/.test(err.message));
  });
});

describe('tokenizer: behaviour', () => {
  const tokenizer = createTokenizer(tokenizerJsonText);
  const longText = 'one two three four five six seven eight nine ten eleven twelve';

  it('knows bert-base-uncased ids and its special tokens', () => {
    assert.deepStrictEqual(Array.from(tokenizer.encode('hello world').ids), [101, 7592, 2088, 102]);
    assert.deepStrictEqual(Array.from(tokenizer.encode('[MASK]').ids), [101, 103, 102]);
    assert.deepStrictEqual(Array.from(tokenizer.encode('').ids), [101, 102]);
    assert.strictEqual(tokenizer.maskTokenId, 103);
    assert.strictEqual(tokenizer.maskToken, '[MASK]');
    assert.strictEqual(tokenizer.padTokenId, 0);
    assert.strictEqual(tokenizer.vocabSize, 30522);
    assert.strictEqual(tokenizer.tokenToId('[SEP]'), 102);
    assert.strictEqual(tokenizer.idToToken(7592), 'hello');
    assert.strictEqual(tokenizer.idToToken(30522), undefined);
  });

  it('gives offsets that point at the original substrings (accents, emoji, CJK, masks)', () => {
    const text = 'Café\u00a0Zürich 😀 [MASK] 東京 e\u0301t\u00e9 İstanbul';
    const e = tokenizer.encode(text);
    const pieces = e.tokens.map((token, i) => [token, text.slice(...e.offsets[i])]);
    assert.deepStrictEqual(pieces, [
      ['[CLS]', ''], ['cafe', 'Café'], ['zurich', 'Zürich'], ['[UNK]', '😀'], ['[MASK]', '[MASK]'],
      ['東', '東'], ['京', '京'], ['et', 'e\u0301t'], ['##e', '\u00e9'], ['istanbul', 'İstanbul'], ['[SEP]', ''],
    ]);
    assert.deepStrictEqual(Array.from(e.specialTokensMask), [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  });

  it('lays out pairs as [CLS] A [SEP] B [SEP] with type and sequence ids', () => {
    const e = tokenizer.encode({ text: 'Who?', pair: 'Me [MASK].' });
    assert.deepStrictEqual(e.tokens, ['[CLS]', 'who', '?', '[SEP]', 'me', '[MASK]', '.', '[SEP]']);
    assert.deepStrictEqual(Array.from(e.typeIds), [0, 0, 0, 0, 1, 1, 1, 1]);
    assert.deepStrictEqual(Array.from(e.sequenceIds), [-1, 0, 0, -1, 1, 1, 1, -1]);
    assert.deepStrictEqual(Array.from(e.specialTokensMask), [1, 0, 0, 1, 0, 0, 0, 1]);
    assert.deepStrictEqual(e.offsets, [[0, 0], [0, 3], [3, 4], [0, 0], [0, 2], [3, 9], [9, 10], [0, 0]]);
    assert.strictEqual(e.truncated, false);
  });

  it('leaves out special tokens when asked', () => {
    const e = tokenizer.encode({ text: 'a', pair: 'b' }, { addSpecialTokens: false });
    assert.deepStrictEqual(e.tokens, ['a', 'b']);
    assert.deepStrictEqual(Array.from(e.typeIds), [0, 1]);
  });

  it('truncates with longest_first, only_first and only_second, counting special tokens', () => {
    const single = tokenizer.encode(longText, { maxLength: 5 });
    assert.deepStrictEqual(single.tokens, ['[CLS]', 'one', 'two', 'three', '[SEP]']);
    assert.strictEqual(single.truncated, true);
    const pair = { text: longText, pair: 'a b c' };
    const lengths = (e: Encoding) => [0, 1].map((s) => Array.from(e.sequenceIds).filter((id) => id === s).length);
    assert.deepStrictEqual(lengths(tokenizer.encode(pair, { maxLength: 10 })), [4, 3]);
    assert.deepStrictEqual(lengths(tokenizer.encode(pair, { maxLength: 10, truncation: 'only_first' })), [4, 3]);
    assert.deepStrictEqual(lengths(tokenizer.encode({ text: longText, pair: longText }, { maxLength: 10 })), [3, 4]);
    assert.deepStrictEqual(lengths(tokenizer.encode({ text: 'a b', pair: longText }, { maxLength: 10, truncation: 'only_second' })), [2, 5]);
    assert.deepStrictEqual(lengths(tokenizer.encode(pair, { maxLength: 3 })), [0, 0]);
    assert.strictEqual(tokenizer.encode(pair, { maxLength: 100 }).truncated, false);
  });

  it('truncates a long text by tokenising only its head, with what a whole tokenisation gives', () => {
    // Chunks as small as one character, every strategy, pairs, [MASK], and
    // the whitespace a chunk must not end at (U+000B and U+000C vanish in
    // clean_text, joining their neighbours; NBSP and U+3000 stay whitespace).
    const reference = createTokenizer(tokenizerJsonText, { chunkChars: 1e9 });
    const chunked = [1, 2, 5, 13, 64].map((chunkChars) => createTokenizer(tokenizerJsonText, { chunkChars }));
    const words = ['the', 'Quick', 'brown', 'fox', 'unbelievably', 'Café', 'e\u0301t\u00e9', 'ΣΊΣΥΦΟΣ', '東京', '😀', ',', '.',
      '[MASK]', 'İstanbul', "don't", 'ab\u000bcd', 'x\u000cy', 'Zürich'];
    const separators = [' ', '  ', '\t', '\n', '\r\n', '', '\u00a0', '\u3000', '\u000b'];
    const random = mulberry32(20261123);
    const pick = <T>(list: T[]) => list[Math.floor(random() * list.length)];
    const randomText = () => Array.from({ length: 1 + Math.floor(random() * 60) }, () => pick(words) + pick(separators)).join('');
    const outcome = (t: FusedTokenizer, input: string | TextPair, options: EncodeOptions) => {
      try {
        return t.encode(input, options);
      } catch (err) {
        return `${errorCode(err)}: ${(err as Error).message}`;
      }
    };
    for (let i = 0; i < 200; i++) {
      const input = i % 3 === 0 ? { text: randomText(), pair: randomText() } : randomText();
      for (const truncation of ['longest_first', 'only_first', 'only_second'] as const) {
        const options = { maxLength: 4 + (i % 40), truncation, addSpecialTokens: i % 2 === 0 };
        const expected = outcome(reference, input, options);
        for (const tokenizer of chunked) assert.deepStrictEqual(outcome(tokenizer, input, options), expected, JSON.stringify({ input, options }));
      }
      if (typeof input === 'string') {
        // One text: the head of its whole tokenisation between [CLS] and [SEP].
        const maxLength = 4 + (i % 40);
        const all = tokenizer.encode(input, { truncation: 'none', maxLength: 100000 });
        const head = Array.from(all.ids).slice(1, -1).slice(0, maxLength - 2);
        const cut = tokenizer.encode(input, { maxLength });
        assert.deepStrictEqual(Array.from(cut.ids), [101, ...head, 102], input);
        assert.strictEqual(cut.truncated, all.ids.length > maxLength, input);
      }
    }
  });

  it("raises E_INPUT with the token count when truncation is 'none' and the text is too long", () => {
    expectInputError(() => tokenizer.encode(longText, { maxLength: 8, truncation: 'none' }), /14 tokens .*limit is 8/);
    assert.strictEqual(tokenizer.encode('one two', { maxLength: 4, truncation: 'none' }).ids.length, 4);
    expectInputError(() => tokenizer.encode(longText, { maxLength: 8, truncation: 'only_second' }), /needs a text pair/);
    expectInputError(() => tokenizer.encode({ text: 'a', pair: longText }, { maxLength: 8, truncation: 'only_first' }), /first text has only 1/);
    expectInputError(() => tokenizer.encode({ text: 'a', pair: 'b' }, { maxLength: 2 }), /3 special tokens/);
  });

  it('uses the maxLength given at creation as the default', () => {
    const short = createTokenizer(tokenizerJsonText, { maxLength: 6 });
    assert.strictEqual(short.encode(longText).ids.length, 6);
    assert.strictEqual(short.encode(longText, { maxLength: 8 }).ids.length, 8);
  });

  it('encodes a batch exactly as one text at a time', () => {
    const inputs: Array<string | TextPair> = ['Hello there!', { text: 'A question?', pair: 'An answer.' }, '', 'ünïcödé 😀 [MASK]'];
    assert.deepStrictEqual(tokenizer.encodeBatch(inputs, { maxLength: 8 }), inputs.map((input) => tokenizer.encode(input, { maxLength: 8 })));
  });

  it('decodes like HF: "##" pieces glued, spaces before punctuation removed, specials optional', () => {
    const ids = tokenizer.encode('Unaffordable, isn\'t it? [MASK]!').ids;
    // Cleanup works token by token, so "isn ' t" keeps its spaces, as in HF.
    assert.strictEqual(tokenizer.decode(ids), "[CLS] unaffordable, isn ' t it? [MASK]! [SEP]");
    assert.strictEqual(tokenizer.decode(ids, true), "unaffordable, isn ' t it?!");
    assert.strictEqual(tokenizer.decode(new Int32Array([7592, 2088])), 'hello world');
    expectInputError(() => tokenizer.decode([7592, 99999]), /99999/);
  });

  it('rejects bad inputs and options with E_INPUT', () => {
    const encodeAny = tokenizer.encode.bind(tokenizer) as (input: unknown, options?: unknown) => Encoding;
    expectInputError(() => encodeAny(42));
    expectInputError(() => encodeAny(null));
    expectInputError(() => encodeAny({ text: 'a', pair: 7 }));
    expectInputError(() => encodeAny('a', { maxLength: 0 }), /maxLength/);
    expectInputError(() => encodeAny('a', { maxLength: 2.5 }), /maxLength/);
    expectInputError(() => encodeAny('a', { truncation: 'sometimes' }), /truncation/);
    expectInputError(() => (tokenizer.encodeBatch.bind(tokenizer) as (texts: unknown) => Encoding[])('not an array'));
  });

  it('survives unpaired surrogates (read as U+FFFD, which clean_text drops)', () => {
    const text = 'a\ud800b \udc00';
    const e = tokenizer.encode(text);
    assert.deepStrictEqual(e.tokens, ['[CLS]', 'ab', '[SEP]']);
    assert.deepStrictEqual(e.offsets[1], [0, 3]);
  });

  it('rejects tokenizer.json files that are malformed or not BERT WordPiece with E_TOKENIZER', () => {
    const real = JSON.parse(tokenizerJsonText) as Record<string, unknown>;
    const model = real.model as Record<string, unknown>;
    expectTokenizerError('{ not json', /not valid JSON/);
    expectTokenizerError('[]', /JSON object/);
    expectTokenizerError({ ...real, model: { ...model, type: 'BPE' } }, /model type "BPE" is not WordPiece/);
    expectTokenizerError({ ...real, model: { ...model, vocab: undefined } }, /model\.vocab/);
    expectTokenizerError({ ...real, model: { ...model, unk_token: '<unk>' } }, /"<unk>" is not in the vocabulary/);
    expectTokenizerError({ ...real, normalizer: { type: 'NFKC' } }, /normalizer type "NFKC"/);
    expectTokenizerError({ ...real, pre_tokenizer: { type: 'ByteLevel' } }, /pre_tokenizer type "ByteLevel"/);
    expectTokenizerError({ ...real, post_processor: { type: 'RobertaProcessing' } }, /post_processor type "RobertaProcessing"/);
    expectTokenizerError({ ...real, added_tokens: [{ id: -1, content: '<x>' }] }, /added_tokens\[0\]\.id/);
    expectTokenizerError(Buffer.from('x') as unknown as object, /JSON object|model/);
  });
});

describe('tokenizer: added token options (checked against HF tokenizers 0.23)', () => {
  const real = JSON.parse(tokenizerJsonText) as { added_tokens: Array<Record<string, unknown>>; model: { vocab: Record<string, number> } };
  const withAdded = (extra: Array<Record<string, unknown>>) => createTokenizer({ ...real, added_tokens: [...real.added_tokens, ...extra] });

  it('lstrip and rstrip swallow the whitespace next to the token', () => {
    const t = withAdded([{ id: 30522, content: '<ent>', special: false, normalized: false, lstrip: true, rstrip: true, single_word: false }]);
    const text = 'a  <ent>  b';
    const e = t.encode(text);
    assert.deepStrictEqual(e.tokens, ['[CLS]', 'a', '  <ent>  ', 'b', '[SEP]']);
    assert.deepStrictEqual(e.offsets, [[0, 0], [0, 1], [1, 10], [10, 11], [0, 0]]);
    assert.strictEqual(t.vocabSize, 30523);
  });

  it('single_word tokens match only between non-word characters', () => {
    const t = withAdded([{ id: 30522, content: 'xyz', special: false, normalized: false, lstrip: false, rstrip: false, single_word: true }]);
    assert.deepStrictEqual(t.encode('xyz axyz xyz.').tokens, ['[CLS]', 'xyz', 'ax', '##y', '##z', 'xyz', '.', '[SEP]']);
  });

  it('normalised tokens match the normalised text', () => {
    const t = withAdded([{ id: 30522, content: 'FusedRT', special: false, normalized: true, lstrip: false, rstrip: false, single_word: false }]);
    const text = 'I like FUSEDRT!';
    const e = t.encode(text);
    assert.deepStrictEqual(e.tokens, ['[CLS]', 'i', 'like', 'fusedrt', '!', '[SEP]']);
    assert.deepStrictEqual(Array.from(e.ids).slice(3, 4), [30522]);
    assert.strictEqual(text.slice(...e.offsets[3]), 'FUSEDRT');
    assert.strictEqual(t.decode(e.ids, true), 'i like fusedrt!');
    assert.strictEqual(t.tokenToId('FusedRT'), 30522);
  });
});

describe('tokenizer: encodeBatchYielding', () => {
  const tokenizer = createTokenizer(tokenizerJsonText);
  const texts = cases.filter((c) => c.kind !== 'truncation').map((c) => c.input);

  it('gives encodeBatch\'s encodings, whether it lets the event loop turn after every text or never', async () => {
    const expected = tokenizer.encodeBatch(texts);
    assert.deepStrictEqual(await encodeBatchYielding(tokenizer, texts, undefined, 0), expected);
    assert.deepStrictEqual(await encodeBatchYielding(tokenizer, texts, undefined, 1e9), expected);
    assert.deepStrictEqual(await encodeBatchYielding(tokenizer, texts), expected);
  });

  it('lets the event loop turn between texts once its slice is used up, and not before', async () => {
    let turned = false;
    setImmediate(() => { turned = true; });
    await encodeBatchYielding(tokenizer, ['one', 'two'], undefined, 1e9);
    assert.strictEqual(turned, false, 'a batch within its slice keeps the thread');
    await encodeBatchYielding(tokenizer, ['one', 'two'], undefined, 0);
    assert.strictEqual(turned, true, 'an immediate queued before ran while the batch was tokenised');
  });

  it('rejects what encodeBatch rejects, with E_INPUT', async () => {
    for (const bad of [[42], 'not an array']) {
      await assert.rejects(encodeBatchYielding(tokenizer, bad as never), (err: unknown) => errorCode(err) === 'E_INPUT');
    }
  });
});
