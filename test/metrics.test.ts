/**
 * A worker's /metrics as Prometheus sees them: `inferq worker --http-port` under load, scraped
 * every second by a real Prometheus, asserted through Prometheus's HTTP API against the jobs
 * the test sent. And the Kafka worker's /metrics read directly (lag, outcomes).
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KafkaProducer, Producer } from '@inferq/producer';
import { redisKeys } from '@inferq/shared';
import { kafkaServer, redisServer } from './infra/servers.js';
import { startPrometheus } from './infra/prometheus.js';
import type { PrometheusServer } from './infra/prometheus.js';
import { freePort } from './infra/redis.js';
import { createTopic, topicName } from './helpers/kafka.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { dropQueue, queueName, startWorker, waitFor } from './helpers/redis.js';
import type { WorkerProcess } from './helpers/redis.js';

const url = await redisServer();
let repo: string;
const queues: string[] = [];

beforeAll(async () => {
  repo = join(await tempDir(), 'models');
  await writeModel(repo, 'mlp', '1', smallMlp([4, 16, 2], 9));
});

afterAll(async () => {
  for (const q of queues) await dropQueue(url, q);
});

function features(rows: number, seed: number, bad = false): number[][] {
  return Array.from({ length: rows }, (_, r) => Array.from({ length: 4 }, (_, c) => (bad && r === rows - 1 && c === 2 ? Number.NaN : Math.sin(seed * 7 + r * 4 + c))));
}

async function stopWorker(w: WorkerProcess): Promise<void> {
  if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGTERM');
  await w.exited;
}

/** The one value of an instant query that must give one series (or none: undefined). */
async function one(prom: PrometheusServer, promql: string): Promise<number | undefined> {
  const r = await prom.query(promql);
  if (r.length > 1) throw new Error(`${promql}: ${r.length} series, expected at most one: ${JSON.stringify(r)}`);
  return r[0]?.value;
}

describe('metrics scraped by a real Prometheus', () => {
  it('counts every job the test sent, by outcome and dead-letter code, with rows, batches, latencies, queue gauges and sink rolls', async () => {
    const queue = queueName('metrics');
    queues.push(queue);
    const port = await freePort();
    const sinkDir = await mkdtemp(join(tmpdir(), 'inferq-metrics-sink-'));
    const prom = await startPrometheus([`127.0.0.1:${port}`]);
    const w = startWorker(['--queue', queue, '--redis', url, '--model-repo', repo, '--models', 'mlp', '--threads', '1', '--max-delay-ms', '5', '--http-port', String(port), '--sink', `parquet:${sinkDir}`, '--sink-roll-ms', '200']);
    const producer = new Producer({ redis: url, queue });
    const redis = new Redis(url);
    try {
      await w.ready;
      await waitFor(async () => (await prom.targets()).some((t) => t.health === 'up'), 'Prometheus to scrape the worker', 20_000, 100);
      // Load: 60 good jobs at once (1..20 rows), 5 with a NaN, 3 for a model the worker does not serve.
      const good = Array.from({ length: 60 }, (_, i) => 1 + (i % 20));
      const okRows = good.reduce((n, r) => n + r, 0);
      const bad = [3, 4, 5, 6, 7];
      const replies = Promise.all(good.map((rows, i) => producer.predict('mlp', features(rows, i), { timeoutMs: 30_000 })));
      await Promise.all([...bad.map((rows, i) => producer.enqueue('mlp', features(rows, 100 + i, true), { attempts: 1 })), ...[1, 2, 3].map(() => producer.enqueue('nope', features(2, 1)))]);
      expect((await replies).every((r) => r.ok)).toBe(true);
      const q = new Queue(queue, { connection: redis, prefix: 'inferq' });
      await waitFor(
        async () => {
          const c = await q.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
          return Object.values(c).every((n) => n === 0) && (await redis.xlen(redisKeys('inferq', queue).deadLetters)) === 8;
        },
        'every job to settle',
        30_000,
      );
      await q.close();
      // Every outcome is counted in the worker by now: wait for a scrape that started after.
      const settled = Date.now() / 1000;
      await waitFor(async () => ((await one(prom, `timestamp(inferq_ready)`)) ?? 0) > settled + 0.1, 'a scrape after the jobs settled', 10_000, 100);

      const mlp = `transport="redis",model="mlp",version="1",device="cpu"`;
      expect(await one(prom, `inferq_jobs_total{${mlp},outcome="ok",code=""}`)).toBe(60);
      expect(await one(prom, `inferq_rows_total{${mlp},outcome="ok"}`)).toBe(okRows);
      expect(await one(prom, `inferq_jobs_total{${mlp},outcome="dead_letter",code="NON_FINITE"}`)).toBe(5);
      expect(await one(prom, `inferq_rows_total{${mlp},outcome="dead_letter"}`)).toBe(bad.reduce((n, r) => n + r, 0));
      expect(await one(prom, `inferq_dead_letters_total{${mlp},code="NON_FINITE"}`)).toBe(5);
      // A model nobody serves never becomes a label: its jobs count under model="".
      expect(await one(prom, `inferq_dead_letters_total{transport="redis",model="",version="",code="UNKNOWN_MODEL"}`)).toBe(3);
      expect(await prom.query(`inferq_jobs_total{model="nope"}`)).toEqual([]);
      expect(await one(prom, `sum(inferq_jobs_total{outcome="retried"}) or vector(0)`)).toBe(0);
      // Batches: every good row went through the model once; NaN rows never reached it.
      const batches = await one(prom, `inferq_batch_rows_count{model="mlp",version="1",device="cpu"}`);
      expect(batches).toBeGreaterThan(0);
      expect(await one(prom, `inferq_batch_rows_sum{model="mlp",version="1",device="cpu"}`)).toBe(okRows);
      expect(await one(prom, `inferq_inference_duration_seconds_count{model="mlp",version="1",device="cpu"}`)).toBe(batches);
      expect(await one(prom, `inferq_batch_padding_rows_total{model="mlp",version="1",device="cpu"}`)).toBe(0);
      expect(await one(prom, `inferq_batches_in_flight{model="mlp",version="1",device="cpu"}`)).toBe(0);
      expect(await one(prom, `inferq_pending_rows{model="mlp",version="1",device="cpu"}`)).toBe(0);
      // One latency observation per message: queue wait for those that reached a batch, duration for every outcome.
      expect(await one(prom, `inferq_queue_wait_seconds_count{${mlp}}`)).toBe(60);
      expect(await one(prom, `inferq_job_duration_seconds_count{${mlp}}`)).toBe(65);
      expect(await one(prom, `histogram_quantile(0.99, inferq_job_duration_seconds_bucket{${mlp}})`)).toBeGreaterThan(0);
      // Rows published to the worker's own sink, counted once.
      expect(await one(prom, `inferq_sink_rows_total{sink="${sinkDir}",device="cpu"}`)).toBe(okRows);
      expect(await one(prom, `inferq_sink_roll_duration_seconds_count{sink="${sinkDir}"}`)).toBeGreaterThan(0);
      expect(await one(prom, `inferq_sink_roll_failures_total{sink="${sinkDir}"}`)).toBe(0);
      // The queue, as BullMQ counts it (completed jobs are removed), and its dead letters.
      const states = await prom.query(`inferq_queue_jobs{transport="redis",queue="${queue}",device="cpu"}`);
      expect(states.map((s) => s.metric['state']).sort()).toEqual(['active', 'completed', 'delayed', 'failed', 'prioritized', 'waiting', 'waiting-children']);
      expect(states.find((s) => s.metric['state'] === 'failed')?.value).toBe(8);
      expect(states.find((s) => s.metric['state'] === 'waiting')?.value).toBe(0);
      expect(await one(prom, `inferq_queue_dead_letters{transport="redis",queue="${queue}"}`)).toBe(8);
      expect(await one(prom, `inferq_model_warmup_seconds{model="mlp",version="1",device="cpu"}`)).toBeGreaterThan(0);
      expect(await one(prom, `inferq_ready{device="cpu"}`)).toBe(1);
      expect(await one(prom, `process_resident_memory_bytes{device="cpu"}`)).toBeGreaterThan(10_000_000);
      expect(await one(prom, `nodejs_heap_size_used_bytes{device="cpu"}`)).toBeGreaterThan(0);
    } finally {
      await producer.close();
      redis.disconnect();
      await stopWorker(w);
      await prom.stop();
    }
    expect((await w.exited).code).toBe(0);
  });
});

describe('metrics of a Kafka worker', () => {
  it('reports its jobs and its consumer group lag per partition', async () => {
    const brokers = await kafkaServer();
    const topic = topicName('metrics');
    await createTopic(brokers, topic, 2);
    const producer = new KafkaProducer({ brokers, topic });
    // Jobs waiting before the worker starts.
    await Promise.all(Array.from({ length: 10 }, (_, i) => producer.enqueue('mlp', features(3, i))));
    const port = await freePort();
    const w = startWorker(['--transport', 'kafka', '--brokers', brokers.join(','), '--topic', topic, '--group', `g-${topic}`, '--model-repo', repo, '--models', 'mlp', '--threads', '1', '--max-delay-ms', '5', '--http-port', String(port)]);
    /** The value of the sample `name` whose labels include `labels` (any order), from a fresh scrape. */
    const value = async (name: string, labels: Record<string, string>): Promise<number | undefined> => {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      for (const line of text.split('\n')) {
        const m = /^([a-z_:]+)\{(.*)\} (\S+)$/.exec(line);
        if (m?.[1] === name && Object.entries(labels).every(([k, v]) => m[2]!.split(/,(?=[a-z_]+=")/).includes(`${k}="${v}"`))) return Number(m[3]);
      }
      return undefined;
    };
    try {
      await w.ready;
      const mlp = { transport: 'kafka', model: 'mlp', version: '1', device: 'cpu' };
      await waitFor(async () => (await value('inferq_jobs_total', { ...mlp, outcome: 'ok', code: '' })) === 10, 'the 10 jobs counted', 30_000, 200);
      expect(await value('inferq_rows_total', { ...mlp, outcome: 'ok' })).toBe(30);
      await producer.enqueue('nope', features(1, 1));
      await waitFor(async () => (await value('inferq_dead_letters_total', { transport: 'kafka', model: '', code: 'UNKNOWN_MODEL' })) === 1, 'the dead letter counted', 30_000, 200);
      // Committed: no lag on either partition; the dead letter is kept in <topic>.dead.
      const group = `g-${topic}`;
      await waitFor(
        async () =>
          (await value('inferq_kafka_consumer_lag', { topic, group, partition: '0', device: 'cpu' })) === 0 &&
          (await value('inferq_kafka_consumer_lag', { topic, group, partition: '1', device: 'cpu' })) === 0 &&
          (await value('inferq_queue_dead_letters', { transport: 'kafka', queue: topic, device: 'cpu' })) === 1,
        'zero lag and one dead letter',
        30_000,
        200,
      );
      expect(await value('inferq_jobs_total', { ...mlp, outcome: 'ok', code: '' })).toBe(10);
      expect(await (await fetch(`http://127.0.0.1:${port}/readyz`)).text()).toBe('ready\n');
    } finally {
      await producer.close();
      await stopWorker(w);
    }
    expect((await w.exited).code).toBe(0);
  });
});
