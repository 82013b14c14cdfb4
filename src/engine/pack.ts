/** Turning tokenizer encodings into one padding-free packed batch. */
import type { Encoding } from '../tokenize/types';
import type { PackedBatch } from './types';

export interface PackedEncodings {
  batch: PackedBatch;
  /** Per sequence: indices into batch.selectedRows (so into the rows of `selected` outputs). */
  selectedBySequence: number[][];
}

/**
 * Concatenates the encodings' tokens; `cuSeqlens` marks where each one starts.
 * When `selectTokenId` is given, every token with that id (e.g. [MASK])
 * becomes a selected row, so heads like the MLM decoder run on those rows only.
 */
export function packEncodings(encodings: Encoding[], options: { selectTokenId?: number } = {}): PackedEncodings {
  const total = encodings.reduce((n, e) => n + e.ids.length, 0);
  const inputIds = new Int32Array(total);
  const tokenTypeIds = new Int32Array(total);
  const cuSeqlens = new Int32Array(encodings.length + 1);
  const selected: number[] = [];
  const selectedBySequence: number[][] = [];
  let at = 0;
  encodings.forEach((encoding, b) => {
    inputIds.set(encoding.ids, at);
    tokenTypeIds.set(encoding.typeIds, at);
    const mine: number[] = [];
    if (options.selectTokenId !== undefined) {
      encoding.ids.forEach((id, i) => {
        if (id === options.selectTokenId) {
          mine.push(selected.length);
          selected.push(at + i);
        }
      });
    }
    selectedBySequence.push(mine);
    at += encoding.ids.length;
    cuSeqlens[b + 1] = at;
  });
  const batch: PackedBatch = { inputIds, tokenTypeIds, cuSeqlens };
  if (options.selectTokenId !== undefined) batch.selectedRows = Int32Array.from(selected);
  return { batch, selectedBySequence };
}
