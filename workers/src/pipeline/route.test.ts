/**
 * Routing through the pipeline (memory source, real models): a job without a version goes where
 * the traffic split says, a pack splits by its jobs' ids with one reply entry per version, an
 * explicit version wins.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeEnvelope } from '@inferq/shared';
import type { EnvelopeMeta, TensorMap } from '@inferq/shared';
import { forwardMlp } from '../../../examples/build/onnx-builder.js';
import { smallMlp, tempDir, writeModel } from '../../../test/helpers/models.js';
import { silentLogger } from '../logging.js';
import { ModelPool } from '../models/model-pool.js';
import { ModelRepository } from '../models/repository.js';
import { VersionRouter, routingSource } from '../models/routing.js';
import { ParquetSink } from '../sinks/parquet-sink.js';
import { SinkSet } from '../sinks/sink-set.js';
import { MemorySource } from '../sources/memory/source.js';
import { JobPipeline } from './handle-job.js';

const specs: Record<string, ReturnType<typeof smallMlp>> = { '3': smallMlp([4, 8, 1], 3), '4': smallMlp([4, 8, 1], 4) };
let pool: ModelPool;
let router: VersionRouter;

beforeAll(async () => {
  const root = join(await tempDir(), 'models');
  for (const v of ['3', '4']) await writeModel(root, 'mlp', v, specs[v]!);
  await writeFile(join(root, 'mlp', 'config.yaml'), 'versionPolicy: all\ntraffic: { "3": 50, "4": 50 }\n');
  const repo = new ModelRepository(root);
  pool = new ModelPool(repo, { logger: silentLogger(), batching: { maxDelayMs: 0 } });
  router = new VersionRouter({ source: routingSource(repo, pool), logger: silentLogger() });
});
afterAll(() => pool.close());

async function setup(): Promise<{ source: MemorySource; pipeline: JobPipeline }> {
  const source = new MemorySource();
  const sinks = new SinkSet({ defaults: [], open: (uri) => new ParquetSink({ location: uri, logger: silentLogger() }) });
  const pipeline = new JobPipeline({ models: pool, router, sinks, rolls: undefined, replies: source.replies, nonFinite: 'reject', logger: silentLogger() });
  await source.start(pipeline.handle);
  return { source, pipeline };
}

const rowsOf = (n: number, from: number): TensorMap => ({ features: { dtype: 'float32', shape: [n, 4], data: Float32Array.from({ length: n * 4 }, (_, i) => Math.cos(from * 4 + i)) } });
const push = (source: MemorySource, meta: Partial<EnvelopeMeta> & { id: string }, x: TensorMap) => source.push({ id: meta.id, bytes: encodeEnvelope({ model: 'mlp', replyTo: 'r', ...meta }, x) });

describe('routing in the pipeline', () => {
  it('sends each job where the router says, and an explicit version where it names', async () => {
    const { source } = await setup();
    const ids = Array.from({ length: 12 }, (_, i) => `job-${i}`);
    for (const id of ids) await push(source, { id }, rowsOf(1, 0));
    const want = await Promise.all(ids.map((id) => router.route('mlp', id)));
    expect(new Set(want)).toEqual(new Set(['3', '4']));
    expect(source.replies.written.map((w) => w.result.version)).toEqual(want);
    for (const id of ids) await push(source, { id: `${id}-v3`, version: '3' }, rowsOf(1, 0));
    expect(source.replies.written.slice(12).every((w) => w.result.version === '3')).toBe(true);
  });

  it('splits a pack by its jobs\' versions: one reply entry per version, each job run by its own', async () => {
    const { source, pipeline } = await setup();
    const jobs = Array.from({ length: 8 }, (_, i) => ({ id: `packed-${i}`, rows: 1 + (i % 2) }));
    const versions = await Promise.all(jobs.map((j) => router.route('mlp', j.id)));
    expect(new Set(versions)).toEqual(new Set(['3', '4']));
    const total = jobs.reduce((n, j) => n + j.rows, 0);
    const x = rowsOf(total, 1);
    const { outcome } = await push(source, { id: 'pack', jobs }, x);
    expect(outcome).toEqual({ kind: 'done', rows: total });
    expect(pipeline.stats.packsSplit).toBe(0);
    const data = x['features']!.data as Float32Array;
    const wantById = new Map<string, number[]>();
    let at = 0;
    for (const [i, j] of jobs.entries()) {
      wantById.set(j.id, Array.from(forwardMlp(specs[versions[i]!]!, { features: data.subarray(at * 4, (at + j.rows) * 4) }, j.rows)));
      at += j.rows;
    }
    expect(source.replies.written.map((w) => w.result.version).sort()).toEqual(['3', '4']);
    for (const w of source.replies.written) {
      const scores = Array.from(w.result.outputs['score']!.data as Float32Array);
      let k = 0;
      for (const j of w.envelope.jobs!) {
        expect(versions[jobs.findIndex((x) => x.id === j.id)]).toBe(w.result.version);
        for (const v of wantById.get(j.id)!) expect(scores[k++]).toBeCloseTo(v, 5);
      }
    }
    expect(source.replies.written.flatMap((w) => w.envelope.jobs!.map((j) => j.id)).sort()).toEqual(jobs.map((j) => j.id).sort());
  });
});
