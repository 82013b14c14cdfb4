/**
 * Running the importable example flows (examples/*.json) in the real
 * Node-RED runtime: each is loaded with its engine pointing where the file
 * says (the bundled demo models), its inject nodes fired by hand and its
 * debug nodes replaced by helper nodes that collect what they get. Used by
 * test/examples.test.ts and, on the GPU machine, test/gpu/flows.gpu.ts.
 */
import * as fs from 'fs';
import * as path from 'path';
import { helper } from './red-helper';

export interface FlowNode {
  id: string;
  type: string;
  wires?: string[][];
  payload?: string;
  payloadType?: string;
  x?: number;
  y?: number;
  [key: string]: unknown;
}

export interface Received {
  payload: unknown;
  error?: unknown;
}

const REPO = path.resolve(__dirname, '..', '..', '..');
const NODE_RED_NODES = path.dirname(require.resolve('@node-red/nodes/package.json'));
export const EXAMPLE_NODES = [
  ...['fusedrt-engine', 'fusedrt-tokenize', 'fusedrt-infer', 'fusedrt-fill-mask', 'fusedrt-classify', 'fusedrt-embed']
    .map((name) => require(path.join(REPO, 'dist', 'nodes', name, name))),
  require(path.join(NODE_RED_NODES, 'core', 'function', '10-function.js')),
];

export function readExample(name: string): FlowNode[] {
  return JSON.parse(fs.readFileSync(path.join(REPO, 'examples', `${name}.json`), 'utf8')) as FlowNode[];
}

/**
 * Debug and inject nodes become helper nodes; comments go (they do
 * nothing). Imported flows land on the open tab; here that is tab "ex".
 */
function runnable(flow: FlowNode[]): FlowNode[] {
  const nodes = flow.filter((n) => n.type !== 'comment').map((n) => {
    const onTab = n.x === undefined ? n : { ...n, z: 'ex' };
    if (n.type === 'debug') return { id: n.id, type: 'helper', x: n.x, y: n.y, z: 'ex' };
    if (n.type === 'inject') return { id: n.id, type: 'helper', x: n.x, y: n.y, z: 'ex', wires: n.wires };
    return onTab;
  });
  return [{ id: 'ex', type: 'tab' }, ...nodes];
}

function injectPayload(node: FlowNode): unknown {
  return node.payloadType === 'json' ? JSON.parse(node.payload!) : node.payload;
}

/**
 * Fires every inject node of the example (its engine config nodes first
 * given `engineFields`, e.g. another device); resolves with what each named
 * debug node received, once it has received `expected[id]` messages.
 */
export async function runExample(name: string, expected: Record<string, number>,
  engineFields: Record<string, string> = {}): Promise<Record<string, Received[]>> {
  const flow = readExample(name).map((n) => (n.type === 'fusedrt-engine' ? { ...n, ...engineFields } : n));
  await helper.load(EXAMPLE_NODES, runnable(flow));
  const received: Record<string, Received[]> = {};
  const done = Promise.all(Object.entries(expected).map(([id, count]) => new Promise<void>((resolve, reject) => {
    received[id] = [];
    const timer = setTimeout(() => reject(new Error(`${name}: ${id} got ${received[id].length} of ${count}: ${JSON.stringify(received)}`)), 60000);
    helper.getNode(id).on('input', ((msg: Received) => {
      received[id].push(msg);
      if (received[id].length === count) {
        clearTimeout(timer);
        resolve();
      }
    }) as (msg: never) => void);
  })));
  for (const inject of flow.filter((n) => n.type === 'inject')) {
    for (const target of inject.wires!.flat()) helper.getNode(target).receive({ payload: injectPayload(inject) });
  }
  await done;
  return received;
}
