/** Editor fields shared by several nodes. */
import type { Truncation } from './engine-host';
import type { EngineClient } from './engine-client';

/** A node's "too long" choice: its own, or the engine's when left at 'engine'. */
export function truncationFor(choice: string | undefined, client: EngineClient): Truncation {
  if (choice === 'truncate' || choice === 'error') return choice;
  return client.configNode?.host.truncation ?? 'truncate';
}

/** A message property name from the editor, `fallback` when blank. */
export function propertyName(value: string | undefined, fallback: string): string {
  return value && value.trim() ? value.trim() : fallback;
}

/** An integer field ≥ 0, `fallback` when blank or invalid (the editor validates it too). */
export function countField(value: string | number | undefined, fallback: number): number {
  const n = Number(value);
  return value !== undefined && String(value).trim() !== '' && Number.isInteger(n) && n >= 0 ? n : fallback;
}
