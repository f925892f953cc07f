/**
 * TF.js (WASM backend, the fallback without tfjs-node) beside ONNX Runtime on the same MLPs,
 * same weights: rows/s per batch size, one run at a time.
 *
 *   ONNX Runtime (its default threads) │ ONNX Runtime, 1 thread │ TF.js graph model │ TF.js layers model
 *
 * Then TF.js WASM in worker threads, one model instance each, all running at once: whether
 * threads would help a TF.js worker the way they help ONNX Runtime (WASM runs one thread per
 * instance in Node).
 *
 *   node --conditions=inferq-source --import tsx bench/tfjs.ts      (BENCH_QUICK=1 for a short run)
 */
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { TensorMap } from '@inferq/shared';
import { buildMlp, randomMlp } from '../examples/build/onnx-builder.js';
import { writeGraphMlp, writeLayersMlp } from '../test/fixtures/tfjs/mlp.js';
import { tempDir } from '../test/helpers/models.js';
import { silentLogger } from '../workers/src/logging.js';
import { loadBackend } from '../workers/src/runners/tfjs/backend.js';
import type { TfBackend } from '../workers/src/runners/tfjs/backend.js';
import { TfjsRunner } from '../workers/src/runners/tfjs/runner.js';
import { QUICK, fmt, table } from './common.js';

const SECONDS = QUICK ? 0.3 : 1;
const MODELS = [
  { name: 'small', dims: [64, 256, 128, 1], batches: [1, 16, 64, 256, 1024, 4096] },
  { name: 'medium', dims: [256, 1024, 1024, 512, 1], batches: [1, 16, 64, 256, 1024] },
];

/** Rows/s of `run` on `batch`-row inputs, after a few untimed runs. */
async function rate(batch: number, run: (batch: number) => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 3; i++) await run(batch);
  let rows = 0;
  const start = performance.now();
  while (performance.now() - start < SECONDS * 1000) {
    await run(batch);
    rows += batch;
  }
  return rows / ((performance.now() - start) / 1000);
}

function inputs(batch: number, width: number): TensorMap {
  return { features: { dtype: 'float32', shape: [batch, width], data: Float32Array.from({ length: batch * width }, (_, i) => Math.sin(i)) } };
}

async function ortRates(model: Uint8Array, width: number, batches: readonly number[], threads?: number): Promise<number[]> {
  const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'], graphOptimizationLevel: 'all', ...(threads === undefined ? {} : { intraOpNumThreads: threads }) });
  const out: number[] = [];
  for (const b of batches) {
    const x = new ort.Tensor('float32', inputs(b, width)['features']!.data as Float32Array, [b, width]);
    out.push(await rate(b, () => session.run({ features: x })));
  }
  await session.release();
  return out;
}

async function tfjsRates(backend: TfBackend, dir: string, format: 'tfjs-graph' | 'tfjs-layers', width: number, batches: readonly number[]): Promise<number[]> {
  const runner = new TfjsRunner({ dir, format, name: 'bench', version: '1', logger: silentLogger(), backend: () => Promise.resolve(backend) });
  await runner.load();
  const out: number[] = [];
  for (const b of batches) {
    const x = inputs(b, width);
    out.push(await rate(b, () => runner.run(x)));
  }
  await runner.dispose();
  return out;
}

interface ThreadJob {
  readonly dir: string;
  readonly width: number;
  readonly batch: number;
}

/** Rows/s of `threads` worker threads each running TF.js WASM on its own copy of the model, all at once. */
async function threadedRate(job: ThreadJob, threads: number): Promise<number> {
  // Loader flags do not reach a worker thread's modules on Node 20: the thread registers tsx itself.
  const entry = `import('tsx/esm/api').then((m) => m.tsImport(${JSON.stringify(fileURLToPath(import.meta.url))}, ${JSON.stringify(import.meta.url)}))`;
  const workers = Array.from({ length: threads }, () => new Worker(entry, { eval: true, workerData: job }));
  try {
    await Promise.all(workers.map((w) => once(w, 'ready')));
    const start = performance.now();
    for (const w of workers) w.postMessage('go');
    const rows = await Promise.all(workers.map((w) => once(w, 'rows')));
    return (rows as number[]).reduce((a, b) => a + b, 0) / ((performance.now() - start) / 1000);
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

function once(w: Worker, kind: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: { kind: string; value?: unknown }) => {
      if (m.kind !== kind) return;
      w.off('message', onMessage);
      resolve(m.value);
    };
    w.on('message', onMessage);
    w.once('error', reject);
  });
}

async function threadMain(job: ThreadJob): Promise<void> {
  const backend = await loadBackend({ kind: 'cpu' }, silentLogger());
  const runner = new TfjsRunner({ dir: job.dir, format: 'tfjs-graph', name: 'bench', version: '1', logger: silentLogger(), backend: () => Promise.resolve(backend) });
  await runner.load();
  const x = inputs(job.batch, job.width);
  for (let i = 0; i < 3; i++) await runner.run(x);
  parentPort!.postMessage({ kind: 'ready' });
  await new Promise((resolve) => parentPort!.once('message', resolve));
  let rows = 0;
  const start = performance.now();
  while (performance.now() - start < SECONDS * 1000) {
    await runner.run(x);
    rows += job.batch;
  }
  parentPort!.postMessage({ kind: 'rows', value: rows });
  await runner.dispose();
}

/** TF.js WASM beside ONNX Runtime on the small and medium MLPs (also run by bench/main.ts). */
export async function tfjsBench(): Promise<void> {
  const backend = await loadBackend({ kind: 'cpu' }, silentLogger());
  const root = await tempDir('inferq-bench-tfjs-');
  console.log(`TF.js ${backend.tf.version.tfjs} on ${backend.name} (${backend.package}), onnxruntime-node ${ort.env.versions.common}; rows/s, one run at a time`);
  for (const m of MODELS) {
    const spec = randomMlp(m.dims, 3);
    const graphDir = join(root, m.name, 'graph');
    await writeGraphMlp(spec, graphDir);
    await writeLayersMlp(backend.tf, spec, join(root, m.name, 'layers'));
    const width = m.dims[0]!;
    const onnx = buildMlp(spec);
    const ortDefault = await ortRates(onnx, width, m.batches);
    const ortOne = await ortRates(onnx, width, m.batches, 1);
    const graph = await tfjsRates(backend, graphDir, 'tfjs-graph', width, m.batches);
    const layers = await tfjsRates(backend, join(root, m.name, 'layers'), 'tfjs-layers', width, m.batches);
    table(
      `${m.name} MLP (${m.dims.join('→')})`,
      ['batch', 'ORT default', 'ORT 1 thread', 'TF.js graph', 'TF.js layers', 'graph / ORT 1 thread'],
      m.batches.map((b, i) => [b, ortDefault[i]!, ortOne[i]!, graph[i]!, layers[i]!, (graph[i]! / ortOne[i]!).toFixed(2)]),
    );
    const best = (xs: number[]) => Math.max(...xs);
    const bestAt = (xs: number[]) => m.batches[xs.indexOf(best(xs))]!;
    console.log(
      `  best: ORT ${fmt(best(ortDefault))} @${bestAt(ortDefault)}, ORT 1 thread ${fmt(best(ortOne))} @${bestAt(ortOne)}, ` +
        `TF.js graph ${fmt(best(graph))} @${bestAt(graph)}, layers ${fmt(best(layers))} @${bestAt(layers)}`,
    );
    const batch = bestAt(graph);
    const counts = [1, 2, Math.max(2, availableParallelism())].filter((n, i, a) => a.indexOf(n) === i);
    const threaded: (string | number)[][] = [];
    for (const n of counts) threaded.push([n, await threadedRate({ dir: graphDir, width, batch }, n)]);
    table(`  ${m.name}: TF.js graph in worker threads, batch ${batch}, all running at once`, ['threads', 'rows/s'], [['0 (in this thread)', best(graph)], ...threaded]);
  }
}

if (!isMainThread) await threadMain(workerData as ThreadJob);
else if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await tfjsBench();
