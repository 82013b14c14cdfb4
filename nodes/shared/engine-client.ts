/**
 * The user side of a fusedrt-engine: every FusedRT node that runs text holds
 * one. It registers with the config node, shows the engine's state and the
 * node's own queue as the node status, ends every message in done() or
 * done(err), and on close waits for the messages it still has in flight.
 */
import type { Engine } from '../../src/engine/engine';
import { errorCode } from '../../src/errors';
import type { EngineHost, EngineState, EngineUser } from './engine-host';
import { nodeError, text } from './messages';
import type { Node, NodeAPI, NodeMessage, NodeStatus } from './red-types';

/** The fusedrt-engine config node as its users see it. */
export interface EngineConfigNode extends Node {
  host: EngineHost;
}

/** Finds the config node with this id, or undefined when it is not (or no longer) deployed. */
export function findEngineNode(RED: NodeAPI, id: unknown): EngineConfigNode | undefined {
  if (typeof id !== 'string' || !id) return undefined;
  const node = RED.nodes.getNode(id) as Partial<EngineConfigNode> | null;
  return node && node.type === 'fusedrt-engine' && node.host ? node as EngineConfigNode : undefined;
}

export function statusOf(state: EngineState, inFlight: number): NodeStatus {
  switch (state.kind) {
    case 'loading':
      return state.buildFraction === undefined
        ? { fill: 'yellow', shape: 'ring', text: text('status.loading') }
        : { fill: 'yellow', shape: 'ring', text: text('status.building', { percent: Math.round(state.buildFraction * 100) }) };
    case 'error':
      return { fill: 'red', shape: 'ring', text: text('status.error', { code: errorCode(state.error) ?? state.error.message }) };
    case 'ready':
      return inFlight > 0
        ? { fill: 'blue', shape: 'dot', text: text('status.busy', { count: inFlight }) }
        : { fill: 'green', shape: 'dot', text: text('status.ready') };
  }
}

/**
 * Work a node does for one message: resolves with the message to send, or
 * null to send nothing.
 */
export type MessageHandler = (msg: NodeMessage) => Promise<NodeMessage | null>;

export class EngineClient implements EngineUser {
  private inFlight = 0;
  private readonly idleWaiters: Array<() => void> = [];
  private state: EngineState | undefined;
  /** The status last shown, so unchanged states are not sent to the editor again. */
  private shown = '';

  /**
   * @param configNode the node's fusedrt-engine; undefined when none is
   *   selected (allowed for post-processing nodes, which can take
   *   msg.fusedrt from an infer node instead)
   * @param required whether the node cannot work without one: then a missing
   *   engine shows as an error status
   */
  constructor(private readonly node: Node, readonly configNode: EngineConfigNode | undefined, required: boolean) {
    if (configNode) {
      configNode.host.register(this);
    } else if (required) {
      node.status({ fill: 'red', shape: 'ring', text: text('status.noEngine') });
    }
  }

  get id(): string {
    return this.node.id;
  }

  /** The engine of the selected config node. */
  engine(): Promise<Engine> {
    if (!this.configNode) return Promise.reject(nodeError('E_INPUT', 'noEngine'));
    return this.configNode.host.engine();
  }

  engineStateChanged(state: EngineState): void {
    this.state = state;
    this.showStatus();
  }

  private showStatus(): void {
    if (!this.state) return;
    const status = statusOf(this.state, this.inFlight);
    const key = JSON.stringify(status);
    if (key === this.shown) return;
    this.shown = key;
    this.node.status(status);
  }

  /** Wires the node's input: each message gets exactly one send (unless the handler returns null) and one done. */
  handleInput(handler: MessageHandler): void {
    this.node.on('input', (msg, send, done) => {
      this.inFlight++;
      this.showStatus();
      handler(msg)
        .then((out) => {
          if (out) send(out);
          done();
        }, (err: unknown) => done(err instanceof Error ? err : new Error(String(err))))
        .finally(() => {
          this.inFlight--;
          this.showStatus();
          if (this.inFlight === 0) this.idleWaiters.splice(0).forEach((resolve) => resolve());
        });
    });
  }

  /** Wires close: wait for this node's messages, leave the config node, clear the status. */
  handleClose(): void {
    this.node.on('close', (_removed, done) => {
      const idle = this.inFlight === 0 ? Promise.resolve() : new Promise<void>((resolve) => this.idleWaiters.push(resolve));
      void idle.then(() => {
        this.configNode?.host.deregister(this);
        this.state = undefined;
        this.shown = '';
        this.node.status({});
        done();
      });
    });
  }
}
