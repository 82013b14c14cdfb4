/**
 * Builds the tokenizer.json that transformers' BertTokenizerFast would make
 * from a vocab.txt (older BERT uploads ship only that), so the runtime loads
 * one format.
 */
import { FusedRTError } from '../errors';

export interface VocabTokenizerOptions {
  /** Lowercase (and strip accents from) the text, as uncased BERT models expect. Default: true. */
  doLowerCase?: boolean;
}

const UNK = '[UNK]';
const CLS = '[CLS]';
const SEP = '[SEP]';
/** BertTokenizer's special tokens; those present in the vocabulary become added tokens. */
const SPECIAL_TOKENS = ['[PAD]', UNK, CLS, SEP, '[MASK]'];

/** One token per line, the line number is its id; like transformers' load_vocab, a repeated token keeps its last line. */
function readVocab(vocabText: string): Record<string, number> {
  const lines = vocabText.split(/\r\n|\r|\n/);
  if (lines[lines.length - 1] === '') lines.pop();
  // No prototype, so a token spelled "__proto__" is an ordinary key.
  const vocab: Record<string, number> = Object.create(null);
  lines.forEach((token, id) => {
    vocab[token] = id;
  });
  return vocab;
}

export function tokenizerJsonFromVocab(vocabText: string, options: VocabTokenizerOptions = {}): object {
  if (typeof vocabText !== 'string') throw new FusedRTError('E_TOKENIZER', 'vocab.txt must be text');
  const doLowerCase = options.doLowerCase ?? true;
  if (typeof doLowerCase !== 'boolean') throw new FusedRTError('E_INPUT', 'doLowerCase must be true or false');
  const vocab = readVocab(vocabText);
  for (const required of [UNK, CLS, SEP]) {
    if (!(required in vocab)) throw new FusedRTError('E_TOKENIZER', `vocab.txt has no ${required} line, so it is not a BERT vocabulary`);
  }
  const addedTokens = SPECIAL_TOKENS.filter((token) => token in vocab)
    .map((token) => ({ id: vocab[token], content: token, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }))
    .sort((a, b) => a.id - b.id);
  const special = (token: string, typeId: number) => ({ SpecialToken: { id: token, type_id: typeId } });
  const sequence = (id: 'A' | 'B', typeId: number) => ({ Sequence: { id, type_id: typeId } });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: doLowerCase },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [special(CLS, 0), sequence('A', 0), special(SEP, 0)],
      pair: [special(CLS, 0), sequence('A', 0), special(SEP, 0), sequence('B', 1), special(SEP, 1)],
      special_tokens: {
        [CLS]: { id: CLS, ids: [vocab[CLS]], tokens: [CLS] },
        [SEP]: { id: SEP, ids: [vocab[SEP]], tokens: [SEP] },
      },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: UNK, continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
  };
}
