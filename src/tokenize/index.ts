export { createTokenizer, type CreateTokenizerOptions } from './tokenizer';
export { tokenizerJsonFromVocab, type VocabTokenizerOptions } from './vocab';
export type { EncodeOptions, Encoding, FusedTokenizer, TextPair, TruncationStrategy } from './types';
