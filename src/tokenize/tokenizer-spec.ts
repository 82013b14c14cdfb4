/**
 * Reads a Hugging Face tokenizer.json into the typed description the BERT
 * pipeline runs on, rejecting anything that is not a BERT WordPiece
 * tokenizer with an E_TOKENIZER error that names the offending field.
 * The file's own padding and truncation settings are ignored on purpose:
 * the engine never pads, and truncation is chosen per call.
 */
import { FusedRTError } from '../errors';
import type { BertNormalizerConfig } from './bert-normalizer';

export interface AddedTokenSpec {
  id: number;
  content: string;
  special: boolean;
  /** Matched in the normalised text (true) or in the original text (false). */
  normalized: boolean;
  lstrip: boolean;
  rstrip: boolean;
  singleWord: boolean;
}

export interface WordPieceSpec {
  vocab: Map<string, number>;
  unkToken: string;
  unkId: number;
  continuingSubwordPrefix: string;
  maxInputCharsPerWord: number;
}

export type TemplatePiece =
  | { kind: 'special'; name: string; typeId: number }
  | { kind: 'sequence'; sequence: 0 | 1; typeId: number };

export interface TemplateSpec {
  single: TemplatePiece[];
  pair: TemplatePiece[];
  /** Special token name in the template -> its ids and token strings. */
  specialTokens: Map<string, { ids: number[]; tokens: string[] }>;
}

export interface WordPieceDecoderSpec {
  prefix: string;
  cleanup: boolean;
}

export interface TokenizerSpec {
  normalizer: BertNormalizerConfig | null;
  model: WordPieceSpec;
  addedTokens: AddedTokenSpec[];
  template: TemplateSpec | null;
  decoder: WordPieceDecoderSpec | null;
}

type Json = Record<string, unknown>;

function fail(message: string): never {
  throw new FusedRTError('E_TOKENIZER', `tokenizer.json: ${message}`);
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function bool(obj: Json, key: string, fallback: boolean, where: string): boolean {
  const value = obj[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') fail(`${where}.${key} must be true or false, not ${JSON.stringify(value)}`);
  return value;
}

function str(obj: Json, key: string, fallback: string | undefined, where: string): string {
  const value = obj[key];
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== 'string') fail(`${where}.${key} must be a string`);
  return value;
}

function tokenId(value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0x7fffffff) {
    fail(`${where} must be a non-negative integer token id, not ${JSON.stringify(value)}`);
  }
  return value;
}

const NOT_BERT = 'FusedRT runs BERT WordPiece tokenizers only';

function readNormalizer(value: unknown): BertNormalizerConfig | null {
  if (value === null || value === undefined) return null;
  if (!isObject(value) || value.type !== 'BertNormalizer') {
    fail(`normalizer ${isObject(value) ? `type "${String(value.type)}"` : JSON.stringify(value)} is not a BertNormalizer (${NOT_BERT})`);
  }
  const stripAccents = value.strip_accents;
  if (stripAccents !== undefined && stripAccents !== null && typeof stripAccents !== 'boolean') {
    fail('normalizer.strip_accents must be true, false or null');
  }
  return {
    cleanText: bool(value, 'clean_text', true, 'normalizer'),
    handleChineseChars: bool(value, 'handle_chinese_chars', true, 'normalizer'),
    stripAccents: stripAccents ?? null,
    lowercase: bool(value, 'lowercase', true, 'normalizer'),
  };
}

function readPreTokenizer(value: unknown): void {
  if (!isObject(value) || value.type !== 'BertPreTokenizer') {
    fail(`pre_tokenizer ${isObject(value) ? `type "${String(value.type)}"` : JSON.stringify(value)} is not a BertPreTokenizer (${NOT_BERT})`);
  }
}

function readModel(value: unknown): WordPieceSpec {
  if (!isObject(value)) fail('model is missing');
  if (value.type !== undefined && value.type !== 'WordPiece') fail(`model type "${String(value.type)}" is not WordPiece (${NOT_BERT})`);
  if (!isObject(value.vocab)) fail('model.vocab must be an object mapping tokens to ids');
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(value.vocab)) vocab.set(token, tokenId(id, `model.vocab["${token}"]`));
  if (vocab.size === 0) fail('model.vocab is empty');
  const unkToken = str(value, 'unk_token', '[UNK]', 'model');
  const unkId = vocab.get(unkToken);
  if (unkId === undefined) fail(`model.unk_token "${unkToken}" is not in the vocabulary`);
  const maxChars = value.max_input_chars_per_word ?? 100;
  if (typeof maxChars !== 'number' || !Number.isInteger(maxChars) || maxChars < 1) {
    fail('model.max_input_chars_per_word must be a positive integer');
  }
  return {
    vocab,
    unkToken,
    unkId,
    continuingSubwordPrefix: str(value, 'continuing_subword_prefix', '##', 'model'),
    maxInputCharsPerWord: maxChars,
  };
}

function readAddedTokens(value: unknown, model: WordPieceSpec): AddedTokenSpec[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) fail('added_tokens must be a list');
  return value.map((entry, i) => {
    const where = `added_tokens[${i}]`;
    if (!isObject(entry)) fail(`${where} must be an object`);
    const content = str(entry, 'content', undefined, where);
    const special = bool(entry, 'special', false, where);
    return {
      // As in HF, a token already in the vocabulary keeps its vocabulary id.
      id: model.vocab.get(content) ?? tokenId(entry.id, `${where}.id`),
      content,
      special,
      normalized: bool(entry, 'normalized', !special, where),
      lstrip: bool(entry, 'lstrip', false, where),
      rstrip: bool(entry, 'rstrip', false, where),
      singleWord: bool(entry, 'single_word', false, where),
    };
  });
}

function readTemplatePieces(value: unknown, where: string, specialTokens: TemplateSpec['specialTokens']): TemplatePiece[] {
  if (!Array.isArray(value)) fail(`${where} must be a list`);
  return value.map((piece, i) => {
    const at = `${where}[${i}]`;
    if (isObject(piece) && isObject(piece.SpecialToken)) {
      const name = str(piece.SpecialToken, 'id', undefined, `${at}.SpecialToken`);
      if (!specialTokens.has(name)) fail(`${at} uses "${name}", which post_processor.special_tokens does not define`);
      return { kind: 'special', name, typeId: tokenId(piece.SpecialToken.type_id ?? 0, `${at}.SpecialToken.type_id`) };
    }
    if (isObject(piece) && isObject(piece.Sequence)) {
      const id = piece.Sequence.id;
      if (id !== 'A' && id !== 'B') fail(`${at}.Sequence.id must be "A" or "B"`);
      return { kind: 'sequence', sequence: id === 'A' ? 0 : 1, typeId: tokenId(piece.Sequence.type_id ?? 0, `${at}.Sequence.type_id`) };
    }
    return fail(`${at} must be a SpecialToken or a Sequence`);
  });
}

function readTemplateProcessing(value: Json): TemplateSpec {
  const specialTokens: TemplateSpec['specialTokens'] = new Map();
  const declared = value.special_tokens ?? {};
  if (!isObject(declared)) fail('post_processor.special_tokens must be an object');
  for (const [name, entry] of Object.entries(declared)) {
    const where = `post_processor.special_tokens["${name}"]`;
    if (!isObject(entry) || !Array.isArray(entry.ids) || !Array.isArray(entry.tokens) || entry.ids.length !== entry.tokens.length) {
      fail(`${where} must have lists "ids" and "tokens" of equal length`);
    }
    specialTokens.set(name, {
      ids: entry.ids.map((id, k) => tokenId(id, `${where}.ids[${k}]`)),
      tokens: entry.tokens.map((token, k) => {
        if (typeof token !== 'string') fail(`${where}.tokens[${k}] must be a string`);
        return token;
      }),
    });
  }
  const single = readTemplatePieces(value.single, 'post_processor.single', specialTokens);
  const pair = readTemplatePieces(value.pair, 'post_processor.pair', specialTokens);
  const sequences = (pieces: TemplatePiece[]) => pieces.filter((p) => p.kind === 'sequence').map((p) => (p as { sequence: number }).sequence).join('');
  if (sequences(single) !== '0') fail('post_processor.single must contain the sequence $A exactly once');
  if (sequences(pair) !== '01') fail('post_processor.pair must contain $A and then $B, once each');
  return { single, pair, specialTokens };
}

/** BertProcessing is the older spelling of [CLS] $A [SEP] / [CLS] $A [SEP] $B:1 [SEP]:1. */
function readBertProcessing(value: Json): TemplateSpec {
  const named = (key: 'cls' | 'sep') => {
    const entry = value[key];
    if (!Array.isArray(entry) || entry.length !== 2 || typeof entry[0] !== 'string') fail(`post_processor.${key} must be [token, id]`);
    return { name: entry[0] as string, id: tokenId(entry[1], `post_processor.${key}[1]`) };
  };
  const cls = named('cls');
  const sep = named('sep');
  const special = (name: string, typeId: number): TemplatePiece => ({ kind: 'special', name, typeId });
  const sequence = (index: 0 | 1, typeId: number): TemplatePiece => ({ kind: 'sequence', sequence: index, typeId });
  return {
    single: [special(cls.name, 0), sequence(0, 0), special(sep.name, 0)],
    pair: [special(cls.name, 0), sequence(0, 0), special(sep.name, 0), sequence(1, 1), special(sep.name, 1)],
    specialTokens: new Map([[cls.name, { ids: [cls.id], tokens: [cls.name] }], [sep.name, { ids: [sep.id], tokens: [sep.name] }]]),
  };
}

function readPostProcessor(value: unknown): TemplateSpec | null {
  if (value === null || value === undefined) return null;
  if (isObject(value) && value.type === 'TemplateProcessing') return readTemplateProcessing(value);
  if (isObject(value) && value.type === 'BertProcessing') return readBertProcessing(value);
  return fail(`post_processor ${isObject(value) ? `type "${String(value.type)}"` : JSON.stringify(value)} is not TemplateProcessing or BertProcessing (${NOT_BERT})`);
}

function readDecoder(value: unknown): WordPieceDecoderSpec | null {
  if (value === null || value === undefined) return null;
  if (!isObject(value) || value.type !== 'WordPiece') {
    fail(`decoder ${isObject(value) ? `type "${String(value.type)}"` : JSON.stringify(value)} is not WordPiece (${NOT_BERT})`);
  }
  return { prefix: str(value, 'prefix', '##', 'decoder'), cleanup: bool(value, 'cleanup', true, 'decoder') };
}

/** Parses tokenizer.json text or its parsed object. */
export function readTokenizerSpec(tokenizerJson: string | object): TokenizerSpec {
  let root: unknown = tokenizerJson;
  if (typeof tokenizerJson === 'string') {
    try {
      root = JSON.parse(tokenizerJson);
    } catch (e) {
      fail(`not valid JSON (${(e as Error).message})`);
    }
  }
  if (!isObject(root)) fail('must be a JSON object');
  const model = readModel(root.model);
  const normalizer = readNormalizer(root.normalizer);
  readPreTokenizer(root.pre_tokenizer);
  return {
    normalizer,
    model,
    addedTokens: readAddedTokens(root.added_tokens, model),
    template: readPostProcessor(root.post_processor),
    decoder: readDecoder(root.decoder),
  };
}
