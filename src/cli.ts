#!/usr/bin/env node
/**
 * The `fusedrt` command line. Each subcommand is a CliCommand in src/cli/;
 * adding one means adding it to COMMANDS. Errors end the process with exit
 * code 1 and one line, `fusedrt: <code>: <message>`.
 */
import { builderVersion } from './build/builder';
import { benchCommand } from './cli/bench';
import { buildCommand } from './cli/build';
import type { CliCommand } from './cli/command';
import { inspectCommand } from './cli/inspect';
import { runCommand } from './cli/run';
import { errorCode, FusedRTError } from './errors';

const COMMANDS: CliCommand[] = [buildCommand, inspectCommand, runCommand, benchCommand];

function toolHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'Usage: fusedrt <command> [options]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Run fusedrt <command> --help for the options of one command.',
    'Options: -h, --help (this help), -v, --version',
  ].join('\n');
}

async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (name === '-h' || name === '--help' || name === 'help') {
    const command = COMMANDS.find((c) => c.name === rest[0]);
    process.stdout.write(`${command ? command.help : toolHelp()}\n`);
    return;
  }
  if (name === '-v' || name === '--version') {
    process.stdout.write(`${builderVersion()}\n`);
    return;
  }
  if (name === undefined) throw new FusedRTError('E_INPUT', 'no command given (run fusedrt --help)');
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) throw new FusedRTError('E_INPUT', `unknown command "${name}" (commands: ${COMMANDS.map((c) => c.name).join(', ')})`);
  await command.run(rest);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  // Errors without a FusedRT code (Node's ENOENT and the like) escaped FusedRT's own checks; E_BUILD is the catch-all.
  const code = errorCode(err)?.startsWith('E_') ? errorCode(err) : 'E_BUILD';
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`fusedrt: ${code}: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  process.exitCode = 1;
});
