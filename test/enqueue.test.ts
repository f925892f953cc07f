/**
 * How the Redis SDK writes a job against a real redis-server and an `inferq worker` process:
 * its payload under a key of that enqueue's own, then the job through BullMQ's Queue.add.
 */
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferqError, decodeEnvelope } from '@inferq/shared';
import type { JobData } from '@inferq/shared';
import { Producer, RemoteJobError } from '@inferq/producer';
import type { Reply } from '@inferq/producer';
import { forwardMlp } from '../examples/build/onnx-builder.js';
import { redisServer } from './infra/servers.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { dropQueue, queueName, readStream, startWorker, waitFor } from './helpers/redis.js';
import type { WorkerProcess } from './helpers/redis.js';
import { parseRepliesForTest } from './helpers/replies.js';

const url = await redisServer();
const spec = smallMlp([4, 16, 2], 5);
/** 200 rows × 4 float32: 3,200 bytes of features, sent under a payload key with `payload: 'key'`. */
const ROWS = 200;
let repo: string;
let redis: Redis;
const dropped: [string, string][] = [];

function newQueue(prefix = 'inferq'): string {
  const q = queueName('enq');
  dropped.push([q, prefix]);
  return q;
}

function features(rows: number, seed: number): number[][] {
  return Array.from({ length: rows }, (_, r) => Array.from({ length: 4 }, (_, c) => Math.sin(seed * 13 + r * 4 + c)));
}

function expectMatches(reply: Reply, x: number[][]): void {
  const want = forwardMlp(spec, { features: Float32Array.from(x.flat()) }, x.length);
  const got = reply.outputs['score']!;
  expect(got.shape).toEqual([x.length, 2]);
  for (let i = 0; i < want.length; i++) expect(Math.abs((got.data[i] as number) - want[i]!)).toBeLessThan(1e-5);
}

async function worker(queue: string): Promise<WorkerProcess> {
  const w = startWorker(['--queue', queue, '--redis', url, '--model-repo', repo, '--models', 'mlp', '--max-delay-ms', '1', '--threads', '1']);
  await w.ready;
  return w;
}

async function stop(w: WorkerProcess): Promise<void> {
  if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGTERM');
  await w.exited;
}

const payloadKeys = async (queue: string, prefix = 'inferq'): Promise<string[]> => (await redis.keys(`${prefix}:${queue}:payload:*`)).sort();

beforeAll(async () => {
  repo = join(await tempDir(), 'models');
  await writeModel(repo, 'mlp', '1', spec);
  redis = new Redis(url);
});

afterAll(async () => {
  for (const [q, prefix] of dropped) await dropQueue(url, q, prefix);
  redis.disconnect();
});

describe('Redis enqueue: payload key, then Queue.add', () => {
  it('a job id reused after its job failed and was removed from BullMQ gets its own payload, not the one the failed job left', async () => {
    const queue = newQueue();
    const w = await worker(queue);
    const producer = new Producer({ redis: url, queue, payload: 'key' });
    const q = new Queue(queue, { connection: { url }, prefix: 'inferq' });
    try {
      const old = features(ROWS, 1);
      // Already late: the worker fails it for good, and its payload key stays (dead letters point at it for a replay).
      await expect(producer.predict('mlp', old, { jobId: 'reused', deadline: Date.now() - 1000, timeoutMs: 30_000 })).rejects.toBeInstanceOf(RemoteJobError);
      await waitFor(async () => (await q.getJobState('reused')) === 'failed', 'the job to be failed');
      const failedKey = ((await q.getJob('reused'))!.data as JobData).key!;
      expect(await redis.exists(failedKey)).toBe(1);
      await q.remove('reused'); // as BullMQ trims its failed set, or an operator would
      expect(await q.getJob('reused')).toBeUndefined();

      const fresh = features(ROWS, 2); // same size: the worker could not tell the old payload by its length
      const reply = await producer.predict('mlp', fresh, { jobId: 'reused', timeoutMs: 30_000 });
      expect(reply.id).toBe('reused');
      expectMatches(reply, fresh);
      // The failed job's payload is left as it was (it expires); the new job's was deleted once it completed.
      expect(await payloadKeys(queue)).toEqual([failedKey]);
    } finally {
      await q.close();
      await producer.close();
      await stop(w);
    }
  });

  it('a duplicate enqueue (same id while the first job waits) leaves no payload key behind; the job runs with the first payload', async () => {
    const queue = newQueue();
    const stream = `inferq:${queue}:replies`;
    const producer = new Producer({ redis: url, queue, payload: 'key' });
    const other = new Producer({ redis: url, queue, payload: 'key' });
    const q = new Queue(queue, { connection: { url }, prefix: 'inferq' });
    try {
      const first = features(ROWS, 3);
      expect(await producer.enqueue('mlp', first, { jobId: 'dup', replyTo: stream })).toBe('dup');
      const kept = ((await q.getJob('dup'))!.data as JobData).key!;
      expect(await payloadKeys(queue)).toEqual([kept]);
      // Duplicates: one after another, then ten at once from two producers.
      expect(await producer.enqueue('mlp', features(ROWS, 4), { jobId: 'dup', replyTo: stream })).toBe('dup');
      const racing = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? producer : other).enqueue('mlp', features(ROWS, 5 + i), { jobId: 'dup', replyTo: stream })));
      expect(racing).toEqual(Array.from({ length: 10 }, () => 'dup'));
      expect(await payloadKeys(queue)).toEqual([kept]);
      expect(await q.getJobCountByTypes('waiting', 'prioritized', 'delayed')).toBe(1);
      // Concurrent first enqueues of one id: one job, one payload key, the one it names.
      const raced = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? producer : other).enqueue('mlp', features(ROWS, 20 + i), { jobId: 'race', replyTo: stream })));
      expect(new Set(raced)).toEqual(new Set(['race']));
      const raceKey = ((await q.getJob('race'))!.data as JobData).key!;
      expect(await payloadKeys(queue)).toEqual([kept, raceKey].sort());
      const stored = await redis.getBuffer(kept);
      const envelope = decodeEnvelope(new Uint8Array(stored!.buffer, stored!.byteOffset, stored!.byteLength));
      expect(Array.from(envelope.tensors['features']!.data as Float32Array)).toEqual(Array.from(Float32Array.from(first.flat())));

      const w = await worker(queue);
      try {
        await waitFor(async () => (await redis.xlen(stream)) >= 2, 'the replies of both jobs');
        const replies = (await readStream(redis, stream)).flatMap((e) => parseRepliesForTest(e.fields));
        expect(replies.map((r) => r.id).sort()).toEqual(['dup', 'race']);
        expectMatches(replies.find((r) => r.id === 'dup')!, first);
        await waitFor(async () => (await payloadKeys(queue)).length === 0, 'the completed jobs\' payload keys to be deleted');
      } finally {
        await stop(w);
      }
    } finally {
      await q.close();
      await other.close();
      await producer.close();
    }
  });

  it('an enqueue that BullMQ or Redis refuses leaves no payload key behind', async () => {
    const queue = newQueue();
    const producer = new Producer({ redis: url, queue, payload: 'key' });
    try {
      // BullMQ refuses the id before it sends anything.
      await expect(producer.enqueue('mlp', features(ROWS, 6), { jobId: '42' })).rejects.toThrow(/integers/);
      // Redis refuses the add script: BullMQ's queue metadata holds a string.
      await redis.set(`inferq:${queue}:meta`, 'not a hash');
      const err = await producer.enqueue('mlp', features(ROWS, 7)).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(InferqError);
      expect((err as InferqError).message).toMatch(new RegExp(`^enqueue of job [0-9a-f-]+ to queue "${queue}" failed: WRONGTYPE`));
      expect((err as InferqError).retriable).toBe(true);
      expect(await payloadKeys(queue)).toEqual([]);
    } finally {
      await producer.close();
    }
  });

  it('job data never names a key outside <prefix>:<queue>:payload:, whatever the job id, prefix, delay or pack', async () => {
    for (const prefix of ['inferq', 'custom-prefix']) {
      const queue = newQueue(prefix);
      const base = `${prefix}:${queue}:payload:`;
      const producer = new Producer({ redis: url, queue, prefix, payload: 'key' });
      const packing = new Producer({ redis: url, queue, prefix, payload: 'key', linger: { ms: 50 } });
      const q = new Queue(queue, { connection: { url }, prefix });
      try {
        const odd = ['../../etc/passwd', 'other:payload:x', 'spa ce', 'ünï', '*', '{tag}', 'x'.repeat(300)];
        for (const id of odd) expect(await producer.enqueue('mlp', features(ROWS, 8), { jobId: id })).toBe(id);
        const generated = await producer.enqueue('mlp', features(ROWS, 9), { delay: 60_000 });
        const packed = await Promise.all(Array.from({ length: 30 }, (_, i) => packing.enqueue('mlp', features(1, 100 + i))));
        const jobs = await q.getJobs(['waiting', 'delayed']);
        const keys = jobs.map((j) => (j.data as JobData).key);
        expect(jobs.length).toBeGreaterThanOrEqual(odd.length + 2); // and the pack(s) of the 30 lingering jobs
        expect(jobs.reduce((n, j) => n + ((j.data as JobData).bundle ?? 0), 0)).toBe(packed.length);
        for (const [i, job] of jobs.entries()) {
          const key = keys[i]!;
          expect(key.startsWith(`${base}${job.id!}:`), `job ${job.id!}: ${key}`).toBe(true);
          expect(key.slice(`${base}${job.id!}:`.length)).toMatch(/^[0-9a-f-]{36}$/);
          expect(await redis.exists(key)).toBe(1);
        }
        expect(new Set(keys).size).toBe(keys.length);
        expect(jobs.map((j) => j.id)).toContain(generated);
        expect(await payloadKeys(queue, prefix)).toEqual([...keys].sort());
      } finally {
        await q.close();
        await packing.close();
        await producer.close();
      }
    }
  });
});
