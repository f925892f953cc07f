/**
 * An ONNX Runtime session in a worker thread (the model thread, `thread.ts`).
 *
 * onnxruntime-node's `session.run()` is synchronous on the calling thread (it
 * only defers the call with setImmediate), so an in-thread session stops the
 * event loop for the whole inference: no decoding, encoding or I/O can overlap
 * it. Here the session lives in a worker thread and the main thread stays free:
 *
 * ```
 *  main thread                                   model thread (one per session)
 *  ───────────                                   ───────────────────────────────
 *  run(feeds) ── {id, inputs: shared buffer ──►  copy into its own buffer ─► session.run(feeds)
 *                ids} ────────────────────────    (sync, uses the intra-op thread pool)
 *  outputs ◄──── {id, outputs (transferred, ◄──
 *                zero-copy), buffer ids} ─────
 * ```
 *
 * Runs are queued in the thread, so with maxInFlightBatches ≥ 2 the next batch is already
 * waiting when one finishes. Inputs live in SharedArrayBuffers from a pool ({@link BufferPool}):
 * the batcher gathers batches straight into them (`allocate()`), each crosses to the thread once
 * (later runs name it by id) and comes back to the pool with the results. Nothing is transferred
 * per run: a transferred buffer is new external memory to V8 on each side, which it answers with
 * full GCs. The thread copies a run's inputs into memory of its own, because onnxruntime-node
 * refuses tensors over shared memory ("Invalid argument").
 */
import { existsSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { InferenceError, ModelLoadError } from '@inferq/shared';
import { BufferPool } from '../buffer-pool.js';
import { WIRE_DTYPES } from './messages.js';
import type { FromThread, SessionMeta, ThreadData, ToThread, WireDType, WireInput } from './messages.js';
import type { OrtSessionFactory } from './session.js';

const BUILT_THREAD = new URL('./thread.js', import.meta.url);
const SOURCE_THREAD = new URL('../../../dev/thread-from-source.mjs', import.meta.url);

/**
 * The model thread's entry file. Built (dist/), `thread.js` sits next to this file and runs as
 * it is; from sources (vitest, `node --import tsx`) only `thread.ts` exists, and on Node 20 loader
 * hooks given as flags, the parent's or the worker's own `execArgv`, do not reach a worker
 * thread's modules (nodejs/node#47747), so `workers/dev/thread-from-source.mjs` registers tsx from
 * inside the thread (tsx is a dev dependency; the build and the package never use it).
 */
export function threadEntry(): URL {
  return existsSync(BUILT_THREAD) ? BUILT_THREAD : SOURCE_THREAD;
}

const wireDTypes: ReadonlySet<string> = new Set(WIRE_DTYPES);

function isWireDType(type: string): type is WireDType {
  return wireDTypes.has(type);
}

interface Pending {
  resolve(outputs: Record<string, ort.Tensor>): void;
  reject(err: Error): void;
}

/** Creates the session in a new model thread; rejects with the runtime's message if it cannot be created. */
export const workerSessionFactory: OrtSessionFactory = async (model, options) => {
  const thread = new ModelThread({ model, options });
  const meta = await thread.ready;
  return {
    ...meta,
    run: (feeds) => thread.run(feeds),
    allocate: (bytes) => thread.allocate(bytes),
    release: () => thread.release(),
  };
};

/** The main side of one model thread: its runs in flight and the shared buffers it knows. */
class ModelThread {
  /** Settles when the session is created (with its names and metadata) or cannot be. */
  readonly ready: Promise<SessionMeta>;
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private readonly pool = BufferPool.shared();
  /** Buffers handed out by allocate() and not yet passed to run(). */
  private readonly lent = new WeakSet<ArrayBufferLike>();
  /** The shared buffers the thread knows, by id (and back); a buffer the pool drops is forgotten on both sides. */
  private readonly ids = new WeakMap<SharedArrayBuffer, number>();
  private readonly byId = new Map<number, SharedArrayBuffer>();
  private nextBuf = 0;
  private nextRun = 0;
  private dead: Error | undefined;
  private onReleased: (() => void) | undefined;
  private failLoad: (err: Error) => void = () => undefined;
  private loaded: (meta: SessionMeta) => void = () => undefined;

  constructor(data: ThreadData) {
    this.ready = new Promise<SessionMeta>((resolve, reject) => {
      this.loaded = resolve;
      this.failLoad = reject;
    });
    this.worker = new Worker(threadEntry(), {
      workerData: data,
      // The thread only computes; it must not keep a finished process alive on its own.
      stdout: false,
      stderr: false,
    });
    this.worker.on('error', (err) => this.die(err));
    this.worker.on('exit', (code) => this.die(new InferenceError(`onnxruntime worker thread exited (code ${code})`)));
    this.worker.on('message', (msg: FromThread) => this.receive(msg));
  }

  run(feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
    if (this.dead !== undefined) return Promise.reject(this.dead);
    const views: { name: string; type: WireDType; dims: readonly number[]; src: ArrayBufferView }[] = [];
    for (const [name, t] of Object.entries(feeds)) {
      if (!isWireDType(t.type) || !ArrayBuffer.isView(t.data)) {
        return Promise.reject(new InferenceError(`input "${name}": dtype ${t.type} cannot be sent to the model thread`));
      }
      views.push({ name, type: t.type, dims: t.dims, src: t.data });
    }
    const inputs: WireInput[] = [];
    const used = new Set<SharedArrayBuffer>();
    for (const { name, type, dims, src } of views) {
      let sab: SharedArrayBuffer;
      if (this.lent.has(src.buffer) && src.byteOffset === 0 && !used.has(src.buffer as SharedArrayBuffer)) {
        this.lent.delete(src.buffer); // memory from allocate(): taken over as it is
        sab = src.buffer as SharedArrayBuffer;
      } else {
        // Copied once, into a pooled buffer: the view's own buffer may be shared (a Parquet chunk, an envelope).
        sab = this.pool.take(src.byteLength);
        new Uint8Array(sab, 0, src.byteLength).set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
      }
      used.add(sab);
      let buf = this.ids.get(sab);
      const first = buf === undefined;
      if (buf === undefined) {
        buf = this.nextBuf++;
        this.ids.set(sab, buf);
        this.byId.set(buf, sab);
      }
      inputs.push({ name, type, dims, buf, byteLength: src.byteLength, ...(first ? { sab } : {}) });
    }
    const id = this.nextRun++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.send({ type: 'run', id, inputs });
    });
  }

  allocate(bytes: number): SharedArrayBuffer {
    const buf = this.pool.take(bytes);
    this.lent.add(buf);
    return buf;
  }

  release(): Promise<void> {
    if (this.dead !== undefined) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.onReleased = () => {
        this.onReleased = undefined;
        resolve();
      };
      this.send({ type: 'release' });
    }).then(() => this.worker.terminate().then(() => undefined));
  }

  private receive(msg: FromThread): void {
    switch (msg.type) {
      case 'ready':
        this.loaded({ inputNames: msg.inputNames, outputNames: msg.outputNames, inputMetadata: msg.inputMetadata, outputMetadata: msg.outputMetadata });
        break;
      case 'error':
        void this.worker.terminate();
        this.die(new ModelLoadError(msg.message));
        break;
      case 'result': {
        this.giveBack(msg.inputs);
        const out: Record<string, ort.Tensor> = {};
        for (const t of msg.outputs) out[t.name] = new ort.Tensor(t.type, t.data, t.dims);
        this.settle(msg.id)?.resolve(out);
        break;
      }
      case 'failed':
        this.giveBack(msg.inputs);
        this.settle(msg.id)?.reject(new InferenceError(msg.message));
        break;
      case 'released':
        this.onReleased?.();
        break;
    }
  }

  /** The run `id` waits for, no longer pending. */
  private settle(id: number): Pending | undefined {
    const p = this.pending.get(id);
    this.pending.delete(id);
    return p;
  }

  /** A run's shared buffers back to the pool; the ones it drops are forgotten by the thread too. */
  private giveBack(bufIds: readonly number[]): void {
    for (const b of bufIds) {
      const sab = this.byId.get(b);
      if (sab === undefined || this.pool.give(sab)) continue;
      this.byId.delete(b);
      this.ids.delete(sab);
      this.send({ type: 'forget', buf: b });
    }
  }

  private die(err: Error): void {
    this.dead ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.failLoad(err); // no-op once ready
    this.onReleased?.();
  }

  private send(msg: ToThread): void {
    this.worker.postMessage(msg);
  }
}
