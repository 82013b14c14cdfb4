/** The tokenizer contract used by the engine, the nodes and the CLI. */

export type TruncationStrategy = 'longest_first' | 'only_first' | 'only_second' | 'none';

export interface EncodeOptions {
  /** Add [CLS]/[SEP] (the model's template). Default: true. */
  addSpecialTokens?: boolean;
  /** Maximum tokens including special tokens. Default: the plan's max sequence length (or 512). */
  maxLength?: number;
  /**
   * What to do with texts longer than maxLength: a truncation strategy, or
   * 'none' to raise E_INPUT naming the text's length. Default: 'longest_first'.
   */
  truncation?: TruncationStrategy;
}

export interface Encoding {
  /** Token ids, [CLS] ... [SEP] included when special tokens are added. */
  ids: Int32Array;
  /** Segment ids: 0 for the first text (and its specials), 1 for the pair. */
  typeIds: Int32Array;
  /** Token strings, e.g. ['[CLS]', 'the', '##re', ...]. */
  tokens: string[];
  /** Character offsets [start, end) into the source text (UTF-16 code units, like JS strings); [0, 0] for special tokens. */
  offsets: Array<[number, number]>;
  /** 0 for the first text, 1 for the pair, -1 for special tokens. */
  sequenceIds: Int8Array;
  /** 1 for special tokens ([CLS], [SEP], [PAD]), 0 otherwise. [MASK] counts as a normal token here. */
  specialTokensMask: Uint8Array;
  /** True when truncation removed tokens. */
  truncated: boolean;
}

export interface TextPair {
  text: string;
  pair: string;
}

export interface FusedTokenizer {
  encode(text: string | TextPair, options?: EncodeOptions): Encoding;
  encodeBatch(texts: Array<string | TextPair>, options?: EncodeOptions): Encoding[];
  decode(ids: ArrayLike<number>, skipSpecialTokens?: boolean): string;
  idToToken(id: number): string | undefined;
  tokenToId(token: string): number | undefined;
  readonly vocabSize: number;
  /** Id of the mask token, or undefined when the vocabulary has none. */
  readonly maskTokenId: number | undefined;
  readonly maskToken: string;
  readonly padTokenId: number | undefined;
}
