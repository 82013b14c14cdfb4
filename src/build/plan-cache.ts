/**
 * Plans built from Hugging Face directories on demand and cached on disk,
 * keyed by the source files, the build settings and the builder version. The
 * engine config node and `fusedrt run` share this.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { FusedRTError } from '../errors';
import { buildPlan, builderVersion } from './builder';
import type { Precision } from './plan-types';

export interface BuildSettings {
  /** Storage precision of the plan's matrices. */
  precision: Precision;
  /** Longest sequence of the built plan. Default: the model's max_position_embeddings. */
  maxSeq?: number;
}

/** The files a build reads; their sizes and mtimes key the cache (and `npm start` rebuilds when one is newer). */
export function planSourceFiles(dir: string): string[] {
  return fs.readdirSync(dir)
    .filter((f) => f === 'config.json' || f.endsWith('.safetensors') || f.endsWith('.safetensors.index.json') ||
      f === 'tokenizer.json' || f === 'vocab.txt' || f === 'tokenizer_config.json' || f === 'special_tokens_map.json')
    .sort();
}

/**
 * What the builder emits, in the cache key beside its version: raise it when
 * a change gives a model another plan (2: the `mean` and `cls` outputs), so
 * that caches of the same version are rebuilt rather than missing the change.
 */
const PLAN_GRAPHS_REVISION = 2;

/**
 * The cached plan's file name: a hash of the source directory, each source
 * file's size and mtime, the build settings, the builder's version and
 * PLAN_GRAPHS_REVISION, so any change to one of them builds a fresh plan.
 */
function cachedPlanName(dir: string, build: BuildSettings): string {
  const hash = createHash('sha256');
  hash.update(JSON.stringify({
    dir: path.resolve(dir), builder: builderVersion(), graphs: PLAN_GRAPHS_REVISION, precision: build.precision, maxSeq: build.maxSeq ?? null,
  }));
  for (const name of planSourceFiles(dir)) {
    const stat = fs.statSync(path.join(dir, name));
    hash.update(`\0${name}\0${stat.size}\0${stat.mtimeMs}`);
  }
  const base = path.basename(path.resolve(dir)).replace(/[^\w.-]+/g, '_');
  return `${base}-${build.precision}-${hash.digest('hex').slice(0, 16)}.plan`;
}

/** Builds in progress in this process, by target path: two engines on one model share a build. */
const building = new Map<string, Promise<string>>();

/**
 * Returns the path of a plan for `source`: the file itself, or the cached
 * build of a Hugging Face directory (built now when missing).
 */
export async function planFor(source: string, build: BuildSettings, cacheDir: string,
  onProgress: (fraction: number) => void = () => undefined): Promise<string> {
  const stat = fs.statSync(source, { throwIfNoEntry: false });
  if (!stat) throw new FusedRTError('E_PLAN_IO', `model ${source} does not exist`);
  if (!stat.isDirectory()) return source;
  const target = path.join(cacheDir, cachedPlanName(source, build));
  if (fs.existsSync(target)) return target;
  let pending = building.get(target);
  if (!pending) {
    pending = buildInto(source, target, build, onProgress).finally(() => building.delete(target));
    building.set(target, pending);
  }
  return pending;
}

async function buildInto(source: string, target: string, build: BuildSettings, onProgress: (fraction: number) => void): Promise<string> {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  // A name of our own, renamed into place: another process building the
  // same model never sees a half-written plan.
  const scratch = `${target}.${process.pid}-${Date.now()}`;
  try {
    await buildPlan(source, scratch, { precision: build.precision, maxSeq: build.maxSeq, onProgress: (_m, f) => onProgress(f) });
    fs.renameSync(scratch, target);
  } finally {
    fs.rmSync(scratch, { force: true });
  }
  return target;
}
