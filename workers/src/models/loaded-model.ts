import { DynamicBatcher } from '../batching/batcher.js';
import type { Logger } from '../logging.js';
import type { WorkerMetrics } from '../ops/hooks.js';
import { perCpuInstances } from '../runners/onnx/runner.js';
import type { OrtSessionFactory } from '../runners/onnx/session.js';
import type { Device, Runner } from '../runners/runner.js';
import { formatDevice } from '../runners/runner.js';
import { createRunner } from '../runners/select.js';
import { resolveBatching } from '@inferq/shared';
import type { BatchingConfig, TensorSpec } from '@inferq/shared';
import type { ModelRepository, ModelVersion } from './repository.js';

/** A model version loaded on a device, warm, with its batcher. */
export interface LoadedModel {
  readonly name: string;
  readonly version: string;
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
  readonly batching: BatchingConfig;
  readonly runner: Runner;
  readonly batcher: DynamicBatcher;
  /** Drains the batcher (within `timeoutMs`), then releases the model. */
  close(timeoutMs?: number): Promise<void>;
}

export interface LoadModelOptions {
  readonly device?: Device;
  /** Overrides of the model's batching settings (e.g. `--max-batch`). */
  readonly batching?: Partial<BatchingConfig>;
  /**
   * Sessions of the model, each in its own thread (see OnnxRunnerOptions.instances). Default 1.
   * 'per-cpu': one single-threaded instance per CPU, fewer for a model too big for that ({@link perCpuInstances}).
   */
  readonly instances?: number | 'per-cpu';
  readonly intraOpThreads?: number;
  readonly interOpThreads?: number;
  /** Default true: run a warm-up batch at 1 row and at maxBatchSize before taking work. */
  readonly warmup?: boolean;
  readonly logger: Logger;
  readonly createSession?: OrtSessionFactory;
  /** Makes the runner of a version (tests give an in-memory one). Default: runners/select.ts. */
  readonly createRunner?: typeof createRunner;
  /** Told of the load and warm-up times and of every batch. Default: none. */
  readonly metrics?: WorkerMetrics;
}

/** Resolves, loads, checks and warms a model version. */
export async function loadModel(repo: ModelRepository, name: string, version: string | undefined, options: LoadModelOptions): Promise<LoadedModel> {
  const began = performance.now();
  return loadVersion(await repo.resolve(name, version), options, began);
}

/** Loads, checks and warms a resolved version; `began` is when its resolution started (load time). */
export async function loadVersion(mv: ModelVersion, options: LoadModelOptions, began = performance.now()): Promise<LoadedModel> {
  const batching = resolveBatching({ ...mv.batchingConfig, ...stripUndefined(options.batching ?? {}) }, `${mv.name}:${mv.version} batching`);
  const logger = options.logger.child({ model: mv.name, version: mv.version });
  // Thread and instance options are ONNX Runtime's; a TF.js runner reads its folder itself.
  const onnx = mv.format === 'onnx' ? onnxOptions(await mv.readModel(), options) : undefined;
  const runner = await (options.createRunner ?? createRunner)({
    dir: mv.dir,
    format: mv.format,
    name: mv.name,
    version: mv.version,
    device: options.device ?? { kind: 'cpu' },
    inputs: mv.inputs,
    outputs: mv.outputs,
    logger,
    ...(onnx === undefined ? {} : { onnx }),
  });
  let loaded: number;
  try {
    await runner.load();
    loaded = performance.now();
    if (options.warmup ?? true) {
      const sizes = [...new Set([1, ...batching.preferredBatchSizes, batching.maxBatchSize])];
      await runner.warmup(sizes);
    }
  } catch (err) {
    // A broken version met by a hot reload must not leave its threads behind.
    await runner.dispose().catch((e: unknown) => logger.warn({ err: e }, 'could not release a model that failed to load'));
    throw err;
  }
  const loadSeconds = (loaded - began) / 1000;
  const warmupSeconds = (performance.now() - loaded) / 1000;
  logger.info({ device: formatDevice(runner.device), inputs: runner.inputs, outputs: runner.outputs, batching, loadSeconds, warmupSeconds }, 'model loaded');
  const metrics = options.metrics;
  const batcher = new DynamicBatcher(runner, {
    ...batching,
    inputs: runner.inputs,
    model: mv.name,
    version: mv.version,
    ...(metrics === undefined ? {} : { observer: metrics.batches(mv.name, mv.version) }),
  });
  metrics?.modelLoaded(mv.name, mv.version, loadSeconds, warmupSeconds, batcher);
  return {
    name: mv.name,
    version: mv.version,
    inputs: runner.inputs,
    outputs: runner.outputs,
    batching,
    runner,
    batcher,
    async close(timeoutMs = 30_000) {
      try {
        await batcher.close(timeoutMs);
      } finally {
        await runner.dispose();
      }
    },
  };
}

/** ONNX Runtime's share of the load options, with the model's bytes. */
function onnxOptions(model: Uint8Array, options: LoadModelOptions) {
  // An explicit intraOpThreads wins over the one 'per-cpu' would pick.
  return {
    model,
    ...(options.instances === 'per-cpu' ? perCpuInstances(model.byteLength) : options.instances === undefined ? {} : { instances: options.instances }),
    ...(options.intraOpThreads === undefined ? {} : { intraOpThreads: options.intraOpThreads }),
    ...(options.interOpThreads === undefined ? {} : { interOpThreads: options.interOpThreads }),
    ...(options.createSession === undefined ? {} : { createSession: options.createSession }),
  };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
