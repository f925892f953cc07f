/**
 * parquet-wasm, for the Parquet files the JavaScript decoder does not cover
 * (ZSTD / GZIP / Brotli / LZ4, delta or byte-stream-split encodings, nested
 * structs, timestamps, decimals, ...).
 *
 *   main thread                          worker thread (one per read)
 *   ───────────                          ─────────────
 *   'next' ───────────────────────────►  ParquetFile.fromFile(openAsBlob(path)).stream()
 *   RecordBatch ◄── Arrow IPC bytes ───  batch.intoIPCStream()   (transferred, not copied)
 *
 * Why a worker: a wasm panic on a corrupt page is thrown from inside
 * parquet-wasm's async machinery, i.e. as an *uncaught* exception that would
 * kill the whole process (and leaves the wasm instance poisoned). In a worker
 * it only ends that worker; the reader turns it into a DataIOError and the next
 * read gets a fresh instance. The worker pulls one batch per 'next', so memory
 * stays bounded, and decoding overlaps with the caller's work on the other core.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { RecordBatch, Schema } from 'apache-arrow';
import { RecordBatchReader } from 'apache-arrow';

const require = createRequire(import.meta.url);
/** Absolute path of parquet-wasm's Node build (CommonJS, instantiates wasm on load). */
const WASM_MODULE = require.resolve('parquet-wasm/node');

// Plain JavaScript, run with `eval: true` so it works the same from sources (tsx, vitest) and dist.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { openAsBlob } = require('node:fs');
const pw = require(workerData.wasmModule);
const send = (msg, ipc) => parentPort.postMessage({ ...msg, ipc }, ipc ? [ipc.buffer] : []);
(async () => {
  const file = await pw.ParquetFile.fromFile(await openAsBlob(workerData.path));
  if (workerData.op === 'schema') {
    send({ type: 'schema' }, file.schema().intoIPCStream());
    return;
  }
  const options = { batchSize: workerData.batchSize };
  if (workerData.columns) options.columns = workerData.columns;
  if (workerData.rowGroups) options.rowGroups = workerData.rowGroups;
  const reader = (await file.stream(options)).getReader();
  parentPort.on('message', () => {
    reader.read().then(
      (r) => (r.done ? send({ type: 'done' }) : send({ type: 'batch' }, r.value.intoIPCStream())),
      (err) => send({ type: 'error', message: String((err && err.message) || err) }),
    );
  });
  send({ type: 'ready' });
})().catch((err) => send({ type: 'error', message: String((err && err.message) || err) }));
`;

interface WorkerMessage {
  readonly type: 'schema' | 'ready' | 'batch' | 'done' | 'error';
  readonly ipc?: Uint8Array;
  readonly message?: string;
}

/** A failure inside parquet-wasm (error or panic). Internal: callers wrap it in a DataIOError. */
export class WasmReadError extends Error {
  override name = 'WasmReadError';
}

/** One worker running one operation; messages are consumed in order with `next()`. */
class WasmWorker {
  private readonly worker: Worker;
  private readonly queue: WorkerMessage[] = [];
  private waiting: { resolve: (m: WorkerMessage) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;

  constructor(data: Record<string, unknown>) {
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { ...data, wasmModule: WASM_MODULE } });
    this.worker.on('message', (m: WorkerMessage) => {
      if (this.waiting !== undefined) {
        const w = this.waiting;
        this.waiting = undefined;
        w.resolve(m);
      } else this.queue.push(m);
    });
    const fail = (err: Error): void => {
      this.failure ??= err;
      if (this.waiting !== undefined) {
        const w = this.waiting;
        this.waiting = undefined;
        w.reject(this.failure);
      }
    };
    this.worker.on('error', (err) => fail(new WasmReadError(`parquet-wasm failed: ${err.message}`, { cause: err })));
    this.worker.on('exit', (code) => fail(new WasmReadError(`parquet-wasm worker exited (code ${code})`)));
  }

  async next(): Promise<WorkerMessage> {
    const queued = this.queue.shift();
    const m =
      queued ??
      (this.failure !== undefined
        ? undefined
        : await new Promise<WorkerMessage>((resolve, reject) => {
            this.waiting = { resolve, reject };
          }));
    if (m === undefined) throw this.failure ?? new WasmReadError('parquet-wasm worker stopped');
    if (m.type === 'error') throw new WasmReadError(m.message ?? 'parquet-wasm failed');
    return m;
  }

  request(): void {
    this.worker.postMessage('next');
  }

  async stop(): Promise<void> {
    await this.worker.terminate();
  }
}

function decodeIpc(ipc: Uint8Array | undefined): { schema: Schema; batches: RecordBatch[] } {
  if (ipc === undefined) throw new WasmReadError('parquet-wasm sent no data');
  const reader = RecordBatchReader.from(ipc);
  reader.open();
  return { schema: reader.schema, batches: reader.readAll() };
}

/** The Arrow schema parquet-wasm (arrow-rs) derives for the file. */
export async function wasmSchema(path: string): Promise<Schema> {
  const w = new WasmWorker({ op: 'schema', path });
  try {
    return decodeIpc((await w.next()).ipc).schema;
  } finally {
    await w.stop();
  }
}

/** Streams the file through parquet-wasm, one batch in flight at a time. */
export async function* wasmBatches(
  path: string,
  options: { batchSize: number; columns: readonly string[] | undefined; rowGroups?: readonly number[] },
): AsyncGenerator<RecordBatch> {
  const w = new WasmWorker({ op: 'stream', path, batchSize: options.batchSize, columns: options.columns, rowGroups: options.rowGroups });
  try {
    await w.next(); // ready
    for (;;) {
      w.request();
      const m = await w.next();
      if (m.type === 'done') return;
      yield* decodeIpc(m.ipc).batches;
    }
  } finally {
    await w.stop();
  }
}
