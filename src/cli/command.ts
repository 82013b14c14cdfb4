/** What one `fusedrt <command>` is, and the argument parsing every command shares. */
import { parseArgs, type ParseArgsConfig } from 'util';
import { FusedRTError } from '../errors';

export interface CliCommand {
  name: string;
  /** One line for `fusedrt --help`. */
  summary: string;
  /** The full `fusedrt <name> --help` text. */
  help: string;
  /** Runs with the arguments after the command name; throws FusedRTError on failure. */
  run(args: string[]): Promise<void>;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * util.parseArgs with strict checking; its errors (unknown option, missing
 * value) become E_INPUT naming the command. `--help`/`-h` is added to every
 * command.
 */
export function parseCommandArgs(command: string, args: string[], options: Options):
  { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  try {
    return parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new FusedRTError('E_INPUT', `${command}: ${(e as Error).message.split('\n')[0]} (see fusedrt ${command} --help)`);
  }
}

/** An integer option ≥ 0 given as text; `fallback` when the option is absent. */
export function nonNegativeIntegerOption(command: string, value: string | boolean | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new FusedRTError('E_INPUT', `${command}: --${name} must be a non-negative integer, got "${value}"`);
  return n;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** Two-column "label  value" lines with the values aligned. */
export function formatFields(fields: Array<[string, string]>, indent = '  '): string {
  const width = Math.max(...fields.map(([label]) => label.length));
  return fields.map(([label, value]) => `${indent}${label.padEnd(width)}  ${value}`).join('\n');
}
