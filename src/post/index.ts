/** Post-processing: pure functions from engine outputs to results, shared by the nodes and the CLI. */
export { fillMask, maskPositions } from './fill-mask';
export type { FillMaskOptions, FillMaskResult, MaskPrediction, MaskResult } from './fill-mask';
export { classify, defaultActivation, labelNames } from './classify';
export type { ClassifyActivation, ClassifyOptions, ClassifyResult, LabelScore } from './classify';
export { embeddingsOfRows, poolEmbeddings } from './embed';
export type { Pooling, PoolingOptions } from './embed';
export { logSumExp, softmaxRow, sigmoid, topKIndices } from './softmax';
