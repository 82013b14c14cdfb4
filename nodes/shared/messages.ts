/**
 * Runtime texts (status, errors) shared by all FusedRT nodes. They live in the
 * fusedrt-engine catalog (locales/en-US/fusedrt-engine.json), read here
 * directly: Node-RED's RED._ only sees the calling node's own catalog, and
 * these texts are common to all six nodes.
 */
import * as fs from 'fs';
import * as path from 'path';
import { FusedRTError, type ErrorCode } from '../../src/errors';

type Catalog = { [key: string]: string | Catalog };

let catalog: Catalog | undefined;

function loadCatalog(): Catalog {
  const file = path.join(__dirname, '..', 'fusedrt-engine', 'locales', 'en-US', 'fusedrt-engine.json');
  catalog ??= (JSON.parse(fs.readFileSync(file, 'utf8')) as Catalog)['fusedrt-engine'] as Catalog;
  return catalog;
}

/** The text of `key` (e.g. 'status.busy') with `__name__` placeholders filled in. */
export function text(key: string, params: Record<string, unknown> = {}): string {
  let node: string | Catalog | undefined = loadCatalog();
  for (const part of key.split('.')) node = typeof node === 'object' ? node[part] : undefined;
  if (typeof node !== 'string') return key;
  return node.replace(/__(\w+)__/g, (whole, name: string) => (name in params ? String(params[name]) : whole));
}

/** A coded error whose message comes from the catalog's `errors` section. */
export function nodeError(code: ErrorCode, key: string, params: Record<string, unknown> = {}): FusedRTError {
  return new FusedRTError(code, text(`errors.${key}`, params));
}
