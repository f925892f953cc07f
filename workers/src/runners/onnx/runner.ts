/**
 * ONNX Runtime runner (onnxruntime-node). One InferenceSession per model version and
 * instance per process (`instances`, like Triton's instance_group count: each its own
 * worker thread, runs go to the least busy); the device is chosen per process: `cpu` or
 * `cuda:N` (the CUDA execution provider with that device id). When CUDA cannot be used
 * the runner falls back to CPU and says so in one warning line — never silently.
 */
import * as ort from 'onnxruntime-node';
import { ConfigError, DTYPE_BYTES, InferenceError, ModelLoadError, allocate, isDType, viewOf } from '@inferq/shared';
import type { DType, Tensor, TensorMap, TensorSpec, TypedArray } from '@inferq/shared';
import type { Logger } from '../../logging.js';
import { cpuBudget, memoryBudget } from '../budget.js';
import { formatDevice } from '../runner.js';
import { hasDynamicInnerDims, reconcileSpecs, zeroBatch } from '../specs.js';
import type { Device, Runner } from '../runner.js';
import type { OrtSession, OrtSessionFactory } from './session.js';
import { workerSessionFactory } from './worker-session.js';

export interface OnnxRunnerOptions {
  /** The model bytes (the repository reads them from disk or HDFS). */
  readonly model: Uint8Array;
  /** Where the model came from, for messages. */
  readonly source: string;
  readonly name: string;
  readonly version: string;
  /** Requested device. Default cpu. */
  readonly device?: Device;
  /** Declared inputs/outputs from config.yaml; checked against the model. Default: read from the model. */
  readonly inputs?: readonly TensorSpec[] | undefined;
  readonly outputs?: readonly TensorSpec[] | undefined;
  /**
   * Sessions of the model, each in its own thread, batches spread over them (Triton's
   * instance_group count). Default 1. Several single-threaded instances beat one session
   * whose threads split every operator when batches queue up: an instance needs no
   * per-operator handoff between threads, and when other work takes a core only that
   * instance waits (bench/README.md has the figures).
   */
  readonly instances?: number;
  /** Threads inside one operator, per instance. Default: the CPUs the process may use ({@link cpuBudget}) shared out over the instances, at least 1. */
  readonly intraOpThreads?: number;
  /** Threads across independent operators. Default 1. */
  readonly interOpThreads?: number;
  /**
   * Let idle intra-op threads spin (onnxruntime's own default). Default false: spinning
   * steals the core the event loop needs.
   */
  readonly spinning?: boolean;
  readonly logger: Logger;
  /**
   * Creates the session. Default: {@link workerSessionFactory} (a worker thread, so inference
   * overlaps the event loop); {@link inThreadSessionFactory} runs on the calling thread.
   */
  readonly createSession?: OrtSessionFactory;
}

interface Instance {
  readonly session: OrtSession;
  inFlight: number;
}

/**
 * Instances and threads for offline throughput work (`inferq predict`, `inferq precompute`):
 * on the CPU one single-threaded instance per CPU (the CPUs a container's limits allow),
 * unless the flags say otherwise (`--instances`, `--threads`). A serving worker keeps one
 * instance over all CPUs (a lone batch finishes sooner), and so does a GPU (it parallelises
 * inside each run; more instances would hold more copies of the model in its memory).
 */
export function throughputThreads(
  flags: { readonly instances?: number | undefined; readonly threads?: number | undefined },
  device: Device = { kind: 'cpu' },
): { instances?: number | 'per-cpu'; intraOpThreads?: number } {
  if (flags.instances === undefined && flags.threads === undefined && device.kind === 'cpu') return { instances: 'per-cpu' };
  return { ...(flags.instances === undefined ? {} : { instances: flags.instances }), ...(flags.threads === undefined ? {} : { intraOpThreads: flags.threads }) };
}

/**
 * `instances: 'per-cpu'` for a model file of `modelBytes`: one single-threaded instance per
 * CPU, as long as their copies of the model (~3× the file each: weights, prepacked weights,
 * working memory) fit in a quarter of the memory; fewer, with the CPUs shared out over them,
 * when they do not. CPUs and memory are what the process may use ({@link cpuBudget},
 * {@link memoryBudget}: a container's limits, else the machine's).
 */
export function perCpuInstances(modelBytes: number, memoryBytes = memoryBudget(), cpus = cpuBudget()): { instances: number; intraOpThreads: number } {
  const byMemory = Math.max(1, Math.floor(memoryBytes / 4 / (3 * Math.max(1, modelBytes))));
  const instances = Math.max(1, Math.min(cpus, byMemory));
  return { instances, intraOpThreads: Math.max(1, Math.floor(cpus / instances)) };
}

export class OnnxRunner implements Runner {
  private readonly opts: OnnxRunnerOptions;
  private instances: Instance[] = [];
  /** Which instance lent a buffer from allocate(): a batch gathered into it runs there. */
  private readonly lender = new WeakMap<ArrayBufferLike, Instance>();
  private ins: readonly TensorSpec[] = [];
  private outs: readonly TensorSpec[] = [];
  private actualDevice: Device = { kind: 'cpu' };

  constructor(options: OnnxRunnerOptions) {
    this.opts = options;
  }

  get inputs(): readonly TensorSpec[] {
    return this.ins;
  }

  get outputs(): readonly TensorSpec[] {
    return this.outs;
  }

  get device(): Device {
    return this.actualDevice;
  }

  /** Session options for a device; exported behaviour is tested exactly. */
  sessionOptions(device: Device): ort.InferenceSession.SessionOptions {
    const executionProviders: ort.InferenceSession.ExecutionProviderConfig[] =
      device.kind === 'cuda' ? [{ name: 'cuda', deviceId: device.id }] : ['cpu'];
    return {
      executionProviders,
      intraOpNumThreads: this.opts.intraOpThreads ?? Math.max(1, Math.floor(cpuBudget() / (this.opts.instances ?? 1))),
      interOpNumThreads: this.opts.interOpThreads ?? 1,
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      // Idle pool threads sleep instead of spinning: the event loop (decode, encode, I/O) shares these cores.
      ...(this.opts.spinning === true ? {} : { extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } } }),
    };
  }

  async load(): Promise<void> {
    const create = this.opts.createSession ?? workerSessionFactory;
    const requested = this.opts.device ?? { kind: 'cpu' };
    const where = `model ${this.opts.name}:${this.opts.version} (${this.opts.source})`;
    const count = this.opts.instances ?? 1;
    if (!Number.isSafeInteger(count) || count < 1) throw new ConfigError(`${where}: instances must be a positive integer, got ${count}`);
    let session: OrtSession;
    try {
      session = await create(this.opts.model, this.sessionOptions(requested));
      this.actualDevice = requested;
    } catch (cause) {
      if (requested.kind !== 'cuda') {
        throw new ModelLoadError(`${where} failed to load: ${(cause as Error).message}`, { cause, model: this.opts.name, version: this.opts.version });
      }
      this.opts.logger.warn(
        { err: cause, requested: formatDevice(requested), device: 'cpu' },
        `CUDA unavailable for ${formatDevice(requested)} (${firstLine(cause)}); falling back to CPU`,
      );
      try {
        session = await create(this.opts.model, this.sessionOptions({ kind: 'cpu' }));
      } catch (cpuCause) {
        throw new ModelLoadError(`${where} failed to load: ${(cpuCause as Error).message}`, { cause: cpuCause, model: this.opts.name, version: this.opts.version });
      }
      this.actualDevice = { kind: 'cpu' };
    }
    try {
      this.ins = reconcile('input', session.inputMetadata, this.opts.inputs, where);
      this.outs = reconcile('output', session.outputMetadata, this.opts.outputs, where);
    } catch (err) {
      await session.release();
      throw err;
    }
    const sessions = [session];
    try {
      // Further instances, on the device the first one got (a CUDA fallback is said once).
      for (let i = 1; i < count; i++) sessions.push(await create(this.opts.model, this.sessionOptions(this.actualDevice)));
    } catch (cause) {
      await Promise.all(sessions.map((s) => s.release()));
      throw new ModelLoadError(`${where}: instance ${sessions.length + 1} of ${count} failed to load: ${(cause as Error).message}`, { cause, model: this.opts.name, version: this.opts.version });
    }
    this.instances = sessions.map((s) => ({ session: s, inFlight: 0 }));
  }

  /** Instances in this runner (after load()). */
  get instanceCount(): number {
    return this.instances.length;
  }

  async warmup(batchSizes: readonly number[] = [1]): Promise<void> {
    if (hasDynamicInnerDims(this.ins)) {
      this.opts.logger.info('warm-up skipped: an input has a dynamic non-batch dimension');
      return;
    }
    for (const rows of batchSizes) {
      const feeds = zeroBatch(this.ins, rows);
      // Every instance, at once: least-busy dispatch sends the concurrent runs to different ones.
      await Promise.all(this.instances.map(() => this.run(feeds)));
    }
  }

  async run(inputs: TensorMap): Promise<TensorMap> {
    if (this.instances.length === 0) throw new InferenceError(`model ${this.opts.name}:${this.opts.version} is not loaded`);
    const feeds: Record<string, ort.Tensor> = {};
    let instance: Instance | undefined;
    for (const spec of this.ins) {
      const t = inputs[spec.name];
      if (t === undefined) throw new InferenceError(`batch lacks input "${spec.name}"`);
      feeds[spec.name] = new ort.Tensor(t.dtype, t.data, t.shape);
      instance ??= this.lender.get(t.data.buffer);
    }
    instance ??= this.leastBusy()!;
    let results: Record<string, ort.Tensor>;
    instance.inFlight++;
    try {
      results = await instance.session.run(feeds);
    } catch (cause) {
      throw new InferenceError(`model ${this.opts.name}:${this.opts.version} failed: ${(cause as Error).message}`, {
        cause,
        model: this.opts.name,
        version: this.opts.version,
        retriable: false,
      });
    } finally {
      instance.inFlight--;
    }
    const out: Record<string, Tensor> = {};
    for (const spec of this.outs) {
      const r = results[spec.name];
      if (r === undefined) throw new InferenceError(`model ${this.opts.name}:${this.opts.version} produced no output "${spec.name}"`);
      out[spec.name] = { dtype: spec.dtype, shape: r.dims, data: r.data as Tensor['data'] };
    }
    return out;
  }

  allocate(dtype: DType, length: number): TypedArray {
    // The instance that will run the batch lends its memory (a multi-input batch asks for
    // each input in turn before it runs: all go to the same instance).
    const instance = this.leastBusy();
    if (instance?.session.allocate === undefined) return allocate(dtype, length);
    const buffer = instance.session.allocate(length * DTYPE_BYTES[dtype]);
    this.lender.set(buffer, instance);
    return viewOf(dtype, buffer, 0, length);
  }

  async dispose(): Promise<void> {
    const all = this.instances;
    this.instances = [];
    await Promise.all(all.map((i) => i.session.release()));
  }

  /** The instance with the fewest runs in flight (the first of equals); undefined before load(). */
  private leastBusy(): Instance | undefined {
    let best = this.instances[0];
    for (const i of this.instances) if (i.inFlight < best!.inFlight) best = i;
    return best;
  }
}

function firstLine(err: unknown): string {
  const m = err instanceof Error ? err.message : String(err);
  return m.split('\n')[0]!.slice(0, 200);
}

/** Specs from the model, checked against (and refined by) the declared ones. */
function reconcile(
  kind: 'input' | 'output',
  metadata: readonly ort.InferenceSession.ValueMetadata[],
  declared: readonly TensorSpec[] | undefined,
  where: string,
): TensorSpec[] {
  const fromModel = metadata.map((m): TensorSpec => {
    if (!m.isTensor) throw new ModelLoadError(`${where}: ${kind} "${m.name}" is not a tensor; only tensor ${kind}s are supported`);
    if (!isDType(m.type)) {
      throw new ModelLoadError(`${where}: ${kind} "${m.name}" has dtype ${m.type}; supported: float32, float64, int32, int64, uint8, int8, bool`);
    }
    return { name: m.name, dtype: m.type, shape: m.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : -1)) };
  });
  return reconcileSpecs(kind, fromModel, declared, where);
}
