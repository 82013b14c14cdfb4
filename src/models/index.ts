/**
 * Model families: each turns a Hugging Face config.json plus the names and
 * shapes of a checkpoint's tensors into a plan's op graph. The builder picks
 * the family by `architectures[0]`.
 */
import { FusedRTError } from '../errors';
import type { BufferDecl, ModelConfig, PlanHeader, PlanOp, Task } from '../build/plan-types';
import { BERT_ARCHITECTURES, buildBertGraph } from './bert';

/** What a family needs to know about the checkpoint: which tensors exist, their dtype and shape. */
export interface WeightLookup {
  entry(name: string): { dtype: string; shape: number[] } | undefined;
}

/**
 * One plan tensor and where its values come from. Several sources are
 * concatenated along the first dimension (BERT's fused Q, K, V projection).
 */
export interface TensorSpec {
  name: string;
  sources: string[];
  shape: number[];
  /**
   * Matrices and embedding tables are stored in fp16 for an fp16 or fp8 plan; vectors (biases, LayerNorm) stay f32;
   * e4m3 matrices (only in a graph built for fp8) are stored in E4M3 with a per-tensor scale.
   */
  kind: 'matrix' | 'vector' | 'e4m3';
}

export interface GraphOptions {
  /**
   * Build the fp8 variant: the GEMMs the family picks take E4M3 weights (TensorSpec kind `e4m3`) and E4M3 copies
   * of their inputs, which the ops before them write. Default: false.
   */
  fp8?: boolean;
}

export interface ModelGraph {
  family: PlanHeader['family'];
  architecture: string;
  task: Task;
  /** `maxSeq` is `maxPositions` here; the builder lowers it to the requested limit. */
  config: ModelConfig;
  labels: string[] | null;
  problemType: string | null;
  tensors: TensorSpec[];
  buffers: BufferDecl[];
  ops: PlanOp[];
  outputs: PlanHeader['outputs'];
}

interface ModelFamily {
  architectures: readonly string[];
  buildGraph(config: Record<string, unknown>, weights: WeightLookup, options: GraphOptions): ModelGraph;
}

const FAMILIES: ModelFamily[] = [{ architectures: BERT_ARCHITECTURES, buildGraph: buildBertGraph }];

export function supportedArchitectures(): string[] {
  return FAMILIES.flatMap((f) => f.architectures);
}

/** Builds the op graph for a parsed config.json; E_MODEL for an architecture no family supports. */
export function buildModelGraph(config: Record<string, unknown>, weights: WeightLookup, options: GraphOptions = {}): ModelGraph {
  const architectures = config.architectures;
  if (!Array.isArray(architectures) || typeof architectures[0] !== 'string') {
    throw new FusedRTError('E_MODEL', `config.json has no "architectures" entry; supported architectures: ${supportedArchitectures().join(', ')}`);
  }
  const architecture = architectures[0];
  const family = FAMILIES.find((f) => f.architectures.includes(architecture));
  if (!family) {
    throw new FusedRTError('E_MODEL', `architecture ${architecture} is not supported; supported architectures: ${supportedArchitectures().join(', ')}`);
  }
  return family.buildGraph(config, weights, options);
}
