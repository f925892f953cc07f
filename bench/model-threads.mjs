// Which threads of a worker process run the model, for bench/drain.ts: preloaded into the
// `inferq worker` process (`--import ./bench/model-threads.mjs`) with INFERQ_BENCH_THREADS set to a
// file, it appends "model <tid>" for every ONNX model thread and "pool <tid>" for every thread its
// onnxruntime session creates (the intra-op pool), so the bench can sum their CPU from /proc.
//
// Plain JavaScript on purpose: on Node 20 neither `--import` nor tsx's hooks reach worker threads,
// so the main thread swaps the model thread's entry for this file, which records and then imports it.
import { appendFileSync, readdirSync, readlinkSync } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { URL, pathToFileURL } from 'node:url';
import workerThreads from 'node:worker_threads';

const out = process.env['INFERQ_BENCH_THREADS'];
const ENTRY_FLAG = '--inferq-bench-model-entry=';

const tasks = () => new Set(readdirSync('/proc/self/task'));
const record = (kind, tid) => appendFileSync(out, `${kind} ${tid}\n`);

/** A model thread's data as worker-session.ts sends it: the model bytes and the session options. */
const isModelThread = (data) => data !== null && typeof data === 'object' && data.model instanceof Uint8Array && typeof data.options === 'object';

if (out === undefined || out === '') {
  // Not asked for: change nothing.
} else if (workerThreads.isMainThread) {
  const Original = workerThreads.Worker;
  class ProbedWorker extends Original {
    constructor(filename, options) {
      if (options?.eval === true || !isModelThread(options?.workerData)) {
        super(filename, options);
        return;
      }
      const entry = filename instanceof URL ? filename.href : pathToFileURL(String(filename)).href;
      super(new URL(import.meta.url), { ...options, argv: [...(options.argv ?? []), `${ENTRY_FLAG}${entry}`] });
    }
  }
  workerThreads.Worker = ProbedWorker;
  syncBuiltinESMExports();
} else {
  const entry = process.argv.find((a) => a.startsWith(ENTRY_FLAG))?.slice(ENTRY_FLAG.length);
  if (entry === undefined) throw new Error(`bench/model-threads.mjs started as a thread without ${ENTRY_FLAG}`);
  record('model', readlinkSync('/proc/thread-self').split('/').pop());
  // onnxruntime-node is CommonJS: this require returns the very module object the thread imports.
  const ort = createRequire(entry)('onnxruntime-node');
  const create = ort.InferenceSession.create.bind(ort.InferenceSession);
  ort.InferenceSession.create = async (...args) => {
    const before = tasks();
    const session = await create(...args);
    for (const tid of tasks()) if (!before.has(tid)) record('pool', tid);
    return session;
  };
  await import(entry);
}
