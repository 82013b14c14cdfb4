/**
 * The BERT WordPiece tokenizer of FusedRT, built from a Hugging Face
 * tokenizer.json and matching HF tokenizers (Rust/Python) token for token,
 * with offsets into the original text in UTF-16 code units.
 *
 * Why not @huggingface/tokenizers (tokenizers.js): it returns no offsets,
 * and its BertNormalizer differs from HF's on real text (CJK ideographs
 * outside the BMP, final sigma, Unicode categories newer than HF's tables),
 * so the pipeline is implemented here from the tokenizer.json fields.
 */
import { FusedRTError } from '../errors';
import { AddedTokenMatcher } from './added-tokens';
import { AlignedText } from './aligned-text';
import { normalizeBert } from './bert-normalizer';
import { applyTemplate, keptLengths, specialTokenCount } from './post-process';
import { readTokenizerSpec, type AddedTokenSpec, type TokenizerSpec } from './tokenizer-spec';
import type { EncodeOptions, Encoding, FusedTokenizer, TextPair, TruncationStrategy } from './types';
import { forEachWord, TokenizedText, WordPieceModel } from './wordpiece';

export interface CreateTokenizerOptions {
  /** Default maximum tokens per encoding, special tokens included (the plan's max sequence length). Default: 512. */
  maxLength?: number;
  /**
   * A text being truncated is normalised and tokenised this many characters
   * at a time (cut before a space, tab or line break), and only until its
   * kept tokens are known. Tests make it small; results never depend on it.
   * Default: 1024.
   */
  chunkChars?: number;
}

const TRUNCATION_STRATEGIES: readonly TruncationStrategy[] = ['longest_first', 'only_first', 'only_second', 'none'];
const DEFAULT_MAX_LENGTH = 512;
const DEFAULT_CHUNK_CHARS = 1024;

/**
 * Where a chunk of original text may end: before a space, tab, CR or LF.
 * Every normaliser step keeps these as whitespace and acts on characters one
 * by one (NFD never reorders across a starter), so the text's tokens are its
 * chunks' tokens end to end. Other whitespace is not safe: clean_text drops
 * U+000B and U+000C, joining the words beside them.
 */
function chunkEnd(text: string, from: number, end: number): number {
  for (let i = from; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) return i;
  }
  return end;
}

function positiveInteger(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new FusedRTError('E_INPUT', `${name} must be a positive integer, not ${JSON.stringify(value)}`);
  }
  return value;
}

class BertTokenizer implements FusedTokenizer {
  readonly vocabSize: number;
  readonly maskTokenId: number | undefined;
  readonly maskToken: string;
  readonly padTokenId: number | undefined;
  private readonly model: WordPieceModel;
  private readonly idToTokenMap = new Map<number, string>();
  private readonly specialIds = new Set<number>();
  private readonly originalMatcher: AddedTokenMatcher;
  private readonly originalTokens: AddedTokenSpec[];
  private readonly normalizedMatcher: AddedTokenMatcher;
  private readonly normalizedTokens: AddedTokenSpec[];

  constructor(private readonly spec: TokenizerSpec, private readonly defaultMaxLength: number,
    private readonly chunkChars: number) {
    this.model = new WordPieceModel(spec.model);
    this.originalTokens = spec.addedTokens.filter((t) => !t.normalized);
    this.originalMatcher = new AddedTokenMatcher(this.originalTokens);
    // A normalised added token is looked for, and decoded, in its normalised spelling (as in HF).
    this.normalizedTokens = spec.addedTokens.filter((t) => t.normalized)
      .map((t) => ({ ...t, content: this.normalize(AlignedText.fromOriginal(t.content)).toString() }));
    this.normalizedMatcher = new AddedTokenMatcher(this.normalizedTokens);
    for (const [token, id] of spec.model.vocab) this.idToTokenMap.set(id, token);
    for (const added of [...this.originalTokens, ...this.normalizedTokens]) {
      this.idToTokenMap.set(added.id, added.content);
      if (added.special) this.specialIds.add(added.id);
    }
    let largestId = 0;
    for (const id of this.idToTokenMap.keys()) largestId = Math.max(largestId, id);
    this.vocabSize = largestId + 1;
    const mask = spec.addedTokens.find((t) => t.special && /mask/i.test(t.content));
    this.maskToken = mask?.content ?? '[MASK]';
    this.maskTokenId = mask?.id ?? spec.model.vocab.get(this.maskToken);
    const pad = spec.addedTokens.find((t) => t.special && /^\[pad\]$|^<pad>$/i.test(t.content));
    this.padTokenId = pad?.id ?? spec.model.vocab.get('[PAD]');
  }

  encode(input: string | TextPair, options: EncodeOptions = {}): Encoding {
    const { addSpecialTokens, maxLength, strategy } = this.readOptions(options);
    let texts: string[];
    if (typeof input === 'string') texts = [input];
    else if (typeof input === 'object' && input !== null && typeof input.text === 'string' && typeof input.pair === 'string') texts = [input.text, input.pair];
    else throw new FusedRTError('E_INPUT', 'the text to tokenize must be a string or { text: string, pair: string }');
    const isPair = texts.length === 2;
    const specialTokens = addSpecialTokens ? specialTokenCount(this.spec.template, isPair) : 0;
    if (maxLength < specialTokens) {
      throw new FusedRTError('E_INPUT', `maxLength ${maxLength} leaves no room: the template alone adds ${specialTokens} special tokens`);
    }
    // HF stops tokenising early when truncating (not the first text under
    // only_second); see lengthStoppingAt. So does this tokenizer: a text
    // truncation may cut is tokenised only as far as TokenizedText.reaches.
    const whole = texts.map((_, i) => strategy === 'none' || (strategy === 'only_second' && i === 0));
    const tokenized = texts.map((text, i) => this.tokenizeText(text, whole[i] ? undefined : maxLength));
    const lengths = tokenized.map((t, i) => (whole[i] ? t.tokens.length : t.lengthStoppingAt(maxLength)));
    const kept = keptLengths(lengths[0], isPair ? lengths[1] : undefined, { maxLength, specialTokens, strategy });
    const truncated = tokenized.some((t, i) => kept[i] < t.tokens.length);
    return applyTemplate(this.spec.template, tokenized.map((t, i) => t.tokens.slice(0, kept[i])), addSpecialTokens, truncated);
  }

  encodeBatch(texts: Array<string | TextPair>, options?: EncodeOptions): Encoding[] {
    if (!Array.isArray(texts)) throw new FusedRTError('E_INPUT', 'encodeBatch expects an array of texts');
    return texts.map((text) => this.encode(text, options));
  }

  /** HF's decode: drop special tokens if asked, then the WordPiece decoder (join, glue "##" pieces, tidy spaces before punctuation). */
  decode(ids: ArrayLike<number>, skipSpecialTokens = false): string {
    if (ids === null || typeof ids !== 'object' || typeof ids.length !== 'number') {
      throw new FusedRTError('E_INPUT', 'decode expects an array of token ids');
    }
    const tokens: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      const token = this.idToTokenMap.get(ids[i]);
      if (token === undefined) throw new FusedRTError('E_INPUT', `cannot decode ${JSON.stringify(ids[i])}: not a token id of this vocabulary (0..${this.vocabSize - 1})`);
      if (!(skipSpecialTokens && this.specialIds.has(ids[i]))) tokens.push(token);
    }
    const decoder = this.spec.decoder;
    if (!decoder) return tokens.join(' ');
    return tokens.map((token, i) => {
      let piece = token;
      if (i > 0) piece = token.startsWith(decoder.prefix) ? token.slice(decoder.prefix.length) : ` ${token}`;
      return decoder.cleanup ? cleanUpSpaces(piece) : piece;
    }).join('');
  }

  idToToken(id: number): string | undefined {
    return this.idToTokenMap.get(id);
  }

  tokenToId(token: string): number | undefined {
    return this.spec.addedTokens.find((t) => t.content === token)?.id ?? this.spec.model.vocab.get(token);
  }

  private readOptions(options: EncodeOptions): { addSpecialTokens: boolean; maxLength: number; strategy: TruncationStrategy } {
    if (typeof options !== 'object' || options === null) throw new FusedRTError('E_INPUT', 'encode options must be an object');
    const addSpecialTokens = options.addSpecialTokens ?? true;
    if (typeof addSpecialTokens !== 'boolean') throw new FusedRTError('E_INPUT', 'addSpecialTokens must be true or false');
    const maxLength = options.maxLength === undefined ? this.defaultMaxLength : positiveInteger(options.maxLength, 'maxLength');
    const strategy = options.truncation ?? 'longest_first';
    if (!TRUNCATION_STRATEGIES.includes(strategy)) {
      throw new FusedRTError('E_INPUT', `truncation must be one of ${TRUNCATION_STRATEGIES.join(', ')}, not ${JSON.stringify(strategy)}`);
    }
    return { addSpecialTokens, maxLength, strategy };
  }

  private normalize(text: AlignedText): AlignedText {
    return this.spec.normalizer ? normalizeBert(text, this.spec.normalizer) : text;
  }

  /**
   * HF's order: added tokens written as is ([MASK]) are cut out of the
   * original text first; the rest is normalised, searched for normalised
   * added tokens, split into words and run through WordPiece.
   */
  private tokenizeText(text: string, limit: number | undefined): TokenizedText {
    const out = new TokenizedText();
    for (const split of this.originalMatcher.split(text)) {
      if (split.token !== null) {
        const added = this.originalTokens[split.token];
        out.push({ id: added.id, token: text.slice(split.start, split.end), start: split.start, end: split.end });
      } else {
        this.tokenizeSegment(text, split.start, split.end, limit, out);
      }
      if (limit !== undefined && out.reaches(limit)) break;
    }
    return out;
  }

  /**
   * Text between added tokens; with a limit, in chunks (chunkEnd) until the
   * tokens reach it. A normalised added token may span whitespace, so a
   * tokenizer with such tokens takes the segment whole.
   */
  private tokenizeSegment(text: string, start: number, end: number, limit: number | undefined, out: TokenizedText): void {
    const chunked = limit !== undefined && this.normalizedMatcher.isEmpty;
    for (let from = start; from < end;) {
      const to = chunked && end - from > this.chunkChars ? chunkEnd(text, from + this.chunkChars, end) : end;
      this.tokenizeNormalized(this.normalize(AlignedText.fromOriginal(text, from, to)), out);
      if (limit !== undefined && out.reaches(limit)) return;
      from = to;
    }
  }

  private tokenizeNormalized(text: AlignedText, out: TokenizedText): void {
    if (this.normalizedMatcher.isEmpty) {
      this.tokenizeWords(text, out);
      return;
    }
    const normalized = text.toString();
    // Matches are in UTF-16 units of the normalised string; map them to character indices.
    const charAt = new Int32Array(normalized.length + 1);
    let unit = 0;
    for (let char = 0; char < text.length; char++) {
      charAt[unit++] = char;
      if (text.codePoints[char] > 0xffff) charAt[unit++] = char;
    }
    charAt[unit] = text.length;
    for (const split of this.normalizedMatcher.split(normalized)) {
      const from = charAt[split.start];
      const to = charAt[split.end];
      if (split.token === null) {
        this.tokenizeWords(text.slice(from, to), out);
      } else if (to > from) {
        const [start, end] = text.originalRange(from, to);
        out.push({ id: this.normalizedTokens[split.token].id, token: normalized.slice(split.start, split.end), start, end });
      }
    }
  }

  private tokenizeWords(text: AlignedText, out: TokenizedText): void {
    forEachWord(text, (from, to) => this.model.tokenizeWord(text, from, to, out));
  }
}

/** The WordPiece decoder's cleanup of tokenisation spaces, replacement by replacement as in HF. */
function cleanUpSpaces(text: string): string {
  return text.replaceAll(' .', '.').replaceAll(' ?', '?').replaceAll(' !', '!').replaceAll(' ,', ',')
    .replaceAll(" ' ", "'").replaceAll(" n't", "n't").replaceAll(" 'm", "'m").replaceAll(' do not', " don't")
    .replaceAll(" 's", "'s").replaceAll(" 've", "'ve").replaceAll(" 're", "'re");
}

/**
 * Loads a BERT WordPiece tokenizer from tokenizer.json (text or parsed
 * object). Throws E_TOKENIZER when the file is malformed or not BERT's.
 */
export function createTokenizer(tokenizerJson: string | object, options: CreateTokenizerOptions = {}): FusedTokenizer {
  if (typeof tokenizerJson !== 'string' && (typeof tokenizerJson !== 'object' || tokenizerJson === null)) {
    throw new FusedRTError('E_TOKENIZER', 'createTokenizer expects tokenizer.json text or its parsed object');
  }
  const maxLength = options.maxLength === undefined ? DEFAULT_MAX_LENGTH : positiveInteger(options.maxLength, 'maxLength');
  const chunkChars = options.chunkChars === undefined ? DEFAULT_CHUNK_CHARS : positiveInteger(options.chunkChars, 'chunkChars');
  return new BertTokenizer(readTokenizerSpec(tokenizerJson), maxLength, chunkChars);
}
