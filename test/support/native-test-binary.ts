/**
 * Runs a native test executable that the top-level CMake build puts next to
 * the addon (build/Release), asserting that it exists, ran and exited 0;
 * returns its output (stdout then stderr) for the caller's own checks.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import { existsSync } from 'fs';
import * as path from 'path';

export function runNativeTestBinary(name: string, timeoutMs: number): string {
  const binary = path.join(path.resolve(__dirname, '..', '..', '..'), 'build', 'Release',
    process.platform === 'win32' ? `${name}.exe` : name);
  assert.ok(existsSync(binary), `${binary} is missing: build it with npm run build:native`);
  const run = spawnSync(binary, [], { encoding: 'utf8', timeout: timeoutMs });
  const output = `${run.stdout ?? ''}${run.stderr ?? ''}`;
  assert.equal(run.error, undefined, `could not run ${binary}: ${String(run.error)}\n${output}`);
  assert.equal(run.status, 0, `${name} failed (exit ${run.status}, signal ${run.signal}):\n${output}`);
  return output;
}
