/**
 * BertPreTokenizer and the WordPiece model over normalised, aligned text.
 */
import type { AlignedText } from './aligned-text';
import { isBertPunctuation, isWhitespace } from './char-classes';
import type { WordPieceSpec } from './tokenizer-spec';

/** A token of one text: its id, its string and its [start, end) in the original text (UTF-16). */
export interface RawToken {
  id: number;
  token: string;
  start: number;
  end: number;
}

/** The tokens of one text, and where each word (or added token) ends. */
export class TokenizedText {
  readonly tokens: RawToken[] = [];
  /** Token count after each word / added token. */
  private readonly wordEnds: number[] = [];

  push(...tokens: RawToken[]): void {
    this.tokens.push(...tokens);
    this.wordEnds.push(this.tokens.length);
  }

  /**
   * The length HF tokenizers (0.23+) works with when truncation is on: it
   * stops tokenising at the first word that brings the count to `limit`.
   * Only the choice of which text is "longer" in longest_first can see this.
   */
  lengthStoppingAt(limit: number): number {
    for (const end of this.wordEnds) if (end >= limit) return end;
    return this.tokens.length;
  }

  /**
   * Whether a token past lengthStoppingAt(limit) is here: then what
   * truncation at `limit` keeps, counts and reports (truncated or not) is
   * known, and the rest of the text can be left untokenised.
   */
  reaches(limit: number): boolean {
    return this.tokens.length > this.lengthStoppingAt(limit);
  }
}

/**
 * Calls word(from, to) for each word, [from, to) in character indices, in
 * order: whitespace separates words and is dropped, each punctuation
 * character is a word of its own.
 */
export function forEachWord(text: AlignedText, word: (from: number, to: number) => void): void {
  let wordStart = -1;
  for (let i = 0; i < text.length; i++) {
    const cp = text.codePoints[i];
    const whitespace = isWhitespace(cp);
    if (whitespace || isBertPunctuation(cp)) {
      if (wordStart >= 0) word(wordStart, i);
      wordStart = -1;
      if (!whitespace) word(i, i + 1);
    } else if (wordStart < 0) {
      wordStart = i;
    }
  }
  if (wordStart >= 0) word(wordStart, text.length);
}

export class WordPieceModel {
  /** Longest vocabulary entry in code points; longer candidates cannot match, so they are not tried. */
  private readonly longestEntry: number;

  constructor(private readonly spec: WordPieceSpec) {
    let longest = 1;
    for (const token of spec.vocab.keys()) longest = Math.max(longest, Array.from(token).length);
    this.longestEntry = longest;
  }

  /** Greedy longest-match-first; a word with an unknown piece, or too long, becomes one unknown token. */
  tokenizeWord(text: AlignedText, from: number, to: number, out: TokenizedText): void {
    const { vocab, continuingSubwordPrefix, unkId, unkToken, maxInputCharsPerWord } = this.spec;
    if (to - from <= maxInputCharsPerWord) {
      const pieces: RawToken[] = [];
      let start = from;
      while (start < to) {
        let end = Math.min(to, start + this.longestEntry);
        let found: RawToken | undefined;
        while (end > start && !found) {
          const piece = (start > from ? continuingSubwordPrefix : '') + text.toString(start, end);
          const id = vocab.get(piece);
          if (id !== undefined) found = { id, token: piece, start: text.starts[start], end: text.ends[end - 1] };
          else end--;
        }
        if (!found) break;
        pieces.push(found);
        start = end;
      }
      if (start === to) {
        out.push(...pieces);
        return;
      }
    }
    const [start, end] = text.originalRange(from, to);
    out.push({ id: unkId, token: unkToken, start, end });
  }
}
