/**
 * Shadow runs through the pipeline over a memory source and real models (no servers): rows under
 * version=<v>/shadow=true/ equal to the shadow model, a bounded queue whose drops are counted, and
 * a shadow that fails without touching the primary.
 */
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeEnvelope } from '@inferq/shared';
import type { TensorMap } from '@inferq/shared';
import { forwardMlp } from '../../../examples/build/onnx-builder.js';
import { smallMlp, tempDir, writeModel } from '../../../test/helpers/models.js';
import { openParquet } from '../io/parquet.js';
import { silentLogger } from '../logging.js';
import type { LoadedModel } from '../models/loaded-model.js';
import { ModelPool } from '../models/model-pool.js';
import { ModelRepository } from '../models/repository.js';
import { VersionRouter, routingSource } from '../models/routing.js';
import { noMetrics } from '../ops/hooks.js';
import type { WorkerMetrics } from '../ops/hooks.js';
import { ParquetSink } from '../sinks/parquet-sink.js';
import { SinkSet } from '../sinks/sink-set.js';
import { MemorySource } from '../sources/memory/source.js';
import { waitFor } from '../../../test/helpers/redis.js';
import { JobPipeline } from './handle-job.js';
import { SHADOW_SUBFOLDER, ShadowRunner } from './shadow.js';

const v3 = smallMlp([4, 8, 2], 3);
const v4 = smallMlp([4, 8, 2], 4);
let repo: ModelRepository;
let pool: ModelPool;

beforeAll(async () => {
  const root = join(await tempDir(), 'models');
  await writeModel(root, 'mlp', '3', v3);
  await writeModel(root, 'mlp', '4', v4);
  // Version 3 serves every job (explicit), version 4 shadows all of them.
  await writeFile(join(root, 'mlp', 'config.yaml'), 'versionPolicy: all\nshadow: { version: 4, sample: 1 }\n');
  repo = new ModelRepository(root);
  pool = new ModelPool(repo, { logger: silentLogger(), batching: { maxDelayMs: 0 } });
});
afterAll(() => pool.close());

const f32 = (rows: number, seed: number): TensorMap => ({ features: { dtype: 'float32', shape: [rows, 4], data: Float32Array.from({ length: rows * 4 }, (_, i) => Math.sin(i * seed)) } });
const forward = (spec: typeof v3, x: TensorMap, rows: number): number[] => Array.from(forwardMlp(spec, { features: x['features']!.data as Float32Array }, rows));

function shadowMetrics(): { metrics: WorkerMetrics; counts: Record<string, number> } {
  const counts: Record<string, number> = {};
  return { metrics: { ...noMetrics, shadow: (m, v, outcome) => void (counts[`${m}@${v}:${outcome}`] = (counts[`${m}@${v}:${outcome}`] ?? 0) + 1) }, counts };
}

async function setup(models: Pick<ModelPool, 'get'>, sinks: ParquetSink[], maxQueued?: number) {
  const { metrics, counts } = shadowMetrics();
  const router = new VersionRouter({ source: routingSource(repo, pool), logger: silentLogger() });
  const shadow = new ShadowRunner({ models, router, sinks: sinks.map((s) => s.withSubfolder(SHADOW_SUBFOLDER)), metrics, logger: silentLogger(), maxQueued, rollCheckMs: 20 });
  const source = new MemorySource();
  const sinkSet = new SinkSet({ defaults: [], open: (uri) => new ParquetSink({ location: uri, logger: silentLogger() }) });
  const pipeline = new JobPipeline({ models, router, shadow, sinks: sinkSet, rolls: undefined, replies: source.replies, nonFinite: 'reject', logger: silentLogger() });
  await source.start(pipeline.handle);
  return { source, shadow, counts };
}

const push = (source: MemorySource, id: string, x: TensorMap, jobs?: { id: string; rows: number }[]) =>
  source.push({ id, bytes: encodeEnvelope({ id, model: 'mlp', version: '3', replyTo: 'r', ...(jobs === undefined ? {} : { jobs }) }, x) });

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile() && e.name.endsWith('.parquet')).map((e) => join(e.parentPath, e.name));
}

describe('ShadowRunner', () => {
  it('writes the shadow version\'s outputs under version=4/shadow=true/, the primary replies unchanged', async () => {
    const out = await tempDir();
    const { source, shadow, counts } = await setup(pool, [new ParquetSink({ location: out, logger: silentLogger(), rollRows: 1_000_000 })]);
    const a = f32(3, 1);
    const b = f32(5, 2);
    expect((await push(source, 'single', a)).outcome.kind).toBe('done');
    expect((await push(source, 'pack', b, [{ id: 'p1', rows: 2 }, { id: 'p2', rows: 3 }])).outcome.kind).toBe('done');
    await waitFor(() => shadow.stats.run === 2, 'two shadow batches', 10_000);
    await shadow.close(Date.now() + 10_000);
    expect(counts).toEqual({ 'mlp@4:run': 2 });
    // The primary: version 3, its own outputs.
    expect(source.replies.written.map((w) => w.result.version)).toEqual(['3', '3']);
    const replied = source.replies.written.flatMap((w) => Array.from(w.result.outputs['score']!.data as Float32Array));
    [...forward(v3, a, 3), ...forward(v3, b, 5)].forEach((v, i) => expect(replied[i]).toBeCloseTo(v, 5));
    // The shadow: version 4's outputs of the same inputs, job by job.
    const files = await filesUnder(out);
    expect(files.length).toBe(1);
    expect(files[0]).toContain(join(out, 'model=mlp', 'version=4', 'shadow=true', 'date='));
    const rows = new Map<string, number[]>();
    const reader = await openParquet(files[0]!);
    for await (const batch of reader.batches()) {
      const ids = batch.getChild('job_id')!.toArray() as string[];
      const scores = batch.getChild('score')!;
      ids.forEach((id, i) => rows.set(id, [...(rows.get(id) ?? []), ...Array.from(scores.get(i) as Iterable<number>)]));
    }
    await reader.close();
    const bx = b['features']!.data as Float32Array;
    const want = new Map([
      ['single', forward(v4, a, 3)],
      ['p1', Array.from(forwardMlp(v4, { features: bx.subarray(0, 8) }, 2))],
      ['p2', Array.from(forwardMlp(v4, { features: bx.subarray(8) }, 3))],
    ]);
    expect([...rows.keys()].sort()).toEqual(['p1', 'p2', 'single']);
    for (const [id, w] of want) w.forEach((v, i) => expect(rows.get(id)![i]).toBeCloseTo(v, 5));
  });

  it('holds at most maxQueued batches waiting: the rest are dropped and counted', async () => {
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const slow = { get: async (name: string, version?: string): Promise<LoadedModel> => (version === '4' ? gate.then(() => pool.get(name, version)) : pool.get(name, version)) };
    const { source, shadow, counts } = await setup(slow, [], 2);
    for (let i = 0; i < 8; i++) expect((await push(source, `j${i}`, f32(1, i))).outcome.kind).toBe('done');
    // One batch runs (held at the gate), two wait, five are dropped.
    await waitFor(() => shadow.stats.dropped === 5, 'five shadow batches dropped', 5000);
    expect(source.replies.written).toHaveLength(8);
    open();
    await waitFor(() => shadow.stats.run === 3, 'three shadow batches run', 10_000);
    await shadow.close(Date.now() + 5000);
    expect(counts).toEqual({ 'mlp@4:dropped': 5, 'mlp@4:run': 3 });
  });

  it('a shadow that fails never fails the primary', async () => {
    const broken = { get: (name: string, version?: string): Promise<LoadedModel> => (version === '4' ? Promise.reject(new Error('shadow model is broken')) : pool.get(name, version)) };
    const { source, shadow, counts } = await setup(broken, []);
    const x = f32(2, 7);
    const { outcome } = await push(source, 'primary', x);
    expect(outcome).toEqual({ kind: 'done', rows: 2 });
    expect(source.deadLetters).toEqual([]);
    await waitFor(() => shadow.stats.failed === 1, 'the shadow batch failed', 5000);
    await shadow.close(Date.now() + 5000);
    expect(counts).toEqual({ 'mlp@4:failed': 1 });
    const replied = Array.from(source.replies.written[0]!.result.outputs['score']!.data as Float32Array);
    forward(v3, x, 2).forEach((v, i) => expect(replied[i]).toBeCloseTo(v, 5));
  });
});
