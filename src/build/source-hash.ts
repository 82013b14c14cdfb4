/**
 * The source model's fingerprint in a plan header: SHA-256 over the files a
 * plan is built from, so a plan can be traced to (and checked against) the
 * checkpoint it came from.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

const CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * Hashes `files` (names relative to `dir`) in the given order. Each file
 * contributes `<name>\0<byte length>\0<bytes>`, so moving bytes from one
 * file to the next changes the hash. Reads in chunks: checkpoints can be
 * gigabytes. `onBytes` reports progress as bytes hashed so far.
 */
export async function hashSourceFiles(dir: string, files: string[], onBytes?: (done: number) => void): Promise<string> {
  const hash = createHash('sha256');
  let done = 0;
  for (const name of files) {
    const file = path.join(dir, name);
    const size = (await fs.promises.stat(file)).size;
    hash.update(`${name}\0${size}\0`);
    for await (const chunk of fs.createReadStream(file, { highWaterMark: CHUNK_BYTES })) {
      hash.update(chunk as Buffer);
      done += (chunk as Buffer).length;
      onBytes?.(done);
    }
  }
  return hash.digest('hex');
}
