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
 *  run(feeds) ── {id, inputs: shared buffer ──►  copy into its own buffer ─► session.run(feeds)
 *                ids} ────────────────────────    (sync, uses the intra-op thread pool)
 *  outputs ◄──── {id, outputs (transferred, ◄──
 *                zero-copy), buffer ids} ─────
 * ```
 *
 * Runs are queued in the worker, so with maxInFlightBatches ≥ 2 the next batch
 * is already waiting when one finishes. Inputs live in SharedArrayBuffers from a pool
 * ({@link BufferPool}): the batcher gathers batches straight into them (`allocate()`), each
 * crosses to the worker once (later runs name it by id) and comes back to the pool with the
 * results. Nothing is transferred per run: a transferred buffer is new external memory to V8 on
 * each side, and 1 MB of it per batch made the main thread run a full GC about every chunk of
 * a precompute run. The worker copies a run's inputs into memory of its own, because
 * onnxruntime-node refuses tensors over shared memory ("Invalid argument"); a 1 MB batch copies in
 * ~0.1 ms against ~15 ms of inference.
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
const ARRAYS = { float32: Float32Array, float64: Float64Array, int32: Int32Array, int64: BigInt64Array, uint8: Uint8Array, int8: Int8Array, bool: Uint8Array };
const shared = new Map(); // id → SharedArrayBuffer, sent once by the main thread
const own = new Map(); // byte size → this thread's buffers, reused run after run (at most 4 a size, 64 MB in all)
let ownBytes = 0;
const takeOwn = (n) => { const b = own.get(n)?.pop(); if (b === undefined) return new ArrayBuffer(n); ownBytes -= n; return b; };
const giveOwn = (b) => {
  const l = own.get(b.byteLength);
  if (ownBytes + b.byteLength > 64 * 1024 * 1024 || (l !== undefined && l.length >= 4)) return;
  if (l === undefined) own.set(b.byteLength, [b]); else l.push(b);
  ownBytes += b.byteLength;
};
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
      if (msg.type === 'forget') {
        shared.delete(msg.buf);
        return;
      }
      const taken = [];
      // Every buffer sent for the first time is kept before anything can fail: the main thread
      // names it by id from now on, whatever becomes of this run.
      for (const t of msg.inputs) if (t.sab !== undefined) shared.set(t.buf, t.sab);
      try {
        const feeds = {};
        for (const t of msg.inputs) {
          const from = shared.get(t.buf);
          if (from === undefined) throw new Error('input "' + t.name + '": shared buffer ' + t.buf + ' is unknown to the model thread');
          const mine = takeOwn(t.byteLength);
          taken.push(mine);
          new Uint8Array(mine).set(new Uint8Array(from, 0, t.byteLength));
          feeds[t.name] = new ort.Tensor(t.type, new ARRAYS[t.type](mine), t.dims);
        }
        const results = await session.run(feeds);
        const outputs = [];
        const transfer = [];
        for (const [name, t] of Object.entries(results)) {
          outputs.push({ name, type: t.type, dims: t.dims, data: t.data });
          if (t.data && t.data.buffer instanceof ArrayBuffer && !transfer.includes(t.data.buffer)) transfer.push(t.data.buffer);
        }
        // The shared input buffers go back to the main thread's pool.
        parentPort.postMessage({ type: 'result', id: msg.id, outputs, inputs: msg.inputs.map((t) => t.buf) }, transfer);
      } catch (e) {
        parentPort.postMessage({ type: 'failed', id: msg.id, message: errorOf(e), inputs: msg.inputs.map((t) => t.buf) });
      } finally {
        for (const b of taken) giveOwn(b);
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

/** An input as it crosses: a shared buffer's id (the buffer itself the first time), and its used bytes. */
interface WireInput {
  readonly name: string;
  readonly type: ort.Tensor.Type;
  readonly dims: readonly number[];
  readonly buf: number;
  readonly sab?: SharedArrayBuffer;
  readonly byteLength: number;
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
  | { type: 'result'; id: number; outputs: WireTensor[]; inputs: number[] }
  | { type: 'failed'; id: number; message: string; inputs: number[] }
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
    const pool = new BufferPool<SharedArrayBuffer>(undefined, undefined, (n) => new SharedArrayBuffer(n));
    /** Buffers handed out by allocate() and not yet passed to run(). */
    const lent = new WeakSet<ArrayBufferLike>();
    /** The shared buffers the worker knows, by id (and back); a buffer the pool drops is forgotten on both sides. */
    const ids = new WeakMap<SharedArrayBuffer, number>();
    const byId = new Map<number, SharedArrayBuffer>();
    let nextBuf = 0;
    const giveBack = (bufIds: readonly number[]): void => {
      for (const b of bufIds) {
        const sab = byId.get(b);
        if (sab === undefined || pool.give(sab)) continue;
        byId.delete(b);
        ids.delete(sab);
        worker.postMessage({ type: 'forget', buf: b });
      }
    };
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
              const inputs: WireInput[] = [];
              const used = new Set<SharedArrayBuffer>();
              for (const [name, t] of Object.entries(feeds)) {
                const src = t.data as Float32Array;
                let sab: SharedArrayBuffer;
                if (lent.has(src.buffer) && src.byteOffset === 0 && !used.has(src.buffer as SharedArrayBuffer)) {
                  lent.delete(src.buffer); // memory from allocate(): taken over as it is
                  sab = src.buffer as SharedArrayBuffer;
                } else {
                  // Copied once, into a pooled buffer: the view's own buffer may be shared (a Parquet chunk, an envelope).
                  sab = pool.take(src.byteLength);
                  new Uint8Array(sab, 0, src.byteLength).set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
                }
                used.add(sab);
                let buf = ids.get(sab);
                const first = buf === undefined;
                if (buf === undefined) {
                  buf = nextBuf++;
                  ids.set(sab, buf);
                  byId.set(buf, sab);
                }
                inputs.push({ name, type: t.type, dims: t.dims, buf, byteLength: src.byteLength, ...(first ? { sab } : {}) });
              }
              return new Promise((resolve, reject) => {
                pending.set(id, { resolve, reject });
                worker.postMessage({ type: 'run', id, inputs });
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
          giveBack(msg.inputs);
          const p = pending.get(msg.id);
          pending.delete(msg.id);
          const out: Record<string, ort.Tensor> = {};
          for (const t of msg.outputs) out[t.name] = new ort.Tensor(t.type, t.data as Float32Array, t.dims);
          p?.resolve(out);
          break;
        }
        case 'failed': {
          giveBack(msg.inputs);
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
 * Input buffers shared with the worker thread, reused by byte size: a batch costs a copy but
 * no allocation (a fresh 1 MB ArrayBuffer per batch made V8 run a full GC every few hundred
 * milliseconds). At most `perSize` buffers of one size are kept, and `maxBytes` in all.
 */
export class BufferPool<B extends ArrayBufferLike = ArrayBuffer> {
  private readonly free = new Map<number, B[]>();
  private bytes = 0;

  constructor(
    private readonly perSize = 4,
    private readonly maxBytes = 64 * 1024 * 1024,
    private readonly make: (byteLength: number) => B = (n) => new ArrayBuffer(n) as B,
  ) {}

  take(byteLength: number): B {
    const list = this.free.get(byteLength);
    const buf = list?.pop();
    if (buf === undefined) return this.make(byteLength);
    this.bytes -= byteLength;
    return buf;
  }

  /** Keeps `buf` for a later take(); false when it was dropped (the pool is full). */
  give(buf: B): boolean {
    const n = buf.byteLength;
    if (n === 0 || this.bytes + n > this.maxBytes) return false;
    const list = this.free.get(n);
    if (list === undefined) this.free.set(n, [buf]);
    else if (list.length < this.perSize) list.push(buf);
    else return false;
    this.bytes += n;
    return true;
  }

  /** Bytes held for reuse. */
  get heldBytes(): number {
    return this.bytes;
  }
}
