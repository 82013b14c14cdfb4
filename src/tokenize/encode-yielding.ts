/**
 * A batch of texts tokenised without holding Node's event loop: the
 * tokenizer runs on the JS thread, about 0.05 ms for a 100-word text, so a
 * 32-text message took 1.5-2 ms in one go and a 128-text one 6-9 ms on the
 * development VM (bench/RESULTS.md, "tokenizing in slices"). Slices of
 * 0.25 ms leave room for a young-generation collection within 1 ms.
 */
import { FusedRTError } from '../errors';
import type { EncodeOptions, Encoding, FusedTokenizer, TextPair } from './types';

/** How long a batch holds the JS thread before it lets the event loop turn, in milliseconds. */
export const ENCODE_SLICE_MS = 0.25;

/**
 * tokenizer.encodeBatch, text by text: once the batch has held the thread
 * for `sliceMs` since it last let go, the event loop gets a turn
 * (setImmediate: timers and I/O run) before the next text. The encodings are
 * encodeBatch's; an invalid text rejects with its E_INPUT.
 */
export async function encodeBatchYielding(tokenizer: FusedTokenizer, texts: Array<string | TextPair>,
  options?: EncodeOptions, sliceMs = ENCODE_SLICE_MS): Promise<Encoding[]> {
  if (!Array.isArray(texts)) throw new FusedRTError('E_INPUT', 'encodeBatch expects an array of texts');
  const encodings: Encoding[] = [];
  let sliceStart = performance.now();
  for (const text of texts) {
    if (performance.now() - sliceStart >= sliceMs) {
      await new Promise((resolve) => setImmediate(resolve));
      sliceStart = performance.now();
    }
    encodings.push(tokenizer.encode(text, options));
  }
  return encodings;
}
