/**
 * The real Node-RED runtime for node tests, through node-red-node-test-helper
 * (which ships no types): the part of its API the tests use, and collecting
 * the messages that reach a node.
 */
export interface TestHelper {
  init(runtimePath: string, settings?: object): void;
  load(nodes: unknown[], flow: object[]): Promise<void>;
  unload(): Promise<void>;
  getNode(id: string): TestNode;
  /** The runtime's log calls since load (a sinon spy). */
  log(): { getCalls(): Array<{ args: Array<{ type?: string; msg?: unknown }> }> };
}

export interface TestNode {
  on(event: string, listener: (arg: never) => void): void;
  receive(msg: object): void;
  send(msg: object): void;
}

export interface Msg {
  _msgid: string;
  payload: unknown;
  error?: { message: string; code?: string; source?: { id: string } };
  [key: string]: unknown;
}

export const helper: TestHelper = require('node-red-node-test-helper');
helper.init(require.resolve('node-red'));

/** Collects what reaches a node (helper or catch) until `count` arrived. */
export function collect<M extends Msg = Msg>(node: TestNode, count: number, timeoutMs = 20000): Promise<M[]> {
  const got: M[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`got ${got.length} of ${count} messages`)), timeoutMs);
    node.on('input', ((msg: M) => {
      got.push(msg);
      if (got.length === count) {
        clearTimeout(timer);
        resolve(got);
      }
    }) as (arg: never) => void);
  });
}

/** What nodes of one type logged since load, as text. */
export function loggedBy(type: string): string[] {
  return helper.log().getCalls().map((c) => c.args[0]).filter((entry) => entry?.type === type).map((entry) => String(entry.msg));
}
