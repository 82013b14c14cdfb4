/**
 * fusedrt-infer: runs msg.tokens (from fusedrt-tokenize), or msg.payload
 * tokenized here, through the engine as one packed batch, and puts the
 * outputs in msg.fusedrt for the post-processing nodes.
 */
import { MAX_TOP_K } from '../../src/engine/engine';
import type { FusedRTError } from '../../src/errors';
import { EngineClient, findEngineNode } from '../shared/engine-client';
import { infer, readTokens, tokenize, type OutputSelection } from '../shared/inference';
import { nodeError } from '../shared/messages';
import { propertyName, truncationFor } from '../shared/options';
import type { Node, NodeAPI, NodeDef } from '../shared/red-types';
import { readTexts } from '../shared/texts';

interface InferNodeDef extends NodeDef {
  engine?: string;
  tokens?: string;
  outputs?: string;
  outputNames?: string;
  truncation?: string;
  topK?: string | number;
}

function outputSelection(def: InferNodeDef): OutputSelection {
  if (def.outputs === 'all') return 'all';
  if (def.outputs === 'list') {
    const names = (def.outputNames ?? '').split(',').map((n) => n.trim()).filter(Boolean);
    if (names.length > 0) return names;
  }
  return 'task';
}

/** The Top k field: 0 (blank, or a flow from before the field) keeps full outputs; an error when out of range. */
function readTopK(value: string | number | undefined): number | FusedRTError {
  if (value === undefined || String(value).trim() === '') return 0;
  const n = Number(value);
  if (Number.isInteger(n) && n >= 0 && n <= MAX_TOP_K) return n;
  return nodeError('E_INPUT', 'badNumber', { field: 'Top k', min: `0 to ${MAX_TOP_K}`, value });
}

export = function register(RED: NodeAPI): void {
  function FusedrtInferNode(this: Node, def: InferNodeDef): void {
    RED.nodes.createNode(this, def);
    const tokensProperty = propertyName(def.tokens, 'tokens');
    const selection = outputSelection(def);
    const topK = readTopK(def.topK);
    const client = new EngineClient(this, findEngineNode(RED, def.engine), true);
    const truncation = truncationFor(def.truncation, client);
    // A Top k left on a node whose engine now holds another kind of model should not break the flow: warn once.
    let warned = false;
    client.handleInput(async (msg) => {
      if (typeof topK !== 'number') throw topK;
      const given = RED.util.getMessageProperty(msg, tokensProperty);
      // Validate the message before waiting for the engine, so a bad message fails at once.
      const tokens = given === undefined ? undefined : readTokens(given, tokensProperty);
      const texts = tokens ? undefined : readTexts(msg.payload, 'payload');
      const engine = await client.engine();
      const engineId = client.configNode!.id;
      const task = engine.info.header.task;
      if (topK > 0 && task !== 'fill-mask' && !warned) {
        warned = true;
        this.warn(`Top k ${topK} applies to fill-mask models only; this ${task} model's outputs are sent in full`);
      }
      msg.fusedrt = await infer(engine, engineId, tokens ?? await tokenize(engine, engineId, texts!, truncation), selection,
        topK > 0 ? { topK } : {});
      return msg;
    });
    client.handleClose();
  }
  RED.nodes.registerType('fusedrt-infer', FusedrtInferNode);
};
