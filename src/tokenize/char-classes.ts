/**
 * The character classes of BERT's normaliser and pre-tokeniser, defined the
 * way Hugging Face tokenizers (Rust) defines them, on code points.
 */
import { isOtherCategory, isUnicodePunctuation } from './unicode-tables';

/**
 * Unicode White_Space (Rust `char::is_whitespace` and regex `\s`). JS `\s`
 * differs: it includes U+FEFF and misses U+0085.
 */
export function isWhitespace(cp: number): boolean {
  if (cp <= 0x20) return cp === 0x20 || (cp >= 0x09 && cp <= 0x0d);
  return cp === 0x85 || cp === 0xa0 || cp === 0x1680 || (cp >= 0x2000 && cp <= 0x200a)
    || cp === 0x2028 || cp === 0x2029 || cp === 0x202f || cp === 0x205f || cp === 0x3000;
}

/** Characters clean_text drops: controls and format/private-use characters, except tab, CR and LF (those are whitespace). */
export function isControl(cp: number): boolean {
  if (cp === 0x09 || cp === 0x0a || cp === 0x0d) return false;
  return isOtherCategory(cp);
}

/** All ASCII symbols and punctuation (`$`, `+`, `^` included) plus Unicode P* categories; other symbols (€, ©, emoji) are not split off. */
export function isBertPunctuation(cp: number): boolean {
  if ((cp >= 0x21 && cp <= 0x2f) || (cp >= 0x3a && cp <= 0x40) || (cp >= 0x5b && cp <= 0x60) || (cp >= 0x7b && cp <= 0x7e)) return true;
  return cp > 0x7f && isUnicodePunctuation(cp);
}

/**
 * The CJK ideograph blocks that BERT surrounds with spaces. The ranges are
 * those of HF tokenizers, which differ from Google's BERT in one place
 * (it starts the Extension E range at U+2B920, not U+2B820).
 */
export function isChineseChar(cp: number): boolean {
  return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf)
    || (cp >= 0x20000 && cp <= 0x2a6df) || (cp >= 0x2a700 && cp <= 0x2b73f)
    || (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b920 && cp <= 0x2ceaf)
    || (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f);
}

/** Rust regex's Unicode `\w`, used for the single_word rule of added tokens. */
const WORD_CHAR = /^[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]$/u;

export function isWordChar(cp: number): boolean {
  return WORD_CHAR.test(String.fromCodePoint(cp));
}
