/**
 * fusedrt-classify: label scores for each text of an infer result (or of
 * msg.payload, when the node has an engine of its own).
 */
import { classify, defaultActivation, type ClassifyActivation } from '../../src/post/classify';
import { EngineClient, findEngineNode } from '../shared/engine-client';
import { requireOutput } from '../shared/inference';
import { nodeError } from '../shared/messages';
import { countField } from '../shared/options';
import { obtainResult, shapeLike } from '../shared/post-input';
import type { Node, NodeAPI, NodeDef } from '../shared/red-types';

interface ClassifyNodeDef extends NodeDef {
  engine?: string;
  /** 'auto' follows the plan's problem type. */
  activation?: string;
  topK?: string | number;
}

export = function register(RED: NodeAPI): void {
  function FusedrtClassifyNode(this: Node, def: ClassifyNodeDef): void {
    RED.nodes.createNode(this, def);
    const topK = countField(def.topK, 0);
    const chosen = ['softmax', 'sigmoid', 'none'].includes(def.activation ?? '') ? def.activation as ClassifyActivation : undefined;
    const client = new EngineClient(this, findEngineNode(RED, def.engine), false);
    client.handleInput(async (msg) => {
      const { result } = await obtainResult(client, msg, ['logits']);
      if (result.task !== 'classification') throw nodeError('E_INPUT', 'wrongTask', { needed: 'classification', task: result.task });
      const logits = requireOutput(result, 'logits', 'set the infer node\'s outputs to "task" or include logits');
      const scores = classify(logits, result.labels, { activation: chosen ?? defaultActivation(result.problemType), topK });
      msg.payload = shapeLike(result, scores);
      return msg;
    });
    client.handleClose();
  }
  RED.nodes.registerType('fusedrt-classify', FusedrtClassifyNode);
};
