/**
 * An ONNX Runtime session in a worker thread.
 *
 * onnxruntime-node's `session.run()` is synchronous on the calling thread (it
 * only defers the call with setImmediate), so an in-thread session stops the
 * event loop for the whole inference: no decoding, encoding or I/O can overlap
 * it. Here the session lives in a worker thread and the main thread stays free:
 *
 * ```
 *  main thread                                   worker thread (one per session)
 *  ───────────                                   ───────────────────────────────
 *  run(feeds) ── {id, inputs} (copied once, ──►  session.run(feeds)   (sync, uses the
 *                transferred) ────────────────    intra-op thread pool)
 *  outputs ◄──── {id, outputs} (transferred, ◄──
 *                zero-copy) ──────────────────
 * ```
 *
 * Runs are queued in the worker, so with maxInFlightBatches ≥ 2 the next batch
 * is already waiting when one finishes. Input buffers come back with the results and
 * are reused ({@link BufferPool}); the batcher gathers batches straight into them
 * (`allocate()`), so a gathered batch crosses to the worker without another copy.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { OrtSession, OrtSessionFactory } from './ort-session.js';

const require = createRequire(import.meta.url);
const ORT_MODULE = require.resolve('onnxruntime-node');

// Plain JavaScript, run with `eval: true` so it works the same from sources (tsx, vitest) and dist.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const ort = require(workerData.ortModule);
const meta = (m) => m.map((x) => ({ name: x.name, isTensor: x.isTensor, type: x.type, shape: x.shape }));
const errorOf = (e) => String((e && e.message) || e);
ort.InferenceSession.create(workerData.model, workerData.options).then(
  (session) => {
    parentPort.postMessage({
      type: 'ready',
      inputNames: session.inputNames,
      outputNames: session.outputNames,
      inputMetadata: meta(session.inputMetadata),
      outputMetadata: meta(session.outputMetadata),
    });
    parentPort.on('message', async (msg) => {
      if (msg.type === 'release') {
        await session.release();
        parentPort.postMessage({ type: 'released' });
        return;
      }
      try {
        const feeds = {};
        for (const t of msg.inputs) feeds[t.name] = new ort.Tensor(t.type, t.data, t.dims);
        const results = await session.run(feeds);
        const outputs = [];
        const transfer = [];
        for (const [name, t] of Object.entries(results)) {
          outputs.push({ name, type: t.type, dims: t.dims, data: t.data });
          if (t.data && t.data.buffer instanceof ArrayBuffer) transfer.push(t.data.buffer);
        }
        // The input buffers go back to the main thread's pool (no allocation per batch there).
        const inputs = [];
        for (const t of msg.inputs) if (!transfer.includes(t.data.buffer)) { inputs.push(t.data.buffer); transfer.push(t.data.buffer); }
        parentPort.postMessage({ type: 'result', id: msg.id, outputs, inputs }, transfer);
      } catch (e) {
        parentPort.postMessage({ type: 'failed', id: msg.id, message: errorOf(e) });
      }
    });
  },
  (e) => parentPort.postMessage({ type: 'error', message: errorOf(e) }),
);
`;

interface WireTensor {
  readonly name: string;
  readonly type: ort.Tensor.Type;
  readonly dims: readonly number[];
  readonly data: ort.Tensor.DataType;
}

type FromWorker =
  | {
      type: 'ready';
      inputNames: string[];
      outputNames: string[];
      inputMetadata: ort.InferenceSession.ValueMetadata[];
      outputMetadata: ort.InferenceSession.ValueMetadata[];
    }
  | { type: 'error'; message: string }
  | { type: 'result'; id: number; outputs: WireTensor[]; inputs: ArrayBuffer[] }
  | { type: 'failed'; id: number; message: string }
  | { type: 'released' };

interface Pending {
  resolve(outputs: Record<string, ort.Tensor>): void;
  reject(err: Error): void;
}

/** Creates the session in a new worker thread; rejects with the runtime's message if it cannot be created. */
export const workerSessionFactory: OrtSessionFactory = (model, options) =>
  new Promise<OrtSession>((resolveSession, rejectSession) => {
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { ortModule: ORT_MODULE, model, options },
      // The worker only computes; it must not keep a finished process alive on its own.
      stdout: false,
      stderr: false,
    });
    const pending = new Map<number, Pending>();
    const pool = new BufferPool();
    /** Buffers handed out by allocate() and not yet passed to run(). */
    const lent = new WeakSet<ArrayBufferLike>();
    let nextId = 0;
    let ready = false;
    let dead: Error | undefined;
    let onReleased: (() => void) | undefined;

    const die = (err: Error): void => {
      dead ??= err;
      for (const p of pending.values()) p.reject(err);
      pending.clear();
      if (!ready) rejectSession(err);
      onReleased?.();
    };
    worker.on('error', (err) => die(err));
    worker.on('exit', (code) => die(new Error(`onnxruntime worker thread exited (code ${code})`)));
    worker.on('message', (msg: FromWorker) => {
      switch (msg.type) {
        case 'ready': {
          ready = true;
          const session: OrtSession = {
            inputNames: msg.inputNames,
            outputNames: msg.outputNames,
            inputMetadata: msg.inputMetadata,
            outputMetadata: msg.outputMetadata,
            run(feeds) {
              if (dead !== undefined) return Promise.reject(dead);
              const id = nextId++;
              const inputs: WireTensor[] = [];
              const transfer: ArrayBuffer[] = [];
              for (const [name, t] of Object.entries(feeds)) {
                const src = t.data as Float32Array;
                let data = src;
                if (lent.has(src.buffer) && src.byteOffset === 0 && src.byteLength === src.buffer.byteLength && !transfer.includes(src.buffer as ArrayBuffer)) {
                  lent.delete(src.buffer); // memory from allocate(): taken over as it is
                } else {
                  // Copied once, into a pooled buffer: the view's own buffer may be shared (a Parquet chunk, an envelope).
                  data = new (src.constructor as Float32ArrayConstructor)(pool.take(src.byteLength), 0, src.length);
                  data.set(src);
                }
                inputs.push({ name, type: t.type, dims: t.dims, data });
                transfer.push(data.buffer as ArrayBuffer);
              }
              return new Promise((resolve, reject) => {
                pending.set(id, { resolve, reject });
                worker.postMessage({ type: 'run', id, inputs }, transfer);
              });
            },
            allocate(bytes) {
              const buf = pool.take(bytes);
              lent.add(buf);
              return buf;
            },
            release() {
              if (dead !== undefined) return Promise.resolve();
              return new Promise<void>((resolve) => {
                onReleased = () => {
                  onReleased = undefined;
                  resolve();
                };
                worker.postMessage({ type: 'release' });
              }).then(() => worker.terminate().then(() => undefined));
            },
          };
          resolveSession(session);
          break;
        }
        case 'error':
          void worker.terminate();
          die(new Error(msg.message));
          break;
        case 'result': {
          for (const b of msg.inputs) pool.give(b);
          const p = pending.get(msg.id);
          pending.delete(msg.id);
          const out: Record<string, ort.Tensor> = {};
          for (const t of msg.outputs) out[t.name] = new ort.Tensor(t.type, t.data as Float32Array, t.dims);
          p?.resolve(out);
          break;
        }
        case 'failed': {
          const p = pending.get(msg.id);
          pending.delete(msg.id);
          p?.reject(new Error(msg.message));
          break;
        }
        case 'released':
          onReleased?.();
          break;
      }
    });
  });

/**
 * Input buffers that travel to the worker thread and back, reused by byte size: a batch
 * costs a copy but no allocation (a fresh 1 MB ArrayBuffer per batch made V8 run a full GC
 * every few hundred milliseconds). At most `perSize` buffers of one size are kept, and
 * `maxBytes` in all.
 */
export class BufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private bytes = 0;

  constructor(
    private readonly perSize = 4,
    private readonly maxBytes = 64 * 1024 * 1024,
  ) {}

  take(byteLength: number): ArrayBuffer {
    const list = this.free.get(byteLength);
    const buf = list?.pop();
    if (buf === undefined) return new ArrayBuffer(byteLength);
    this.bytes -= byteLength;
    return buf;
  }

  give(buf: ArrayBuffer): void {
    const n = buf.byteLength;
    if (n === 0 || this.bytes + n > this.maxBytes) return;
    const list = this.free.get(n);
    if (list === undefined) this.free.set(n, [buf]);
    else if (list.length < this.perSize) list.push(buf);
    else return;
    this.bytes += n;
  }

  /** Bytes held for reuse. */
  get heldBytes(): number {
    return this.bytes;
  }
}
