/**
 * Text under normalisation that remembers where each character came from.
 *
 * Like HF tokenizers' NormalizedString: every code point of the normalised
 * text carries the [start, end) range of the original text it stems from, so
 * token offsets can be reported in the original. Ranges are UTF-16 code
 * units (JS string indices). The alignment rules follow HF exactly:
 * a replacing character keeps the range of the character it replaces, an
 * inserted character copies the range of the character before it, and a
 * removed character leaves no trace.
 */
export class AlignedText {
  private constructor(
    /** Code points of the normalised text. */
    readonly codePoints: number[],
    /** Original start (UTF-16) of each code point. */
    readonly starts: number[],
    /** Original end (UTF-16) of each code point. */
    readonly ends: number[],
  ) {}

  /**
   * The characters of `text` between `from` and `to` (UTF-16). Unpaired
   * surrogates cannot reach HF's Rust strings; they read as U+FFFD here,
   * which clean_text then drops.
   */
  static fromOriginal(text: string, from = 0, to = text.length): AlignedText {
    const codePoints: number[] = [];
    const starts: number[] = [];
    const ends: number[] = [];
    let i = from;
    while (i < to) {
      let cp = text.charCodeAt(i);
      let width = 1;
      if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < to) {
        const low = text.charCodeAt(i + 1);
        if (low >= 0xdc00 && low <= 0xdfff) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          width = 2;
        }
      }
      if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd;
      codePoints.push(cp);
      starts.push(i);
      ends.push(i + width);
      i += width;
    }
    return new AlignedText(codePoints, starts, ends);
  }

  get length(): number {
    return this.codePoints.length;
  }

  toString(from = 0, to = this.codePoints.length): string {
    let out = '';
    for (let i = from; i < to; i++) out += String.fromCodePoint(this.codePoints[i]);
    return out;
  }

  /** Original [start, end) of the normalised characters [from, to): start of the first, end of the last. */
  originalRange(from: number, to: number): [number, number] {
    return [this.starts[from], this.ends[to - 1]];
  }

  slice(from: number, to: number): AlignedText {
    return new AlignedText(this.codePoints.slice(from, to), this.starts.slice(from, to), this.ends.slice(from, to));
  }

  /** Drops characters; the others keep their ranges. Nothing dropped: this text itself. */
  filter(keep: (cp: number) => boolean): AlignedText {
    let first = 0;
    while (first < this.codePoints.length && keep(this.codePoints[first])) first++;
    if (first === this.codePoints.length) return this;
    const out = new AlignedText(this.codePoints.slice(0, first), this.starts.slice(0, first), this.ends.slice(0, first));
    for (let i = first + 1; i < this.codePoints.length; i++) {
      if (keep(this.codePoints[i])) out.push(this.codePoints[i], i, this);
    }
    return out;
  }

  /**
   * Replaces every character by one or more characters, all with the range
   * of the replaced one. While each stays one character the ranges are this
   * text's own (shared: texts are never changed once made), and without a
   * change the result is this text: most text passes most normaliser steps
   * unchanged, and copying it each time was most of the tokenizer's garbage.
   */
  expand(replace: (cp: number) => readonly number[] | number): AlignedText {
    let mapped: number[] | null = null;  // the code points, once one has changed
    for (let i = 0; i < this.codePoints.length; i++) {
      const replacement = replace(this.codePoints[i]);
      if (typeof replacement !== 'number') return this.expandFrom(i, mapped, replace);
      if (mapped === null && replacement !== this.codePoints[i]) mapped = this.codePoints.slice(0, i);
      if (mapped !== null) mapped.push(replacement);
    }
    return mapped === null ? this : new AlignedText(mapped, this.starts, this.ends);
  }

  /** expand() from the first character that becomes several: `mapped` holds the code points before it, or null if unchanged. */
  private expandFrom(first: number, mapped: number[] | null, replace: (cp: number) => readonly number[] | number): AlignedText {
    const out = new AlignedText(mapped ?? this.codePoints.slice(0, first), this.starts.slice(0, first), this.ends.slice(0, first));
    for (let i = first; i < this.codePoints.length; i++) {
      const replacement = replace(this.codePoints[i]);
      if (typeof replacement === 'number') out.push(replacement, i, this);
      else for (const cp of replacement) out.push(cp, i, this);
    }
    return out;
  }

  /**
   * Applies HF's generic transformation: `changes[k]` is 0 when output
   * character k replaces the next source character, 1 when it is inserted
   * (it copies the range of the source character before it).
   */
  transform(output: readonly number[], changes: readonly number[]): AlignedText {
    const out = new AlignedText([], [], []);
    let next = 0;
    for (let k = 0; k < output.length; k++) {
      if (changes[k] > 0) {
        if (next === 0) out.pushRange(output[k], 0, 0);
        else out.push(output[k], next - 1, this);
      } else {
        out.push(output[k], next, this);
        next += 1;
      }
    }
    return out;
  }

  private push(cp: number, sourceIndex: number, source: AlignedText): void {
    this.pushRange(cp, source.starts[sourceIndex], source.ends[sourceIndex]);
  }

  private pushRange(cp: number, start: number, end: number): void {
    this.codePoints.push(cp);
    this.starts.push(start);
    this.ends.push(end);
  }
}
