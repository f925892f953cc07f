/**
 * The metrics a worker records, through the real pipeline, batcher and model over the in-memory
 * source: counts by outcome and code, rows, latencies, batches; labels only from loaded models;
 * the device label on every series; the source depth read with a bounded wait.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferqError, encodeEnvelope } from '@inferq/shared';
import type { EnvelopeMeta, TensorMap } from '@inferq/shared';
import { smallMlp, tempDir, writeModel } from '../../../test/helpers/models.js';
import { silentLogger } from '../logging.js';
import { ModelPool } from '../models/model-pool.js';
import { ModelRepository } from '../models/repository.js';
import { WorkerService } from '../service.js';
import { MemorySource } from '../sources/memory/source.js';
import type { Source, SourceDepth } from '../sources/source.js';
import { DepthReader } from './depth.js';
import { PrometheusMetrics, workerMetricNames } from './metrics.js';

/** The value of the sample `name{labels}` (labels as written, in prom-client's order), or undefined. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = m[2]!.split(/,(?=[a-z_]+=")/);
    if (have.length === want.length && want.every((w) => have.includes(w))) return Number(m[3]);
  }
  return undefined;
}

const f32 = (rows: number, fill = (i: number) => Math.sin(i)): TensorMap => ({ features: { dtype: 'float32', shape: [rows, 4], data: Float32Array.from({ length: rows * 4 }, (_, i) => fill(i)) } });
const msg = (meta: Partial<EnvelopeMeta> & { id: string }, tensors: TensorMap = f32(2)): { id: string; bytes: Uint8Array; enqueuedAt: number } => ({
  id: meta.id,
  bytes: encodeEnvelope({ model: 'mlp', ...meta }, tensors),
  enqueuedAt: Date.now() - 50,
});

let repo: string;
beforeAll(async () => {
  repo = join(await tempDir(), 'models');
  await writeModel(repo, 'mlp', '1', smallMlp([4, 8, 1], 3));
});

describe('PrometheusMetrics', () => {
  let pool: ModelPool;
  afterAll(() => pool?.close());

  it('counts jobs and rows by outcome and code, dead letters, latencies and batches, labelled by loaded models only', async () => {
    const metrics = new PrometheusMetrics({ device: 'cuda:3', logger: silentLogger() });
    // Batches padded up to 16 rows: padding is counted apart from the batch rows.
    pool = new ModelPool(new ModelRepository(repo), { logger: silentLogger(), batching: { maxDelayMs: 0, preferredBatchSizes: [16] }, metrics });
    let failOnce = true;
    // A passing fault on the first model lookup: that job is retried, then succeeds.
    const models: Pick<ModelPool, 'get'> = {
      get: async (name, version) => {
        if (name === 'mlp' && version === '1' && failOnce) {
          failOnce = false;
          throw new InferqError('model store hiccup', { retriable: true, code: 'UNAVAILABLE' });
        }
        return pool.get(name, version);
      },
    };
    const source = new MemorySource();
    const worker = new WorkerService({ source, models, logger: silentLogger(), metrics });
    await worker.start();
    const base = { ...(await pool.get('mlp')).batcher.stats };
    const ok = await Promise.all([source.push(msg({ id: 'a' }, f32(2))), source.push(msg({ id: 'b' }, f32(3))), source.push(msg({ id: 'c' }, f32(4)))]);
    expect(ok.map((o) => o.outcome.kind)).toEqual(['done', 'done', 'done']);
    // A pack of three jobs, one past its deadline: two answered, one dead letter.
    const pack = await source.push(
      msg({ id: 'p', jobs: [{ id: 'p1', rows: 2 }, { id: 'p2', rows: 3, deadline: Date.now() - 1000 }, { id: 'p3', rows: 1 }] }, f32(6)),
    );
    expect(pack.outcome).toEqual({ kind: 'done', rows: 3 });
    expect((await source.push(msg({ id: 'nan' }, f32(5, (i) => (i === 3 ? Number.NaN : 1))))).outcome.kind).toBe('failed');
    expect((await source.push(msg({ id: 'who', model: 'x'.repeat(40) }))).outcome.kind).toBe('failed');
    expect((await source.push(msg({ id: 'r', version: '1' }, f32(7)))).attempts).toBe(2);
    const text = await metrics.text();
    const mlp = { transport: 'memory', model: 'mlp', version: '1', device: 'cuda:3' };
    expect(sample(text, 'inferq_jobs_total', { ...mlp, outcome: 'ok', code: '' })).toBe(3 + 2 + 1);
    expect(sample(text, 'inferq_rows_total', { ...mlp, outcome: 'ok' })).toBe(2 + 3 + 4 + 2 + 1 + 7);
    expect(sample(text, 'inferq_jobs_total', { ...mlp, outcome: 'dead_letter', code: 'DEADLINE' })).toBe(1);
    expect(sample(text, 'inferq_jobs_total', { ...mlp, outcome: 'dead_letter', code: 'NON_FINITE' })).toBe(1);
    expect(sample(text, 'inferq_rows_total', { ...mlp, outcome: 'dead_letter' })).toBe(3 + 5);
    expect(sample(text, 'inferq_dead_letters_total', { ...mlp, code: 'NON_FINITE' })).toBe(1);
    expect(sample(text, 'inferq_jobs_total', { ...mlp, outcome: 'retried', code: 'UNAVAILABLE' })).toBeUndefined();
    // The retried job failed before its model resolved: no model label, as for a model nobody serves.
    const unresolved = { transport: 'memory', model: '', version: '', device: 'cuda:3' };
    expect(sample(text, 'inferq_jobs_total', { ...unresolved, outcome: 'retried', code: 'UNAVAILABLE' })).toBe(1);
    expect(sample(text, 'inferq_rows_total', { ...unresolved, outcome: 'retried' })).toBe(7);
    expect(sample(text, 'inferq_dead_letters_total', { ...unresolved, code: 'UNKNOWN_MODEL' })).toBe(1);
    expect(text).not.toContain('x'.repeat(40));
    // One latency observation per message that reached the batcher / finished.
    expect(sample(text, 'inferq_queue_wait_seconds_count', mlp)).toBe(3 + 1 + 1);
    expect(sample(text, 'inferq_job_duration_seconds_count', mlp)).toBe(3 + 1 + 1 + 1);
    expect(sample(text, 'inferq_queue_wait_seconds_bucket', { ...mlp, le: '0.025' })).toBe(0); // enqueued 50 ms before
    const stats = (await pool.get('mlp')).batcher.stats;
    const m = { model: 'mlp', version: '1', device: 'cuda:3' };
    expect(sample(text, 'inferq_batch_rows_count', m)).toBe(stats.batches - base.batches);
    expect(sample(text, 'inferq_batch_rows_sum', m)).toBe(stats.rows - base.rows);
    expect(sample(text, 'inferq_inference_duration_seconds_count', m)).toBe(stats.batches - base.batches);
    expect(stats.paddedRows - base.paddedRows).toBeGreaterThan(0);
    expect(sample(text, 'inferq_batch_padding_rows_total', m)).toBe(stats.paddedRows - base.paddedRows);
    expect(sample(text, 'inferq_batches_in_flight', m)).toBe(0);
    expect(sample(text, 'inferq_pending_rows', m)).toBe(0);
    expect(sample(text, 'inferq_model_load_seconds', m)).toBeGreaterThan(0);
    expect(sample(text, 'inferq_model_warmup_seconds', m)).toBeGreaterThan(0);
    expect(metrics.totals()).toMatchObject({ jobs: 6, rows: 19, deadLetters: 3, retried: 1, batches: stats.batches - base.batches });
    await worker.close(1000);
  });

  it('labels every series with the device, prom-client’s process metrics too, and documents every name', async () => {
    const metrics = new PrometheusMetrics({ device: 'cuda:7', logger: silentLogger() });
    metrics.jobs('redis', 'm', '2').ok(1, 1);
    metrics.sink('/data/out').rolled(10, 0.2);
    const text = await metrics.text();
    const samples = text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
    expect(samples.length).toBeGreaterThan(30);
    for (const s of samples) expect(s).toMatch(/[{,]device="cuda:7"[,}]/);
    expect(text).toMatch(/^process_resident_memory_bytes\{device="cuda:7"\} \d+/m);
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds\{device="cuda:7"\} /m);
    expect(sample(text, 'inferq_sink_rows_total', { sink: '/data/out', device: 'cuda:7' })).toBe(10);
    expect(sample(text, 'inferq_sink_roll_failures_total', { sink: '/data/out', device: 'cuda:7' })).toBe(0);
    for (const name of workerMetricNames()) expect(text).toContain(`# TYPE ${name} `);
    expect(workerMetricNames()).toHaveLength(22);
  });

  it('reads a source’s depth on scrape into the queue gauges', async () => {
    const depth: SourceDepth = { kind: 'queue', transport: 'redis', queue: 'q1', jobs: { waiting: 4, active: 2 }, deadLetters: 1 };
    const lag: SourceDepth = { kind: 'topic', transport: 'kafka', topic: 't', group: 'g', partitions: [{ partition: 0, lag: 9 }, { partition: 1, lag: 0 }], deadLetters: 3 };
    const metrics = new PrometheusMetrics({ device: 'cpu', logger: silentLogger(), processMetrics: false });
    metrics.watchSource({ name: 'redis', depth: async () => depth } as unknown as Source);
    metrics.watchSource({ name: 'kafka', depth: async () => lag } as unknown as Source);
    const text = await metrics.text();
    expect(sample(text, 'inferq_queue_jobs', { transport: 'redis', queue: 'q1', state: 'waiting', device: 'cpu' })).toBe(4);
    expect(sample(text, 'inferq_queue_jobs', { transport: 'redis', queue: 'q1', state: 'active', device: 'cpu' })).toBe(2);
    expect(sample(text, 'inferq_queue_dead_letters', { transport: 'redis', queue: 'q1', device: 'cpu' })).toBe(1);
    expect(sample(text, 'inferq_queue_dead_letters', { transport: 'kafka', queue: 't', device: 'cpu' })).toBe(3);
    expect(sample(text, 'inferq_kafka_consumer_lag', { topic: 't', group: 'g', partition: '0', device: 'cpu' })).toBe(9);
    expect(sample(text, 'inferq_kafka_consumer_lag', { topic: 't', group: 'g', partition: '1', device: 'cpu' })).toBe(0);
  });

  it('a source that hangs or fails is left out of the scrape, never waited for past the timeout, and not read twice at once', async () => {
    const a: SourceDepth = { kind: 'queue', transport: 'redis', queue: 'a', jobs: {}, deadLetters: 0 };
    const b: SourceDepth = { ...a, queue: 'b' };
    let answer: () => Promise<SourceDepth | undefined> = async () => a;
    let calls = 0;
    const source = { name: 'redis', depth: () => (calls++, answer()) } as unknown as Source;
    let clock = 0;
    const reader = new DepthReader(silentLogger(), 150, () => clock);
    reader.watch(source);
    expect(await reader.read()).toEqual([a]);
    clock = 100;
    expect(await reader.read()).toEqual([a]); // fresh: the scrape's other gauges share the read
    expect(calls).toBe(1);

    let release: (d: SourceDepth) => void = () => undefined;
    answer = () => new Promise((resolve) => (release = resolve));
    clock = 1000;
    const started = Date.now();
    expect(await reader.read()).toEqual([]);
    expect(Date.now() - started).toBeLessThan(1000);
    clock = 2000;
    expect(await reader.read()).toEqual([]);
    expect(calls).toBe(2); // the hanging read is not started again
    release(b);
    expect(await reader.read()).toEqual([b]);

    answer = () => Promise.reject(new Error('ECONNREFUSED'));
    clock = 3000;
    expect(await reader.read()).toEqual([]);
    answer = async () => undefined; // a source not running
    clock = 4000;
    expect(await reader.read()).toEqual([]);
    expect(calls).toBe(4);
  });

  it('a depth reader with no source reads nothing', async () => {
    expect(await new DepthReader(silentLogger(), 100).read()).toEqual([]);
  });
});

describe('model lifecycle and shadow metrics', () => {
  it('count reloads and shadow batches by outcome, and drop an unloaded version’s load gauges for its unload time', async () => {
    const m = new PrometheusMetrics({ device: 'cpu', logger: silentLogger(), processMetrics: false });
    m.modelLoaded('mlp', '3', 0.5, 0.25, { batchesInFlight: 0, pendingRows: 0 });
    m.modelReload('mlp', 'loaded');
    m.modelReload('mlp', 'loaded');
    m.modelReload('mlp', 'failed');
    m.shadow('mlp', '4', 'run');
    m.shadow('mlp', '4', 'dropped');
    let text = await m.text();
    expect(sample(text, 'inferq_model_reloads_total', { model: 'mlp', outcome: 'loaded', device: 'cpu' })).toBe(2);
    expect(sample(text, 'inferq_model_reloads_total', { model: 'mlp', outcome: 'failed', device: 'cpu' })).toBe(1);
    expect(sample(text, 'inferq_shadow_batches_total', { model: 'mlp', version: '4', outcome: 'dropped', device: 'cpu' })).toBe(1);
    expect(sample(text, 'inferq_model_load_seconds', { model: 'mlp', version: '3', device: 'cpu' })).toBe(0.5);
    m.modelUnloaded('mlp', '3', 0.125);
    text = await m.text();
    expect(sample(text, 'inferq_model_load_seconds', { model: 'mlp', version: '3', device: 'cpu' })).toBeUndefined();
    expect(sample(text, 'inferq_pending_rows', { model: 'mlp', version: '3', device: 'cpu' })).toBeUndefined();
    expect(sample(text, 'inferq_model_unload_seconds', { model: 'mlp', version: '3', device: 'cpu' })).toBe(0.125);
    expect(workerMetricNames()).toEqual(expect.arrayContaining(['inferq_model_unload_seconds', 'inferq_model_reloads_total', 'inferq_shadow_batches_total']));
  });
});
