/**
 * Finds the tokenizer of a Hugging Face model directory for the plan:
 * `tokenizer.json` as is, or one made from `vocab.txt` (older BERT uploads
 * ship only that). The plan stores tokenizer.json bytes, so the runtime has
 * one format to load.
 */
import * as fs from 'fs';
import * as path from 'path';
import { FusedRTError } from '../errors';
import { createTokenizer } from '../tokenize/tokenizer';
import { tokenizerJsonFromVocab } from '../tokenize/vocab';

export interface TokenizerSource {
  /** UTF-8 tokenizer.json. */
  bytes: Uint8Array;
  /** The file it came from (tokenizer.json or vocab.txt). */
  file: string;
  maskToken: string;
  doLowerCase: boolean;
  /** One past the largest token id; must fit the model's embedding table. */
  idCount: number;
  /** Whether `maskToken` is a token of the vocabulary (fill-mask needs it). */
  hasMaskToken: boolean;
}

const DEFAULT_MASK_TOKEN = '[MASK]';

function parseJson(text: string, name: string): Record<string, unknown> {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new FusedRTError('E_TOKENIZER', `${name} is not valid JSON (${(e as Error).message})`);
  }
}

function readJsonIfPresent(file: string): Record<string, unknown> | undefined {
  return fs.existsSync(file) ? parseJson(fs.readFileSync(file, 'utf8'), path.basename(file)) : undefined;
}

/** A special token in tokenizer_config.json / special_tokens_map.json is a string or an AddedToken object. */
function tokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

function maskTokenOf(tokenizer: Record<string, unknown>, tokenizerConfig?: Record<string, unknown>, specialTokens?: Record<string, unknown>): string {
  const configured = tokenContent(tokenizerConfig?.mask_token) ?? tokenContent(specialTokens?.mask_token);
  if (configured) return configured;
  const added = Array.isArray(tokenizer.added_tokens) ? tokenizer.added_tokens as Array<{ content?: unknown; special?: unknown }> : [];
  const mask = added.find((t) => t.special === true && typeof t.content === 'string' && /mask/i.test(t.content));
  return (mask?.content as string | undefined) ?? DEFAULT_MASK_TOKEN;
}

/** Whether the tokenizer.json normalizer lowercases (BertNormalizer.lowercase, or a Lowercase step in a Sequence). */
function lowercases(normalizer: unknown): boolean {
  if (typeof normalizer !== 'object' || normalizer === null) return false;
  const n = normalizer as { type?: unknown; lowercase?: unknown; normalizers?: unknown };
  if (n.type === 'BertNormalizer') return n.lowercase !== false;
  if (n.type === 'Lowercase') return true;
  if (n.type === 'Sequence' && Array.isArray(n.normalizers)) return n.normalizers.some(lowercases);
  return false;
}

/** One past the largest id in the model vocabulary (object token → id, or Unigram's [token, score] list) and added tokens. */
function idCountOf(tokenizer: Record<string, unknown>): number {
  let count = 0;
  const vocab = (tokenizer.model as { vocab?: unknown } | undefined)?.vocab;
  if (Array.isArray(vocab)) count = vocab.length;
  else if (typeof vocab === 'object' && vocab !== null) {
    for (const id of Object.values(vocab)) if (typeof id === 'number' && id + 1 > count) count = id + 1;
  }
  for (const t of Array.isArray(tokenizer.added_tokens) ? tokenizer.added_tokens as Array<{ id?: unknown }> : []) {
    if (typeof t.id === 'number' && t.id + 1 > count) count = t.id + 1;
  }
  return count;
}

function hasToken(tokenizer: Record<string, unknown>, token: string): boolean {
  const vocab = (tokenizer.model as { vocab?: unknown } | undefined)?.vocab;
  const inVocab = Array.isArray(vocab)
    ? vocab.some((entry) => Array.isArray(entry) && entry[0] === token)
    : typeof vocab === 'object' && vocab !== null && Object.prototype.hasOwnProperty.call(vocab, token);
  const added = Array.isArray(tokenizer.added_tokens) ? tokenizer.added_tokens as Array<{ content?: unknown }> : [];
  return inVocab || added.some((t) => t.content === token);
}

export function loadTokenizerSource(dir: string): TokenizerSource {
  const tokenizerConfig = readJsonIfPresent(path.join(dir, 'tokenizer_config.json'));
  const specialTokens = readJsonIfPresent(path.join(dir, 'special_tokens_map.json'));
  const jsonFile = path.join(dir, 'tokenizer.json');
  const vocabFile = path.join(dir, 'vocab.txt');
  let text: string;
  let file: string;
  let doLowerCase: boolean;
  let tokenizer: Record<string, unknown>;
  if (fs.existsSync(jsonFile)) {
    file = 'tokenizer.json';
    text = fs.readFileSync(jsonFile, 'utf8');
    tokenizer = parseJson(text, file);
    doLowerCase = lowercases(tokenizer.normalizer);
  } else if (fs.existsSync(vocabFile)) {
    file = 'vocab.txt';
    doLowerCase = tokenizerConfig?.do_lower_case !== false;
    tokenizer = tokenizerJsonFromVocab(fs.readFileSync(vocabFile, 'utf8'), { doLowerCase }) as Record<string, unknown>;
    text = JSON.stringify(tokenizer);
  } else {
    throw new FusedRTError('E_MODEL', `${dir} has no tokenizer (tokenizer.json or vocab.txt)`);
  }
  // Fail at build time, not when the plan is deployed, if the runtime's tokenizer cannot load it.
  createTokenizer(tokenizer);
  const maskToken = maskTokenOf(tokenizer, tokenizerConfig, specialTokens);
  return {
    bytes: Buffer.from(text, 'utf8'),
    file,
    maskToken,
    doLowerCase,
    idCount: idCountOf(tokenizer),
    hasMaskToken: hasToken(tokenizer, maskToken),
  };
}
