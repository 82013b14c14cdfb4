/**
 * fusedrt-embed: one vector per text, pooled from the token states (output
 * `hidden`) of an infer result (or of msg.payload, when the node has an
 * engine of its own).
 */
import { poolEmbeddings, type Pooling } from '../../src/post/embed';
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
      const { result } = await obtainResult(client, msg, ['hidden']);
      const hidden = requireOutput(result, 'hidden', 'set the infer node\'s outputs to "all" or include hidden');
      const vectors = poolEmbeddings(hidden, result.cuSeqlens, { pooling, normalize });
      msg.payload = shapeLike(result, vectors.map((v) => Array.from(v)));
      return msg;
    });
    client.handleClose();
  }
  RED.nodes.registerType('fusedrt-embed', FusedrtEmbedNode);
};
