/**
 * Truncation and the post-processor template ([CLS] $A [SEP] $B [SEP]),
 * following HF tokenizers' post_process (right side, no stride).
 */
import { FusedRTError } from '../errors';
import type { TemplatePiece, TemplateSpec } from './tokenizer-spec';
import type { Encoding, TruncationStrategy } from './types';
import type { RawToken } from './wordpiece';

export function specialTokenCount(template: TemplateSpec | null, isPair: boolean): number {
  if (!template) return 0;
  let count = 0;
  for (const piece of isPair ? template.pair : template.single) {
    if (piece.kind === 'special') count += template.specialTokens.get(piece.name)?.ids.length ?? 0;
  }
  return count;
}

export interface TruncationRequest {
  /** Tokens allowed in total, special tokens included. */
  maxLength: number;
  /** Special tokens the template adds (0 without them). */
  specialTokens: number;
  strategy: TruncationStrategy;
}

/** How many tokens of each text survive truncation; throws E_INPUT where HF raises, and for 'none' on overflow. */
export function keptLengths(first: number, second: number | undefined, request: TruncationRequest): [number, number] {
  const { maxLength, specialTokens, strategy } = request;
  const budget = maxLength - specialTokens;
  const total = first + (second ?? 0);
  if (total <= budget) return [first, second ?? 0];
  const texts = second === undefined ? 'the text has' : 'the text pair has';
  if (strategy === 'none') {
    throw new FusedRTError('E_INPUT', `${texts} ${total + specialTokens} tokens (${specialTokens} of them special) but the limit is ${maxLength}; `
      + "shorten it, or allow truncation (truncation: 'longest_first', 'only_first' or 'only_second')");
  }
  if (budget === 0) return [0, 0];
  if (strategy === 'longest_first') {
    if (second === undefined) return [budget, 0];
    // HF's closed form of "drop from the longer text one token at a time":
    // the shorter text stays whole if the longer can absorb the cut, else
    // both get half the budget and the longer one the odd token.
    const swap = first > second;
    let shorter = swap ? second : first;
    let longer = shorter > budget ? shorter : Math.max(shorter, budget - shorter);
    if (shorter + longer > budget) {
      shorter = Math.floor(budget / 2);
      longer = shorter + (budget % 2);
    }
    return swap ? [longer, shorter] : [shorter, longer];
  }
  const firstText = strategy === 'only_first';
  if (!firstText && second === undefined) {
    throw new FusedRTError('E_INPUT', `${texts} ${total + specialTokens} tokens but the limit is ${maxLength}, and truncation 'only_second' needs a text pair; use 'longest_first' or 'only_first'`);
  }
  const target = firstText ? first : second as number;
  const toRemove = total - budget;
  if (target <= toRemove) {
    throw new FusedRTError('E_INPUT', `${texts} ${total + specialTokens} tokens but the limit is ${maxLength}: ${toRemove} must go, `
      + `and the ${firstText ? 'first' : 'second'} text has only ${target} (truncation '${strategy}'); use 'longest_first' or a larger maxLength`);
  }
  return firstText ? [first - toRemove, second ?? 0] : [first, target - toRemove];
}

/** Lays out the (already truncated) texts with the template's special tokens and type ids. */
export function applyTemplate(template: TemplateSpec | null, texts: RawToken[][], addSpecialTokens: boolean, truncated: boolean): Encoding {
  const isPair = texts.length === 2;
  const pieces: TemplatePiece[] = template
    ? (isPair ? template.pair : template.single)
    : texts.map((_, i) => ({ kind: 'sequence', sequence: i as 0 | 1, typeId: i }));
  let length = 0;
  for (const piece of pieces) {
    if (piece.kind === 'sequence') length += texts[piece.sequence].length;
    else if (addSpecialTokens && template) length += template.specialTokens.get(piece.name)?.ids.length ?? 0;
  }
  const encoding: Encoding = {
    ids: new Int32Array(length),
    typeIds: new Int32Array(length),
    tokens: new Array<string>(length),
    offsets: new Array<[number, number]>(length),
    sequenceIds: new Int8Array(length),
    specialTokensMask: new Uint8Array(length),
    truncated,
  };
  let at = 0;
  for (const piece of pieces) {
    if (piece.kind === 'sequence') {
      for (const token of texts[piece.sequence]) {
        encoding.ids[at] = token.id;
        encoding.typeIds[at] = piece.typeId;
        encoding.tokens[at] = token.token;
        encoding.offsets[at] = [token.start, token.end];
        encoding.sequenceIds[at] = piece.sequence;
        at++;
      }
    } else if (addSpecialTokens && template) {
      const special = template.specialTokens.get(piece.name) as { ids: number[]; tokens: string[] };
      special.ids.forEach((id, k) => {
        encoding.ids[at] = id;
        encoding.typeIds[at] = piece.typeId;
        encoding.tokens[at] = special.tokens[k];
        encoding.offsets[at] = [0, 0];
        encoding.sequenceIds[at] = -1;
        encoding.specialTokensMask[at] = 1;
        at++;
      });
    }
  }
  return encoding;
}
