// @inferq/workers: the runtime. Every public name is listed here.
export { DynamicBatcher } from './batching/batcher.js';
export type { BatchJob, BatchRunner, BatcherStats, DynamicBatcherOptions } from './batching/batcher.js';
export { createParquetWriter, openParquet } from './io/parquet.js';
export type { ParquetReader, ParquetWriter, ReadOptions, WriteResult, WriterOptions } from './io/parquet.js';
export { createLogger, silentLogger } from './logging.js';
export type { Logger, LoggerOptions } from './logging.js';
export { loadModel } from './models/loaded-model.js';
export type { LoadModelOptions, LoadedModel } from './models/loaded-model.js';
export { ModelRepository } from './models/repository.js';
export type { ModelVersion } from './models/repository.js';
export { predictParquet } from './predict/predict.js';
export type { PredictOptions, PredictSummary } from './predict/predict.js';
export { parseDevice } from './runners/device.js';
export { OnnxRunner, defaultSessionFactory } from './runners/onnx.js';
export type { OnnxRunnerOptions, OrtSession, OrtSessionFactory } from './runners/onnx.js';
export { formatDevice } from './runners/runner.js';
export type { Device, Runner } from './runners/runner.js';
