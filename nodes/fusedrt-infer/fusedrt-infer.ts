/**
 * fusedrt-infer: runs msg.tokens (from fusedrt-tokenize), or msg.payload
 * tokenized here, through the engine as one packed batch, and puts the
 * outputs in msg.fusedrt for the post-processing nodes.
 */
import { EngineClient, findEngineNode } from '../shared/engine-client';
import { infer, readTokens, tokenize, type OutputSelection } from '../shared/inference';
import { propertyName, truncationFor } from '../shared/options';
import type { Node, NodeAPI, NodeDef } from '../shared/red-types';
import { readTexts } from '../shared/texts';

interface InferNodeDef extends NodeDef {
  engine?: string;
  tokens?: string;
  outputs?: string;
  outputNames?: string;
  truncation?: string;
}

function outputSelection(def: InferNodeDef): OutputSelection {
  if (def.outputs === 'all') return 'all';
  if (def.outputs === 'list') {
    const names = (def.outputNames ?? '').split(',').map((n) => n.trim()).filter(Boolean);
    if (names.length > 0) return names;
  }
  return 'task';
}

export = function register(RED: NodeAPI): void {
  function FusedrtInferNode(this: Node, def: InferNodeDef): void {
    RED.nodes.createNode(this, def);
    const tokensProperty = propertyName(def.tokens, 'tokens');
    const selection = outputSelection(def);
    const client = new EngineClient(this, findEngineNode(RED, def.engine), true);
    const truncation = truncationFor(def.truncation, client);
    client.handleInput(async (msg) => {
      const given = RED.util.getMessageProperty(msg, tokensProperty);
      // Validate the message before waiting for the engine, so a bad message fails at once.
      const tokens = given === undefined ? undefined : readTokens(given, tokensProperty);
      const texts = tokens ? undefined : readTexts(msg.payload, 'payload');
      const engine = await client.engine();
      const engineId = client.configNode!.id;
      msg.fusedrt = await infer(engine, engineId, tokens ?? tokenize(engine, engineId, texts!, truncation), selection);
      return msg;
    });
    client.handleClose();
  }
  RED.nodes.registerType('fusedrt-infer', FusedrtInferNode);
};
