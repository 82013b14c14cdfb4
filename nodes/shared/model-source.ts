/**
 * Where an engine's model comes from: a plan file, or a Hugging Face
 * directory that is built to a plan once and cached (src/build/plan-cache.ts).
 */
import * as fs from 'fs';
import * as path from 'path';
import { PACKAGE_ROOT } from '../../src/engine/native';
import { nodeError } from './messages';

export { planFor, type BuildSettings } from '../../src/build/plan-cache';

/**
 * Resolves the model field of the config node. A relative path is looked up
 * in the Node-RED user directory first and then in this package's root, so the
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
