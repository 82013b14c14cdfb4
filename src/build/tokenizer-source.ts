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
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new FusedRTError('E_TOKENIZER', `${name} is not valid JSON (${(e as Error).message})`);
  }
  // Callers read fields straight away; `null` or a list would fail there with a TypeError and no code.
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new FusedRTError('E_TOKENIZER', `${name} must be a JSON object`);
  return value as Record<string, unknown>;
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

/** Whether BertNormalizer lowercases (its default); createTokenizer rejects every other normalizer. */
function lowercases(normalizer: unknown): boolean {
  if (typeof normalizer !== 'object' || normalizer === null) return false;
  const n = normalizer as { type?: unknown; lowercase?: unknown };
  return n.type === 'BertNormalizer' && n.lowercase !== false;
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
  const runtimeTokenizer = createTokenizer(tokenizer);
  const maskToken = maskTokenOf(tokenizer, tokenizerConfig, specialTokens);
  return {
    bytes: Buffer.from(text, 'utf8'),
    file,
    maskToken,
    doLowerCase,
    idCount: runtimeTokenizer.vocabSize,
    hasMaskToken: runtimeTokenizer.tokenToId(maskToken) !== undefined,
  };
}
