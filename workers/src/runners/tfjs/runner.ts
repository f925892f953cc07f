/**
 * TensorFlow.js runner: a graph model, a layers model or (with tfjs-node) a SavedModel, behind
 * the same {@link Runner} interface as ONNX Runtime. The backend is the process's
 * ({@link tfjsBackend}): tfjs-node-gpu, tfjs-node, else WASM with one warning.
 *
 *   run(batch) ─► check names, dtypes, shapes ─► tf.tensor per input ─► execute (tidy) ─► copy out ─► dispose all
 *
 * Every tensor a run makes is disposed before it returns, whether it succeeds or not.
 */
import { InferenceError, validateInputs } from '@inferq/shared';
import type { Tensor, TensorMap, TensorSpec } from '@inferq/shared';
import type * as tfjs from '@tensorflow/tfjs';
import type { Logger } from '../../logging.js';
import type { Device, Runner } from '../runner.js';
import { tfjsBackend } from './backend.js';
import type { TfBackend } from './backend.js';
import { loadTfModel } from './model.js';
import type { TfModel, TfjsFormat } from './model.js';
import { hasDynamicInnerDims, reconcileSpecs, zeroBatch } from '../specs.js';

export interface TfjsRunnerOptions {
  /** The version folder holding `model.json` (+ weight files) or `saved_model.pb`. */
  readonly dir: string;
  readonly format: TfjsFormat;
  readonly name: string;
  readonly version: string;
  /** Requested device. Default cpu. */
  readonly device?: Device;
  /** Declared inputs/outputs from config.yaml; checked against the model's signature. Default: the signature's. */
  readonly inputs?: readonly TensorSpec[] | undefined;
  readonly outputs?: readonly TensorSpec[] | undefined;
  readonly logger: Logger;
  /** The backend to run on. Default: the process's ({@link tfjsBackend}); tests pass their own. */
  readonly backend?: (device: Device, logger: Logger) => Promise<TfBackend>;
}

export class TfjsRunner implements Runner {
  private readonly opts: TfjsRunnerOptions;
  private readonly where: string;
  private backend: TfBackend | undefined;
  private model: TfModel | undefined;
  private ins: readonly TensorSpec[] = [];
  private outs: readonly TensorSpec[] = [];

  constructor(options: TfjsRunnerOptions) {
    this.opts = options;
    this.where = `model ${options.name}:${options.version} (${options.dir})`;
  }

  get inputs(): readonly TensorSpec[] {
    return this.ins;
  }

  get outputs(): readonly TensorSpec[] {
    return this.outs;
  }

  get device(): Device {
    return this.backend?.device ?? { kind: 'cpu' };
  }

  /** The TF.js backend in use (`tensorflow`, `wasm`), after load. */
  get backendName(): string | undefined {
    return this.backend?.name;
  }

  async load(): Promise<void> {
    const backend = await (this.opts.backend ?? tfjsBackend)(this.opts.device ?? { kind: 'cpu' }, this.opts.logger);
    const model = await loadTfModel(backend, this.opts.format, this.opts.dir, this.where);
    try {
      this.ins = reconcileSpecs('input', model.inputs, this.opts.inputs, this.where);
      this.outs = reconcileSpecs('output', model.outputs, this.opts.outputs, this.where);
    } catch (err) {
      model.dispose();
      throw err;
    }
    this.backend = backend;
    this.model = model;
  }

  async warmup(batchSizes: readonly number[] = [1]): Promise<void> {
    if (hasDynamicInnerDims(this.ins)) {
      this.opts.logger.info('warm-up skipped: an input has a dynamic non-batch dimension');
      return;
    }
    for (const rows of batchSizes) {
      const feeds = zeroBatch(this.ins, rows);
      await this.run(feeds);
    }
  }

  async run(inputs: TensorMap): Promise<TensorMap> {
    const { model, backend } = this;
    if (model === undefined || backend === undefined) throw new InferenceError(`model ${this.opts.name}:${this.opts.version} is not loaded`);
    // Same rules as a job's validation: a caller that skipped it gets a message naming the value, not a TF.js stack.
    validateInputs(inputs, this.ins, { model: this.opts.name, version: this.opts.version, nonFinite: 'pass' });
    const { tf } = backend;
    const feeds: tfjs.NamedTensorMap = {};
    let results: tfjs.Tensor[] = [];
    try {
      for (const spec of this.ins) {
        const t = inputs[spec.name]!;
        feeds[spec.name] = tf.tensor(t.data as tfjs.TypedArray, [...t.shape], spec.dtype as tfjs.DataType);
      }
      results = await model.execute(feeds);
      const out: Record<string, Tensor> = {};
      for (const [i, spec] of this.outs.entries()) {
        const r = results[i];
        if (r === undefined) throw new InferenceError(`model ${this.opts.name}:${this.opts.version} produced no output "${spec.name}"`);
        if (r.dtype !== spec.dtype) throw new InferenceError(`model ${this.opts.name}:${this.opts.version}: output "${spec.name}" is ${r.dtype}, its signature says ${spec.dtype}`);
        // data() copies out of the backend's memory, so the tensor can go at once.
        out[spec.name] = { dtype: spec.dtype, shape: r.shape, data: (await r.data()) as Tensor['data'] };
      }
      return out;
    } catch (cause) {
      if (cause instanceof InferenceError) throw cause;
      throw new InferenceError(`model ${this.opts.name}:${this.opts.version} failed: ${(cause as Error).message}`, {
        cause,
        model: this.opts.name,
        version: this.opts.version,
        retriable: false,
      });
    } finally {
      tf.dispose(Object.values(feeds));
      tf.dispose(results);
    }
  }

  async dispose(): Promise<void> {
    const model = this.model;
    this.model = undefined;
    model?.dispose();
  }
}
