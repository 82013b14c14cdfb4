/**
 * fusedrt-tokenize: text in msg.payload → msg.tokens, the encodings of the
 * engine's tokenizer (ids, type ids, tokens, offsets as typed arrays).
 */
import { EngineClient, findEngineNode } from '../shared/engine-client';
import { tokenize } from '../shared/inference';
import { propertyName, truncationFor } from '../shared/options';
import type { Node, NodeAPI, NodeDef } from '../shared/red-types';
import { readTexts } from '../shared/texts';

interface TokenizeNodeDef extends NodeDef {
  engine?: string;
  property?: string;
  output?: string;
  truncation?: string;
  addSpecialTokens?: boolean;
}

export = function register(RED: NodeAPI): void {
  function FusedrtTokenizeNode(this: Node, def: TokenizeNodeDef): void {
    RED.nodes.createNode(this, def);
    const input = propertyName(def.property, 'payload');
    const output = propertyName(def.output, 'tokens');
    const client = new EngineClient(this, findEngineNode(RED, def.engine), true);
    const truncation = truncationFor(def.truncation, client);
    client.handleInput(async (msg) => {
      const texts = readTexts(RED.util.getMessageProperty(msg, input), input);
      const engine = await client.engine();
      RED.util.setMessageProperty(msg, output,
        await tokenize(engine, client.configNode!.id, texts, truncation, def.addSpecialTokens !== false), true);
      return msg;
    });
    client.handleClose();
  }
  RED.nodes.registerType('fusedrt-tokenize', FusedrtTokenizeNode);
};
