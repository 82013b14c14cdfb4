/**
 * Where an engine's model comes from: a plan file, or a Hugging Face
 * directory that is built to a plan once and cached.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { buildPlan } from '../../src/build/builder';
import type { Precision } from '../../src/build/plan-types';
import { nodeError } from './messages';

/** The package root (dist/nodes/shared/ → three levels up), where the bundled demo model lives. */
export const PACKAGE_ROOT = path.resolve(__dirname, '..', '..', '..');

export interface BuildSettings {
  precision: Precision;
  /** Longest sequence of the built plan; undefined keeps the model's maximum. */
  maxSeq?: number;
}

/**
 * Resolves the model field of the config node. A relative path is looked up
 * in the Node-RED user directory first and then in this package, so the
 * example flows' `models/demo` finds the bundled demo model wherever the
 * package is installed.
 */
export function resolveModelPath(model: string, userDir: string | undefined): string {
  const value = model.trim();
  if (!value) throw nodeError('E_INPUT', 'noModel');
  // Node-RED replaces a field that is exactly ${NAME} with the variable's
  // value; when the variable is unset the text stays as it was typed.
  if (/^\$\{\S+\}$|^\$\(\S+\)$/.test(value)) throw nodeError('E_INPUT', 'envNotSet', { value });
  if (path.isAbsolute(value)) {
    if (!fs.existsSync(value)) throw nodeError('E_PLAN_IO', 'modelMissing', { model: value, places: value });
    return value;
  }
  const places = [userDir, PACKAGE_ROOT].filter((dir): dir is string => !!dir).map((dir) => path.resolve(dir, value));
  const found = places.find((p) => fs.existsSync(p));
  if (!found) throw nodeError('E_PLAN_IO', 'modelMissing', { model: value, places: places.join(', ') });
  return found;
}

/** The files a build reads; their sizes and mtimes key the cache. */
function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir)
    .filter((f) => f === 'config.json' || f.endsWith('.safetensors') || f.endsWith('.safetensors.index.json') ||
      f === 'tokenizer.json' || f === 'vocab.txt' || f === 'tokenizer_config.json' || f === 'special_tokens_map.json')
    .sort();
}

function builderVersion(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/**
 * The cached plan's file name: a hash of the source directory, each source
 * file's size and mtime, the build settings and the builder's version, so
 * any change to one of them builds a fresh plan.
 */
export function cachedPlanName(dir: string, build: BuildSettings): string {
  const hash = createHash('sha256');
  hash.update(JSON.stringify({ dir: path.resolve(dir), builder: builderVersion(), precision: build.precision, maxSeq: build.maxSeq ?? null }));
  for (const name of sourceFiles(dir)) {
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
  onProgress: (fraction: number) => void): Promise<string> {
  if (!fs.statSync(source).isDirectory()) return source;
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
