/**
 * fusedrt-engine: the config node that owns one Engine. Nodes that use it
 * register with its host; the engine loads once (building and caching a plan
 * when the model is a Hugging Face directory), logs which backend and device
 * it runs on, and a redeploy waits for work in flight before freeing it.
 */
import type { Precision } from '../../src/build/plan-types';
import type { Engine } from '../../src/engine/engine';
import type { CpuPriority, DeviceOption } from '../../src/engine/types';
import type { EngineConfigNode } from '../shared/engine-client';
import { EngineHost, type EngineSettings, type Truncation } from '../shared/engine-host';
import { nodeError, text } from '../shared/messages';
import type { Node, NodeAPI, NodeDef } from '../shared/red-types';

interface EngineNodeDef extends NodeDef {
  model?: string;
  precision?: string;
  maxSeq?: string | number;
  device?: string;
  threads?: string | number;
  cpuPriority?: string;
  contexts?: string | number;
  gpuWait?: string;
  maxTokens?: string | number;
  maxSequences?: string | number;
  batchWindowMs?: string | number;
  truncation?: string;
}

/** An editor field as an integer ≥ min; blank means the default (undefined: leave it to the engine). */
function integerField(value: string | number | undefined, field: string, min: number): number | undefined {
  if (value === undefined || String(value).trim() === '') return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw nodeError('E_INPUT', 'badNumber', { field, min, value });
  return n;
}

/** The GPU wait select as the engine's spinWait; absent or blank (flows saved before the field) leaves the engine's default. */
function spinWaitField(value: string | undefined): boolean | undefined {
  if (value === undefined || value === '') return undefined;
  if (value === 'spin' || value === 'block') return value === 'spin';
  throw nodeError('E_INPUT', 'badChoice', { field: 'GPU wait', choices: 'spin, block', value });
}

/** The CPU priority select; absent or blank (flows saved before the field) leaves the engine's default. */
function cpuPriorityField(value: string | undefined): CpuPriority | undefined {
  if (value === undefined || value === '') return undefined;
  if (value === 'background' || value === 'normal') return value;
  throw nodeError('E_INPUT', 'badChoice', { field: 'CPU priority', choices: 'background, normal', value });
}

function readSettings(def: EngineNodeDef, userDir: string | undefined): EngineSettings {
  const precision = (def.precision || 'fp32') as Precision;
  if (precision !== 'fp32' && precision !== 'fp16' && precision !== 'fp8') {
    throw nodeError('E_INPUT', 'badChoice', { field: 'precision', choices: 'fp32, fp16, fp8', value: precision });
  }
  const engine = {
    device: (def.device || 'auto') as DeviceOption,
    threads: integerField(def.threads, 'threads', 0),
    cpuPriority: cpuPriorityField(def.cpuPriority),
    contexts: integerField(def.contexts, 'contexts', 1),
    spinWait: spinWaitField(def.gpuWait),
    maxTokens: integerField(def.maxTokens, 'max tokens', 1),
    maxSequences: integerField(def.maxSequences, 'max texts', 1),
    batchWindowMs: integerField(def.batchWindowMs, 'batch window', 0),
  };
  return {
    model: def.model ?? '',
    userDir,
    build: { precision, maxSeq: integerField(def.maxSeq, 'max length', 2) },
    // Blank fields are left out so the engine's own defaults apply.
    engine: Object.fromEntries(Object.entries(engine).filter(([, v]) => v !== undefined)),
  };
}

/**
 * The log line of a loaded engine: `auto` resolves only at load, so this is
 * where a user sees what it chose, and which GPUs it passed over and why.
 */
function loadedMessage(requested: string, engine: Engine): string {
  const { info } = engine;
  const params = { requested, contexts: info.contexts };
  const passedOver = info.passedOver ? text('log.passedOver', { reasons: info.passedOver }) : '';
  if (info.device) {
    return text('log.loadedCuda', { ...params, ordinal: info.device.ordinal, name: info.device.name, engines: info.device.engines })
      + passedOver;
  }
  return text('log.loadedCpu', { ...params, threads: info.threads, priority: info.cpuPriority, blas: info.blas }) + passedOver;
}

export = function register(RED: NodeAPI): void {
  function FusedrtEngineNode(this: Node, def: EngineNodeDef): void {
    RED.nodes.createNode(this, def);
    const node = this as EngineConfigNode;
    const truncation: Truncation = def.truncation === 'error' ? 'error' : 'truncate';
    node.host = new EngineHost(() => readSettings(def, RED.settings.userDir), truncation, (err) => node.error(err),
      (engine) => node.log(loadedMessage(def.device || 'auto', engine)));
    node.on('close', (_removed, done) => {
      node.host.close().then(() => done(), (err: unknown) => {
        node.error(err);
        done();
      });
    });
  }
  RED.nodes.registerType('fusedrt-engine', FusedrtEngineNode);
};
