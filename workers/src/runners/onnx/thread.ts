/**
 * The model thread: one ONNX Runtime session, created from `workerData` ({@link ThreadData}) and
 * run for the main thread's `workerSessionFactory` (`worker-session.ts` draws both sides).
 * Runs are handled in arrival order; each copies its inputs out of the shared buffers into
 * memory of this thread's own, because onnxruntime-node refuses tensors over shared memory.
 *
 * Imports only onnxruntime-node and buffer-pool.ts (types aside): every thread loads it on its own.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { MessagePort, TransferListItem } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { BufferPool } from '../buffer-pool.js';
import type { FromThread, ThreadData, ToThread, WireDType, WireTensor } from './messages.js';

/** A typed view over this thread's copy of an input. */
const VIEWS: { readonly [T in WireDType]: (b: ArrayBuffer) => ort.Tensor.DataTypeMap[T] } = {
  float32: (b) => new Float32Array(b),
  float64: (b) => new Float64Array(b),
  int32: (b) => new Int32Array(b),
  int64: (b) => new BigInt64Array(b),
  uint8: (b) => new Uint8Array(b),
  int8: (b) => new Int8Array(b),
  bool: (b) => new Uint8Array(b),
};

function post(port: MessagePort, msg: FromThread, transfer: readonly TransferListItem[] = []): void {
  port.postMessage(msg, transfer);
}

function errorOf(e: unknown): string {
  return e instanceof Error && e.message !== '' ? e.message : String(e);
}

function plainMetadata(m: readonly ort.InferenceSession.ValueMetadata[]): ort.InferenceSession.ValueMetadata[] {
  return m.map((x) => (x.isTensor ? { name: x.name, isTensor: true, type: x.type, shape: x.shape } : { name: x.name, isTensor: false }));
}

/** Creates the session and serves runs over `port` until the main thread releases it. */
async function serve(port: MessagePort, data: ThreadData): Promise<void> {
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(data.model, data.options);
  } catch (e) {
    post(port, { type: 'error', message: errorOf(e) });
    return;
  }
  /** Shared buffers by id, each sent once by the main thread. */
  const shared = new Map<number, SharedArrayBuffer>();
  const own = BufferPool.plain();

  const run = async (msg: Extract<ToThread, { type: 'run' }>): Promise<void> => {
    const inputs = msg.inputs.map((t) => t.buf);
    // Every buffer sent for the first time is kept before anything can fail: the main thread
    // names it by id from now on, whatever becomes of this run.
    for (const t of msg.inputs) if (t.sab !== undefined) shared.set(t.buf, t.sab);
    const taken: ArrayBuffer[] = [];
    try {
      const feeds: Record<string, ort.Tensor> = {};
      for (const t of msg.inputs) {
        const from = shared.get(t.buf);
        if (from === undefined) throw new Error(`input "${t.name}": shared buffer ${t.buf} is unknown to the model thread`);
        const mine = own.take(t.byteLength);
        taken.push(mine);
        new Uint8Array(mine).set(new Uint8Array(from, 0, t.byteLength));
        feeds[t.name] = new ort.Tensor(t.type, VIEWS[t.type](mine), t.dims);
      }
      const results = await session.run(feeds);
      const outputs: WireTensor[] = [];
      const transfer: ArrayBuffer[] = [];
      for (const [name, t] of Object.entries(results)) {
        outputs.push({ name, type: t.type, dims: t.dims, data: t.data });
        const b = ArrayBuffer.isView(t.data) ? t.data.buffer : undefined;
        if (b instanceof ArrayBuffer && !transfer.includes(b)) transfer.push(b);
      }
      post(port, { type: 'result', id: msg.id, outputs, inputs }, transfer);
    } catch (e) {
      post(port, { type: 'failed', id: msg.id, message: errorOf(e), inputs });
    } finally {
      for (const b of taken) own.give(b);
    }
  };

  port.on('message', (msg: ToThread) => {
    switch (msg.type) {
      case 'run':
        void run(msg);
        break;
      case 'forget':
        shared.delete(msg.buf);
        break;
      case 'release':
        void session.release().then(() => post(port, { type: 'released' }));
        break;
    }
  });
  post(port, {
    type: 'ready',
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    inputMetadata: plainMetadata(session.inputMetadata),
    outputMetadata: plainMetadata(session.outputMetadata),
  });
}

// Started as a worker thread; imported anywhere else, it does nothing.
if (parentPort !== null) await serve(parentPort, workerData as ThreadData);
