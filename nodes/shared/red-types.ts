/**
 * The slice of the Node-RED runtime API these nodes use. @types/node-red is
 * not a dependency; these interfaces follow Node-RED 3.x/4.x
 * (@node-red/registry createNodeApi, @node-red/runtime nodes/Node.js).
 */

/** A message; `_msgid` is set by the runtime. */
export interface NodeMessage {
  _msgid?: string;
  payload?: unknown;
  [key: string]: unknown;
}

export interface NodeStatus {
  fill?: 'red' | 'green' | 'yellow' | 'blue' | 'grey';
  shape?: 'ring' | 'dot';
  text?: string;
}

export type SendFunction = (msg: NodeMessage | Array<NodeMessage | null>) => void;
export type DoneFunction = (err?: Error | string) => void;

/** Properties every node definition carries (the editor's `defaults`). */
export interface NodeDef {
  id: string;
  type: string;
  name?: string;
  z?: string;
}

export interface Node {
  readonly id: string;
  readonly type: string;
  name?: string;
  on(event: 'input', listener: (msg: NodeMessage, send: SendFunction, done: DoneFunction) => void): void;
  on(event: 'close', listener: (removed: boolean, done: () => void) => void): void;
  status(status: NodeStatus): void;
  error(err: unknown, msg?: NodeMessage): void;
  warn(message: unknown): void;
  log(message: unknown): void;
}

export interface NodeAPI {
  nodes: {
    createNode(node: object, def: NodeDef): void;
    registerType(type: string, constructor: (this: Node, def: NodeDef) => void, options?: object): void;
    getNode(id: string): Node | null;
  };
  settings: { userDir?: string; [key: string]: unknown };
  util: {
    getMessageProperty(msg: NodeMessage, property: string): unknown;
    setMessageProperty(msg: NodeMessage, property: string, value: unknown, createMissing?: boolean): boolean;
  };
  /** Translates a message key of the calling node's catalog (locales/<lang>/<node>.json). */
  _(key: string, substitutions?: Record<string, unknown>): string;
}
