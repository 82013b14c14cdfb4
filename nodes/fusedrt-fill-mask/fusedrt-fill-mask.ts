/**
 * fusedrt-fill-mask: the top-k tokens and scores for each [MASK] of an infer
 * result (or of msg.payload, when the node has an engine of its own), and the
 * sentence filled with the best tokens.
 */
import { MAX_TOP_K } from '../../src/engine/engine';
import { isTopK } from '../../src/engine/run-result';
import { FusedRTError } from '../../src/errors';
import { fillMask } from '../../src/post/fill-mask';
import { EngineClient, findEngineNode } from '../shared/engine-client';
import { requireMaskScores } from '../shared/inference';
import { nodeError } from '../shared/messages';
import { countField } from '../shared/options';
import { engineOfResult, obtainResult, shapeLike } from '../shared/post-input';
import type { Node, NodeAPI, NodeDef } from '../shared/red-types';

interface FillMaskNodeDef extends NodeDef {
  engine?: string;
  topK?: string | number;
}

/** The error for a top-k result shorter than this node's k: naming both, and the two ways out. */
function tooFewPredictions(k: number, topK: number): FusedRTError {
  const range = topK <= MAX_TOP_K ? `${topK} to ${MAX_TOP_K}, or 0 for full logits` : `0 (full logits: ${topK} is above its maximum, ${MAX_TOP_K})`;
  return new FusedRTError('E_INPUT', `msg.fusedrt holds the top ${k} tokens per [MASK] but this node keeps the top ${topK}: `
    + `set the fusedrt-infer node's Top k to ${range}; or set this node's Top k to ${k}`);
}

export = function register(RED: NodeAPI): void {
  function FusedrtFillMaskNode(this: Node, def: FillMaskNodeDef): void {
    RED.nodes.createNode(this, def);
    const topK = Math.max(1, countField(def.topK, 5));
    const client = new EngineClient(this, findEngineNode(RED, def.engine), false);
    client.handleInput(async (msg) => {
      // Running the text itself, the node lets the engine reduce each [MASK] row to its top k.
      const obtained = await obtainResult(client, msg, ['logits'], topK <= MAX_TOP_K ? { topK } : {});
      const { result } = obtained;
      if (result.task !== 'fill-mask') throw nodeError('E_INPUT', 'wrongTask', { needed: 'fill-mask', task: result.task });
      const logits = requireMaskScores(result, 'logits', 'set the infer node\'s outputs to "task" or include logits');
      // Fewer predictions than configured would reach the flow unnoticed, so a short top-k fails the message.
      if (isTopK(logits) && logits.k < topK) throw tooFewPredictions(logits.k, topK);
      const engine = await engineOfResult(RED, client, obtained);
      const filled = fillMask(logits, result.encodings, engine.tokenizer, { topK, texts: result.texts });
      msg.payload = shapeLike(result, filled);
      return msg;
    });
    client.handleClose();
  }
  RED.nodes.registerType('fusedrt-fill-mask', FusedrtFillMaskNode);
};
