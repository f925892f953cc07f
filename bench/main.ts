/**
 * `npm run bench`: speed measured in one run, reported as ratios to raw ONNX
 * Runtime measured in the same run on the same machine.
 *
 *   1. raw ONNX Runtime, batch sizes 1…4096, small and medium MLP
 *   2. the dynamic batcher alone, no-op runner, 1,000-row jobs
 *   3. `inferq predict` (Parquet → batcher → model → Parquet) on the same models
 *
 * Env: BENCH_QUICK=1 for a short smoke run; BENCH_ROWS_SMALL / BENCH_ROWS_MEDIUM row counts.
 * `npm run bench -- soak` runs only bench/soak.ts (worker memory under 10 minutes of full load).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { BATCH_SIZES, QUICK, fmt, rawOrt, table } from './common.js';
import { Field, FixedSizeList, Float32, RecordBatch, Schema, Struct, Utf8, makeData, vectorFromArray } from 'apache-arrow';
import type { TensorMap } from '@inferq/shared';
import { DynamicBatcher } from '../workers/src/batching/batcher.js';
import { createParquetWriter } from '../workers/src/io/parquet.js';
import { silentLogger } from '../workers/src/logging.js';
import { loadModel } from '../workers/src/models/loaded-model.js';
import { ModelRepository } from '../workers/src/models/repository.js';
import { predictParquet } from '../workers/src/predict/predict.js';
import { throughputThreads } from '../workers/src/runners/onnx/runner.js';
import { buildMlp, randomMlp } from '../examples/build/onnx-builder.js';
import { writeModel } from '../test/helpers/models.js';


interface ModelCase {
  readonly name: string;
  readonly dims: number[];
  readonly rows: number;
}

const MODELS: ModelCase[] = [
  { name: 'small', dims: [64, 256, 128, 1], rows: Number(process.env['BENCH_ROWS_SMALL'] ?? (QUICK ? 100_000 : 1_000_000)) },
  { name: 'medium', dims: [256, 1024, 1024, 512, 1], rows: Number(process.env['BENCH_ROWS_MEDIUM'] ?? (QUICK ? 20_000 : 200_000)) },
];




/** The batcher alone: no-op runner (returns a preallocated output view), 1,000-row jobs. */
async function batcherAlone(): Promise<number> {
  const width = 64;
  const maxBatchSize = 1024;
  const out = new Float32Array(maxBatchSize);
  const runner = {
    run: async (inputs: TensorMap): Promise<TensorMap> => {
      const rows = inputs['features']!.shape[0]!;
      return { score: { dtype: 'float32', shape: [rows, 1], data: out.subarray(0, rows) } };
    },
  };
  const batcher = new DynamicBatcher(runner, {
    inputs: [{ name: 'features', dtype: 'float32', shape: [-1, width] }],
    maxBatchSize,
    maxDelayMs: 2,
    preferredBatchSizes: [],
    maxPendingRows: 16 * maxBatchSize,
    maxInFlightBatches: 2,
  });
  const jobRows = 1000;
  const features = new Float32Array(jobRows * width);
  const jobs = QUICK ? 5_000 : 50_000;
  const window = 64;
  const start = performance.now();
  const inflight = new Set<Promise<unknown>>();
  for (let j = 0; j < jobs; j++) {
    const p = batcher.submit({ id: `j${j}`, rows: jobRows, tensors: { features: { dtype: 'float32', shape: [jobRows, width], data: features } } });
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
    if (inflight.size >= window) await Promise.race(inflight);
  }
  await Promise.all(inflight);
  const rowsPerSecond = (jobs * jobRows) / ((performance.now() - start) / 1000);
  await batcher.close();
  return rowsPerSecond;
}

/** Writes `rows` × width float32 features (fixed_size_list) plus an id column. */
async function writeInput(path: string, rows: number, width: number): Promise<void> {
  const writer = await createParquetWriter(path, { compression: 'snappy' });
  const chunk = 65_536;
  for (let at = 0; at < rows; at += chunk) {
    const n = Math.min(chunk, rows - at);
    const values = new Float32Array(n * width);
    for (let i = 0; i < values.length; i++) values[i] = Math.sin(at * width + i);
    const ids = vectorFromArray(Array.from({ length: n }, (_, i) => `row-${at + i}`), new Utf8());
    const item = makeData({ type: new Float32(), length: n * width, data: values });
    const listType = new FixedSizeList(width, new Field('item', new Float32(), false));
    const fields = [new Field('id', new Utf8(), false), new Field('features', listType, false)];
    const data = makeData({ type: new Struct(fields), length: n, nullCount: 0, children: [ids.data[0]!, makeData({ type: listType, length: n, child: item })] });
    await writer.write(new RecordBatch(new Schema(fields), data));
  }
  await writer.close();
}

// `npm run bench -- soak`: the soak alone (10 minutes by default), nothing else.
if (process.argv.slice(2).includes('soak')) {
  await (await import('./soak.js')).soakBench();
  process.exit();
}

async function main(): Promise<void> {
  console.log(`inferq bench — node ${process.version}, onnxruntime-node ${ort.env.versions.node}${QUICK ? ' (quick)' : ''}`);
  const dir = await mkdtemp(join(tmpdir(), 'inferq-bench-'));
  const summary: (string | number)[][] = [];
  try {
    const batcherRate = await batcherAlone();
    table('dynamic batcher alone (no-op runner, 1,000-row jobs, maxBatchSize 1024)', ['', 'rows/s'], [['batcher', batcherRate]]);
    summary.push(['batcher alone, 1,000-row jobs', batcherRate, '', '≥ 5,000,000']);

    for (const m of MODELS) {
      const spec = randomMlp(m.dims, 11);
      const bytes = buildMlp(spec);
      const raw = await rawOrt(bytes, m.dims[0]!);
      const best = Math.max(...raw.values());
      const bestBatch = [...raw.entries()].find(([, v]) => v === best)![0];
      table(
        `raw ONNX Runtime, ${m.name} MLP ${m.dims.join('→')}`,
        ['batch', 'rows/s', 'vs best'],
        BATCH_SIZES.map((b) => [String(b), raw.get(b)!, (raw.get(b)! / best).toFixed(2)]),
      );
      const repo = join(dir, 'models');
      await writeModel(repo, m.name, '1', spec);
      const input = join(dir, `${m.name}.parquet`);
      await writeInput(input, m.rows, m.dims[0]!);
      // As `inferq predict` loads it: one single-threaded instance per CPU.
      const model = await loadModel(new ModelRepository(repo), m.name, undefined, { logger: silentLogger(), ...throughputThreads({}) });
      try {
        const s = await predictParquet(model, { input, output: join(dir, `${m.name}-out.parquet`) });
        table(`inferq predict, ${m.name} MLP, ${fmt(m.rows)} rows (Parquet → batcher → model → Parquet)`, ['', 'rows/s', 'batches', 'mean batch', 'vs raw best'], [
          ['predict', s.rowsPerSecond, fmt(s.batches), s.meanBatchSize.toFixed(0), (s.rowsPerSecond / best).toFixed(2)],
        ]);
        summary.push([`predict ${m.name} (raw best ${fmt(best)} @${bestBatch})`, s.rowsPerSecond, (s.rowsPerSecond / best).toFixed(2), m.name === 'small' ? '≥ 400,000 rows/s' : '≥ 0.90 of raw']);
      } finally {
        await model.close();
      }
    }
    table('summary', ['measure', 'rows/s', 'vs raw best', 'target'], summary);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
await (await import('./redis.js')).redisBench(); // added for bench/redis.ts: end to end through a real Redis
await (await import('./hot-swap.js')).hotSwapBench(); // p99 latency of 1-row jobs before vs during a hot swap
await (await import('./enqueue.js')).enqueueBench(); // the Redis SDK's enqueue: Queue.add against the earlier MULTI path
await (await import('./kafka.js')).kafkaBench(); // end to end through a real Kafka broker
await (await import('./drain.js')).drainBench(); // the worker alone: fill first, then time one worker draining it
await (await import('./worker-stages.js')).workerStagesBench(); // where the Redis worker's CPU goes outside the model, stage by stage
await (await import('./tfjs.js')).tfjsBench(); // TF.js WASM beside ONNX Runtime, same MLPs
await (await import('./sink.js')).sinkBench(); // the Parquet sink alone, local disk and HDFS
await (await import('./precompute.js')).precomputeBench(); // precompute into Redis and Parquet, and lookup latency
