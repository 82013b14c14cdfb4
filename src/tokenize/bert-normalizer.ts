/**
 * BertNormalizer with offset tracking, step for step as HF tokenizers does
 * it: clean text, space out CJK ideographs, strip accents (NFD, then drop
 * nonspacing marks), lowercase character by character.
 */
import { AlignedText } from './aligned-text';
import { isChineseChar, isControl, isWhitespace } from './char-classes';
import { isNonspacingMark } from './unicode-tables';

export interface BertNormalizerConfig {
  cleanText: boolean;
  handleChineseChars: boolean;
  /** null: follow `lowercase`, as in BERT. */
  stripAccents: boolean | null;
  lowercase: boolean;
}

const SPACE = 0x20;

export function normalizeBert(text: AlignedText, config: BertNormalizerConfig): AlignedText {
  if (text.codePoints.every((cp) => cp < 0xc0)) {
    // Below U+00C0 no character is CJK, decomposes or is a nonspacing mark,
    // and only A-Z change case: the steps below come down to one filter and
    // one map, and most text is all here.
    const kept = config.cleanText ? text.filter((cp) => cp !== 0 && !isControl(cp)) : text;
    return kept.expand((cp) => {
      if (config.cleanText && isWhitespace(cp)) return SPACE;
      return config.lowercase && cp >= 0x41 && cp <= 0x5a ? cp + 32 : cp;
    });
  }
  let out = text;
  if (config.cleanText) {
    out = out.filter((cp) => cp !== 0 && cp !== 0xfffd && !isControl(cp))
      .expand((cp) => (isWhitespace(cp) ? SPACE : cp));
  }
  if (config.handleChineseChars) {
    out = out.expand((cp) => (isChineseChar(cp) ? [SPACE, cp, SPACE] : cp));
  }
  if (config.stripAccents ?? config.lowercase) {
    out = decomposeCanonical(out).filter((cp) => !isNonspacingMark(cp));
  }
  if (config.lowercase) out = out.expand(lowercase);
  return out;
}

const lowercaseCache = new Map<number, number | number[]>();

/**
 * Rust's `char::to_lowercase`: context-free, so a final capital sigma gives
 * σ (JS `toLowerCase` on a whole string would give ς), and İ gives i + U+0307.
 */
function lowercase(cp: number): number | number[] {
  if (cp < 0x80) return cp >= 0x41 && cp <= 0x5a ? cp + 32 : cp;
  let lower = lowercaseCache.get(cp);
  if (lower === undefined) {
    const chars = Array.from(String.fromCodePoint(cp).toLowerCase(), (c) => c.codePointAt(0) as number);
    lower = chars.length === 1 ? chars[0] : chars;
    lowercaseCache.set(cp, lower);
  }
  return lower;
}

/**
 * NFD with HF's alignment rule: the first character of a decomposition
 * replaces the source character, the rest are inserted after it; canonical
 * reordering of combining marks then moves these (character, change) pairs
 * as a stable sort does. The JS engine gives the decompositions and the
 * final order; matching each output character to the first unused source
 * entry with the same code point reproduces the stable sort.
 */
function decomposeCanonical(text: AlignedText): AlignedText {
  const source = text.toString();
  const target = source.normalize('NFD');
  if (target === source) return text;
  const decomposed: number[] = [];
  const changes: number[] = [];
  for (const cp of text.codePoints) {
    let first = true;
    for (const part of String.fromCodePoint(cp).normalize('NFD')) {
      decomposed.push(part.codePointAt(0) as number);
      changes.push(first ? 0 : 1);
      first = false;
    }
  }
  const output = Array.from(target, (c) => c.codePointAt(0) as number);
  const used = new Uint8Array(decomposed.length);
  const outputChanges: number[] = [];
  let firstUnused = 0;
  for (const cp of output) {
    while (used[firstUnused]) firstUnused++;
    let j = firstUnused;
    while (j < decomposed.length && decomposed[j] !== cp) j++;
    // Canonical ordering only permutes marks, so every output character has a source entry.
    if (j === decomposed.length) throw new Error(`NFD produced U+${cp.toString(16)} that no character decomposes to`);
    used[j] = 1;
    outputChanges.push(changes[j]);
  }
  return text.transform(output, outputChanges);
}
