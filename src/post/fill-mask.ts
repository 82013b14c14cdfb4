/** Fill-mask post-processing: top-k tokens per [MASK] row and the filled texts. */
import { FusedRTError } from '../errors';
import { isTopK } from '../engine/run-result';
import type { OutputTensor, TopKTensor } from '../engine/types';
import type { Encoding, FusedTokenizer, TextPair } from '../tokenize/types';
import { logSumExp, topKIndices } from './softmax';

export interface FillMaskOptions {
  /** Predictions kept per mask. Default: 5. */
  topK?: number;
  /**
   * The texts the encodings came from. When given, filled sentences keep the
   * text as written (case, spacing) and only the masks are replaced; without
   * them the sentence is decoded from token ids. Default: undefined.
   */
  texts?: Array<string | TextPair>;
}

export interface MaskPrediction {
  token: string;
  tokenId: number;
  /** Softmax probability over the whole vocabulary. */
  score: number;
  /** The sentence with this mask set to `token` and every other mask to its top-1 token. */
  sequence: string;
}

export interface MaskResult {
  /** Index of the [MASK] token in the encoding. */
  position: number;
  predictions: MaskPrediction[];
}

export interface FillMaskResult {
  /** The sentence with every mask replaced by its top-1 token. */
  sequence: string;
  masks: MaskResult[];
}

/** Token positions of every [MASK], in order: the rows packEncodings selects. */
export function maskPositions(encoding: Encoding, maskTokenId: number): number[] {
  const positions: number[] = [];
  encoding.ids.forEach((id, i) => { if (id === maskTokenId) positions.push(i); });
  return positions;
}

/**
 * Turns the logits of the selected [MASK] rows (`[R, vocab]`, rows in the
 * order of the masks across the encodings) into predictions per mask. The
 * logits may also be the engine's top-k of them (a run with `topK` at least
 * options.topK): the same predictions, ranked and scored on the device.
 */
export function fillMask(logits: OutputTensor | TopKTensor, encodings: Encoding[], tokenizer: FusedTokenizer,
  options: FillMaskOptions = {}): FillMaskResult[] {
  const topK = options.topK ?? 5;
  if (!Number.isInteger(topK) || topK < 1) throw new FusedRTError('E_INPUT', `topK must be a positive integer, got ${topK}`);
  const maskId = tokenizer.maskTokenId;
  if (maskId === undefined) throw new FusedRTError('E_TOKENIZER', 'the tokenizer has no mask token, so fill-mask cannot find the masks');
  if (options.texts && options.texts.length !== encodings.length) {
    throw new FusedRTError('E_INPUT', `fillMask got ${options.texts.length} texts for ${encodings.length} encodings`);
  }
  const positionsBySequence = encodings.map((e) => maskPositions(e, maskId));
  const totalMasks = positionsBySequence.reduce((n, p) => n + p.length, 0);
  if (logits.rows !== totalMasks) {
    throw new FusedRTError('E_SHAPE', `fill-mask logits have ${logits.rows} rows but the encodings hold ${totalMasks} [MASK] tokens`);
  }
  if (isTopK(logits) && logits.k < topK) {
    throw new FusedRTError('E_INPUT', `fill-mask wants the top ${topK} tokens, but the run computed only the top ${logits.k}`);
  }
  let row = 0;
  return encodings.map((encoding, s) => {
    const ranked = positionsBySequence[s].map(() => rankRow(logits, row++, topK));
    const filler = new MaskFiller(encoding, positionsBySequence[s], tokenizer, options.texts?.[s]);
    const best = ranked.map((r) => r[0].tokenId);
    return {
      sequence: filler.fill(best),
      masks: positionsBySequence[s].map((position, m) => ({
        position,
        predictions: ranked[m].map(({ tokenId, score }) => {
          const chosen = best.slice();
          chosen[m] = tokenId;
          return { token: tokenizer.idToToken(tokenId) ?? `[${tokenId}]`, tokenId, score, sequence: filler.fill(chosen) };
        }),
      })),
    };
  });
}

function rankRow(logits: OutputTensor | TopKTensor, row: number, topK: number): Array<{ tokenId: number; score: number }> {
  if (isTopK(logits)) {
    const ranked: Array<{ tokenId: number; score: number }> = [];
    // Id -1 marks a slot the device could not fill (NaN logits).
    for (let i = row * logits.k; i < row * logits.k + topK && logits.topIds[i] >= 0; i++) {
      ranked.push({ tokenId: logits.topIds[i], score: logits.topScores[i] });
    }
    return ranked;
  }
  const start = row * logits.cols;
  const lse = logSumExp(logits.data, start, logits.cols);
  return topKIndices(logits.data, start, logits.cols, topK)
    .map((tokenId) => ({ tokenId, score: Math.exp(logits.data[start + tokenId] - lse) }));
}

/** Writes chosen tokens into the masks of one sequence. */
class MaskFiller {
  private readonly spans: Array<[number, number]> | undefined;

  constructor(private readonly encoding: Encoding, private readonly positions: number[],
    private readonly tokenizer: FusedTokenizer, private readonly text: string | TextPair | undefined) {
    // Splicing needs a plain text and a real character span for every mask;
    // pairs and tokens without offsets fall back to decoding.
    if (typeof text === 'string') {
      const spans = positions.map((p) => encoding.offsets[p]);
      if (spans.every(([start, end]) => end > start && end <= text.length)) this.spans = spans;
    }
  }

  fill(tokenIds: number[]): string {
    if (this.spans && typeof this.text === 'string') {
      let out = this.text;
      for (let m = this.positions.length - 1; m >= 0; m--) {
        const [start, end] = this.spans[m];
        out = out.slice(0, start) + this.wordPiece(tokenIds[m]) + out.slice(end);
      }
      return out;
    }
    const ids = Array.from(this.encoding.ids);
    this.positions.forEach((p, m) => { ids[p] = tokenIds[m]; });
    return this.tokenizer.decode(ids, true);
  }

  private wordPiece(tokenId: number): string {
    const token = this.tokenizer.idToToken(tokenId) ?? '';
    return token.startsWith('##') ? token.slice(2) : token;
  }
}
