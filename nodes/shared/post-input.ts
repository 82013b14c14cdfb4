/**
 * How a post-processing node gets an infer result: msg.fusedrt from a
 * fusedrt-infer node, or, when it has an engine of its own and the message
 * has no msg.fusedrt, by tokenizing and running msg.payload itself.
 */
import type { Engine } from '../../src/engine/engine';
import type { EngineClient } from './engine-client';
import { findEngineNode } from './engine-client';
import { infer, readResult, tokenize, type FusedResult, type InferOptions } from './inference';
import { nodeError } from './messages';
import type { NodeAPI, NodeMessage } from './red-types';
import { readTexts } from './texts';

export interface ObtainedResult {
  result: FusedResult;
  /** The engine that ran msg.payload here; undefined when the result came in msg.fusedrt. */
  engine?: Engine;
}

/** `outputs`: the names to compute when the node runs msg.payload itself, or a function of the engine giving them. */
export async function obtainResult(client: EngineClient, msg: NodeMessage, outputs: string[] | ((engine: Engine) => string[]),
  options: InferOptions = {}): Promise<ObtainedResult> {
  if (msg.fusedrt !== undefined || !client.configNode) return { result: readResult(msg.fusedrt) };
  const engine = await client.engine();
  const texts = readTexts(msg.payload, 'payload');
  const tokens = await tokenize(engine, client.configNode.id, texts, client.configNode.host.truncation);
  const names = typeof outputs === 'function' ? outputs(engine) : outputs;
  return { result: await infer(engine, client.configNode.id, tokens, names, options), engine };
}

/**
 * The engine behind a result (for its tokenizer): the one that ran it here,
 * the node's own, else the one named in msg.fusedrt. Reusing the engine that
 * ran the text matters during a redeploy: a closing config node hands out no
 * engine, but the one in hand still holds its tokenizer.
 */
export function engineOfResult(RED: NodeAPI, client: EngineClient, obtained: ObtainedResult): Promise<Engine> {
  if (obtained.engine) return Promise.resolve(obtained.engine);
  if (client.configNode) return client.engine();
  const configNode = findEngineNode(RED, obtained.result.engine);
  if (!configNode) return Promise.reject(nodeError('E_INPUT', 'engineGone', { id: obtained.result.engine }));
  return configNode.host.engine();
}

/** Results go back in the shape the texts came in: one result, or an array for an array payload. */
export function shapeLike<T>(result: FusedResult, items: T[]): T | T[] {
  return result.batch ? items : items[0];
}
