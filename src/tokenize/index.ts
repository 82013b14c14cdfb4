export { createTokenizer, type CreateTokenizerOptions } from './tokenizer';
export { encodeBatchYielding, ENCODE_SLICE_MS } from './encode-yielding';
export { tokenizerJsonFromVocab, type VocabTokenizerOptions } from './vocab';
export type { EncodeOptions, Encoding, FusedTokenizer, TextPair, TruncationStrategy } from './types';
