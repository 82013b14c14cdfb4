/**
 * fusedrt-embed: one vector per text, from an infer result (or from
 * msg.payload, when the node has an engine of its own): the output the
 * engine pooled already (`mean` or `cls`) when there is one, else the token
 * states (`hidden`) pooled here.
 */
import { embeddingsOfRows, poolEmbeddings, type Pooling } from '../../src/post/embed';
import { EngineClient, findEngineNode } from '../shared/engine-client';
import { requireOutput } from '../shared/inference';
import { obtainResult, shapeLike } from '../shared/post-input';
import type { Node, NodeAPI, NodeDef } from '../shared/red-types';

interface EmbedNodeDef extends NodeDef {
  engine?: string;
  pooling?: string;
  normalize?: boolean;
}

export = function register(RED: NodeAPI): void {
  function FusedrtEmbedNode(this: Node, def: EmbedNodeDef): void {
    RED.nodes.createNode(this, def);
    const pooling: Pooling = def.pooling === 'cls' ? 'cls' : 'mean';
    const normalize = def.normalize !== false;
    const client = new EngineClient(this, findEngineNode(RED, def.engine), false);
    client.handleInput(async (msg) => {
      // The plan's pooled output brings one row per text from the device
      // instead of every token's; plans built before it existed have only hidden.
      const { result } = await obtainResult(client, msg,
        (engine) => (engine.outputNames.includes(pooling) ? [pooling] : ['hidden']));
      const pooled = result.outputs[pooling];
      const vectors = pooled?.rowsKind === 'sequences' && pooled.data instanceof Float32Array
        ? embeddingsOfRows(pooled, normalize)
        : poolEmbeddings(requireOutput(result, 'hidden', `set the infer node's outputs to ${pooling} (or hidden)`),
          result.cuSeqlens, { pooling, normalize });
      msg.payload = shapeLike(result, vectors.map((v) => Array.from(v)));
      return msg;
    });
    client.handleClose();
  }
  RED.nodes.registerType('fusedrt-embed', FusedrtEmbedNode);
};
