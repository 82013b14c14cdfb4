/** Validating what a message gives as text: a string, a {text, pair}, or an array of those (one batch). */
import type { TextPair } from '../../src/tokenize/types';
import { nodeError } from './messages';

export type TextInput = string | TextPair;

export interface TextBatch {
  texts: TextInput[];
  /** True when the message held an array: results go back as an array too. */
  batch: boolean;
}

function describeType(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (Buffer.isBuffer(value)) return 'a Buffer';
  return typeof value === 'object' ? 'an object without a text property' : `a ${typeof value}`;
}

function oneText(value: unknown, property: string, index: number | undefined): TextInput {
  const where = index === undefined ? '' : ` at index ${index}`;
  if (typeof value === 'string') {
    if (!value.trim()) throw nodeError('E_INPUT', 'emptyText', { property, where });
    return value;
  }
  if (typeof value === 'object' && value !== null && !Array.isArray(value) && typeof (value as TextPair).text === 'string') {
    const { text, pair } = value as { text: string; pair?: unknown };
    if (!text.trim()) throw nodeError('E_INPUT', 'emptyText', { property, where });
    if (pair === undefined) return text;
    if (typeof pair !== 'string') throw nodeError('E_INPUT', 'payloadType', { property: `${property}${index === undefined ? '' : `[${index}]`}.pair`, type: describeType(pair) });
    if (!pair.trim()) throw nodeError('E_INPUT', 'emptyText', { property, where: `${where} (pair)` });
    return { text, pair };
  }
  throw nodeError('E_INPUT', 'payloadType', { property: index === undefined ? property : `${property}[${index}]`, type: describeType(value) });
}

/** Reads the texts of msg[property]; throws E_INPUT naming what is wrong. */
export function readTexts(value: unknown, property: string): TextBatch {
  if (Array.isArray(value)) {
    if (value.length === 0) throw nodeError('E_INPUT', 'emptyBatch', { property });
    return { texts: value.map((v, i) => oneText(v, property, i)), batch: true };
  }
  return { texts: [oneText(value, property, undefined)], batch: false };
}
