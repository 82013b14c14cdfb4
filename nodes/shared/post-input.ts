/**
 * How a post-processing node gets an infer result: msg.fusedrt from a
 * fusedrt-infer node, or, when it has an engine of its own and the message
 * has no msg.fusedrt, by tokenizing and running msg.payload itself.
 */
import type { Engine } from '../../src/engine/engine';
import type { EngineClient } from './engine-client';
import { findEngineNode } from './engine-client';
import { infer, readResult, tokenize, type FusedResult } from './inference';
import { nodeError } from './messages';
import type { NodeAPI, NodeMessage } from './red-types';
import { readTexts } from './texts';

export async function obtainResult(client: EngineClient, msg: NodeMessage, outputs: string[]): Promise<FusedResult> {
  if (msg.fusedrt !== undefined || !client.configNode) return readResult(msg.fusedrt);
  const engine = await client.engine();
  const texts = readTexts(msg.payload, 'payload');
  const tokens = tokenize(engine, client.configNode.id, texts, client.configNode.host.truncation);
  return infer(engine, client.configNode.id, tokens, outputs);
}

/** The engine behind a result (for its tokenizer): the node's own, else the one named in msg.fusedrt. */
export function engineOfResult(RED: NodeAPI, client: EngineClient, result: FusedResult): Promise<Engine> {
  if (client.configNode) return client.engine();
  const configNode = findEngineNode(RED, result.engine);
  if (!configNode) return Promise.reject(nodeError('E_INPUT', 'engineGone', { id: result.engine }));
  return configNode.host.engine();
}

/** Results go back in the shape the texts came in: one result, or an array for an array payload. */
export function shapeLike<T>(result: FusedResult, items: T[]): T | T[] {
  return result.batch ? items : items[0];
}
