/**
 * Finding added tokens ([MASK], [CLS] typed in the text, user tokens) the
 * way HF's AddedVocabulary does: leftmost-longest, non-overlapping matches,
 * then the single_word / lstrip / rstrip rules of each token.
 */
import { isWhitespace, isWordChar } from './char-classes';

export interface MatchableToken {
  content: string;
  lstrip: boolean;
  rstrip: boolean;
  singleWord: boolean;
}

/** A piece of the searched string: an added token (its index) or plain text. */
export interface Split {
  token: number | null;
  start: number;
  end: number;
}

function codePointBefore(text: string, index: number): number {
  const low = text.charCodeAt(index - 1);
  if (low >= 0xdc00 && low <= 0xdfff && index >= 2) {
    const high = text.charCodeAt(index - 2);
    if (high >= 0xd800 && high <= 0xdbff) return text.codePointAt(index - 2) as number;
  }
  return low;
}

export class AddedTokenMatcher {
  constructor(private readonly tokens: readonly MatchableToken[]) {}

  get isEmpty(): boolean {
    return this.tokens.length === 0;
  }

  /** Splits `text` (UTF-16 indices) into added tokens and the text between them. */
  split(text: string): Split[] {
    const splits: Split[] = [];
    const nextAt = this.tokens.map((t) => (t.content === '' ? -1 : text.indexOf(t.content)));
    let searchFrom = 0;
    let textStart = 0;
    for (;;) {
      let best = -1;
      for (let k = 0; k < this.tokens.length; k++) {
        if (nextAt[k] >= 0 && nextAt[k] < searchFrom) nextAt[k] = text.indexOf(this.tokens[k].content, searchFrom);
        if (nextAt[k] < 0) continue;
        if (best < 0 || nextAt[k] < nextAt[best]
          || (nextAt[k] === nextAt[best] && this.tokens[k].content.length > this.tokens[best].content.length)) best = k;
      }
      if (best < 0) break;
      const token = this.tokens[best];
      let start = nextAt[best];
      let end = start + token.content.length;
      // The matcher moves past a match even when a rule below discards it.
      searchFrom = end;
      if (token.singleWord) {
        const wordBefore = start > 0 && isWordChar(codePointBefore(text, start));
        const wordAfter = end < text.length && isWordChar(text.codePointAt(end) as number);
        if (wordBefore || wordAfter) continue;
      }
      if (token.lstrip) {
        while (start > textStart && isWhitespace(text.charCodeAt(start - 1))) start--;
      }
      if (token.rstrip) {
        while (end < text.length && isWhitespace(text.charCodeAt(end))) end++;
      }
      if (textStart < start) splits.push({ token: null, start: textStart, end: start });
      splits.push({ token: best, start, end });
      textStart = end;
    }
    if (textStart < text.length || splits.length === 0) splits.push({ token: null, start: textStart, end: text.length });
    return splits;
  }
}
