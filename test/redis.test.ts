/**
 * The Redis transport against a real redis-server: producer SDK, BullMQ workers
 * (in process and as `inferq worker` processes), replies, dead letters, crashes.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferqError, encodeEnvelope } from '@inferq/shared';
import { PredictTimeoutError, Producer, RemoteJobError } from '@inferq/producer';
import type { Reply } from '@inferq/producer';
import { forwardMlp } from '../examples/build/onnx-builder.js';
import { ModelPool, ModelRepository, RedisWorker, silentLogger } from '@inferq/workers';
import type { RedisWorkerOptions } from '@inferq/workers';
import { redisServer } from './infra/servers.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { dropQueue, queueName, readStream, startWorker, waitFor } from './helpers/redis.js';
import { parseRepliesForTest } from './helpers/replies.js';

const url = await redisServer();
const spec = smallMlp([4, 16, 2], 9);
let repo: string;
let redis: Redis;
const queues: string[] = [];

function newQueue(): string {
  const q = queueName();
  queues.push(q);
  return q;
}

async function inProcessWorker(queue: string, over: Partial<RedisWorkerOptions> = {}): Promise<{ worker: RedisWorker; pool: ModelPool; close(): Promise<void> }> {
  const pool = new ModelPool(new ModelRepository(repo), { logger: silentLogger(), batching: { maxDelayMs: 1 } });
  const worker = new RedisWorker({ redis: url, queue, models: pool, logger: silentLogger(), concurrency: 64, ...over });
  await worker.start();
  return {
    worker,
    pool,
    close: async () => {
      await worker.close(10_000);
      await pool.close();
    },
  };
}

function features(rows: number, seed: number): number[][] {
  return Array.from({ length: rows }, (_, r) => Array.from({ length: 4 }, (_, c) => Math.sin(seed * 7 + r * 4 + c)));
}

function expectMatches(reply: Reply, x: number[][]): void {
  const want = forwardMlp(spec, { features: Float32Array.from(x.flat()) }, x.length);
  const got = reply.outputs['score']!;
  expect(got.shape).toEqual([x.length, 2]);
  for (let i = 0; i < want.length; i++) expect(Math.abs((got.data[i] as number) - want[i]!)).toBeLessThan(1e-5);
}

beforeAll(async () => {
  repo = join(await tempDir(), 'models');
  await writeModel(repo, 'mlp', '1', spec);
  redis = new Redis(url);
});

afterAll(async () => {
  for (const q of queues) await dropQueue(url, q);
  redis.disconnect();
});

describe('Redis transport', () => {
  it('predict(): enqueue → worker → reply, numerically equal to a direct forward pass, rows in order', async () => {
    const queue = newQueue();
    const w = await inProcessWorker(queue);
    const producer = new Producer({ redis: url, queue, payload: 'key' });
    try {
      for (const rows of [1, 7, 300]) {
        const x = features(rows, rows);
        const reply = await producer.predict('mlp', x, { timeoutMs: 10_000, rowIds: x.map((_, i) => `r${i}`) });
        expect(reply.ok).toBe(true);
        expect(reply.model).toBe('mlp');
        expect(reply.version).toBe('1');
        expect(reply.rowIds).toEqual(x.map((_, i) => `r${i}`));
        expectMatches(reply, x);
      }
      // Named feature objects convert at the edge too.
      const reply = await producer.predict('mlp', [{ features: [0.1, 0.2, 0.3, 0.4] }], { timeoutMs: 10_000 });
      expectMatches(reply, [[0.1, 0.2, 0.3, 0.4]]);
      // The payload key is deleted once the job completed.
      await waitFor(async () => (await redis.keys(`inferq:${queue}:payload:*`)).length === 0, 'payload keys to be deleted');
    } finally {
      await producer.close();
      await w.close();
    }
  });

  it('the inline (base64) and auto payload modes work the same; auto puts small jobs inline and large ones under a key', async () => {
    const queue = newQueue();
    const w = await inProcessWorker(queue);
    const producer = new Producer({ redis: url, queue, payload: 'inline' });
    try {
      const x = features(5, 3);
      expectMatches(await producer.predict('mlp', x, { timeoutMs: 10_000 }), x);
      const auto = new Producer({ redis: url, queue, inlineMaxBytes: 1024 });
      const q = new Queue(queue, { connection: { url }, prefix: 'inferq' });
      try {
        await auto.enqueue('mlp', features(2, 1), { jobId: 'small-one', delay: 60_000 });
        await auto.enqueue('mlp', features(200, 1), { jobId: 'big-one', delay: 60_000 });
        const small = await q.getJob('small-one');
        const big = await q.getJob('big-one');
        expect(typeof small?.data.b64).toBe('string');
        expect(small?.data.key).toBeUndefined();
        expect(big?.data.key).toMatch(new RegExp(`^inferq:${queue}:payload:big-one:[0-9a-f-]{36}$`));
        expect(await redis.exists(big?.data.key as string)).toBe(1);
        expect(await redis.keys(`inferq:${queue}:payload:small-one*`)).toEqual([]);
        expectMatches(await auto.predict('mlp', x, { timeoutMs: 10_000 }), x);
      } finally {
        await q.close();
        await auto.close();
      }
    } finally {
      await producer.close();
      await w.close();
    }
  });

  it('enqueueing the same job id twice makes one job', async () => {
    const queue = newQueue();
    const producer = new Producer({ redis: url, queue });
    const q = new Queue(queue, { connection: { url }, prefix: 'inferq' });
    try {
      const a = await producer.enqueue('mlp', features(2, 1), { jobId: 'same-id' });
      const b = await producer.enqueue('mlp', features(2, 2), { jobId: 'same-id' });
      expect(a).toBe('same-id');
      expect(b).toBe('same-id');
      expect(await q.getJobCountByTypes('waiting', 'prioritized', 'delayed')).toBe(1);
    } finally {
      await q.close();
      await producer.close();
    }
  });

  it('predict() with no worker fails with a clear timeout error', async () => {
    const producer = new Producer({ redis: url, queue: newQueue() });
    try {
      const started = Date.now();
      await expect(producer.predict('mlp', features(1, 1), { timeoutMs: 300 })).rejects.toBeInstanceOf(PredictTimeoutError);
      expect(Date.now() - started).toBeLessThan(5_000);
      await expect(producer.predict('mlp', features(1, 1), { timeoutMs: 300 })).rejects.toThrow(/no reply for job .* \(model mlp\) within 300 ms/);
    } finally {
      await producer.close();
    }
  });

  it('every kind of bad input lands in the dead letters with its reason, while good jobs keep flowing', async () => {
    const queue = newQueue();
    const w = await inProcessWorker(queue, { maxPayloadBytes: 64 * 1024 });
    const producer = new Producer({ redis: url, queue });
    const q = new Queue(queue, { connection: { url }, prefix: 'inferq' });
    try {
      const good: Promise<Reply>[] = [];
      const goodX = (i: number) => features(3, 100 + i);
      const bad: Record<string, RegExp> = {};
      const codes: Record<string, string> = {};
      const badJob = async (id: string, reason: RegExp, add: () => Promise<unknown>, code: string) => {
        bad[id] = reason;
        codes[id] = code;
        await add();
        good.push(producer.predict('mlp', goodX(good.length), { timeoutMs: 20_000 }));
      };
      await badJob('wrong-width', /input "features": expected float32 \[n,4\], got float32 \[2,3\]/, () => producer.enqueue('mlp', [[1, 2, 3], [4, 5, 6]], { jobId: 'wrong-width' }), 'BAD_SHAPE');
      await badJob('wrong-dtype', /input "features": expected float32 \[n,4\], got float64 \[1,4\]/, () =>
        producer.enqueue('mlp', { features: { dtype: 'float64', shape: [1, 4], data: new Float64Array(4) } }, { jobId: 'wrong-dtype' }),
      'BAD_DTYPE');
      await badJob('unknown-model', /unknown model "nope" in repository/, () => producer.enqueue('nope', features(1, 1), { jobId: 'unknown-model' }), 'UNKNOWN_MODEL');
      await badJob('unknown-version', /model "mlp" version "7" does not exist/, () => producer.enqueue('mlp', features(1, 1), { jobId: 'unknown-version', version: '7' }), 'UNKNOWN_VERSION');
      await badJob('nan', /non-finite value NaN at row 0, column 1/, () => producer.enqueue('mlp', [[0, Number.NaN, 0, 0]], { jobId: 'nan' }), 'NON_FINITE');
      await badJob('oversized', /payload of \d+ bytes exceeds the 65536-byte limit/, () => producer.enqueue('mlp', features(5000, 1), { jobId: 'oversized' }), 'PAYLOAD_TOO_LARGE');
      const good1 = encodeEnvelope({ id: 'corrupt', model: 'mlp' }, { features: { dtype: 'float32', shape: [1, 4], data: new Float32Array(4) } });
      const flipped = Buffer.from(good1);
      flipped[flipped.length - 3]! ^= 0x10;
      await badJob('corrupt', /envelope checksum mismatch/, async () => {
        await redis.set(`inferq:${queue}:payload:corrupt`, flipped);
        await q.add('mlp', { v: 1, model: 'mlp', rows: 1, bytes: flipped.length, key: `inferq:${queue}:payload:corrupt` }, { jobId: 'corrupt' });
      }, 'BAD_ENVELOPE');
      await badJob('truncated', /envelope truncated/, async () => {
        const t = Buffer.from(good1).subarray(0, 30);
        await redis.set(`inferq:${queue}:payload:truncated`, t);
        await q.add('mlp', { v: 1, model: 'mlp', rows: 1, bytes: t.length, key: `inferq:${queue}:payload:truncated` }, { jobId: 'truncated' });
      }, 'BAD_ENVELOPE');
      await badJob('not-ours', /job data version undefined is not supported/, () => q.add('mlp', { hello: 'world' }, { jobId: 'not-ours' }), 'BAD_JOB_DATA');
      // A forged job naming a key that is not one of this queue's payload keys: the worker does not read it.
      await badJob('foreign-key', /payload key "some:other:key" is not one of this queue's/, () => q.add('mlp', { v: 1, model: 'mlp', rows: 1, bytes: 10, key: 'some:other:key' }, { jobId: 'foreign-key' }), 'BAD_JOB_DATA');
      await badJob('missing-payload', /payload key "inferq:.*:payload:missing-payload" is missing/, () =>
        q.add('mlp', { v: 1, model: 'mlp', rows: 1, bytes: 10, key: `inferq:${queue}:payload:missing-payload` }, { jobId: 'missing-payload' }),
      'PAYLOAD_MISSING');
      const replies = await Promise.all(good);
      replies.forEach((r, i) => expectMatches(r, goodX(i)));
      const dead = async () => readStream(redis, `inferq:${queue}:dead`);
      await waitFor(async () => (await dead()).length >= Object.keys(bad).length, 'all dead letters');
      const entries = await dead();
      expect(entries.map((e) => e.fields.get('id')!.toString()).sort()).toEqual(Object.keys(bad).sort());
      for (const e of entries) {
        const id = e.fields.get('id')!.toString();
        expect(e.fields.get('reason')!.toString(), id).toMatch(bad[id]!);
        expect(e.fields.get('attempts')!.toString(), id).toBe('1'); // unrecoverable: not retried
        expect(e.fields.get('code')!.toString(), id).toBe(codes[id]);
        expect(e.fields.get('retriable')!.toString(), id).toBe('false');
      }
      // BullMQ's own record agrees: failed, not retried, reason kept.
      const failed = await q.getFailed();
      expect(failed.map((j) => j.id).sort()).toEqual(Object.keys(bad).sort());
      expect(w.worker.stats.deadLettered).toBe(Object.keys(bad).length);
    } finally {
      await q.close();
      await producer.close();
      await w.close();
    }
  });

  it('retriable failures are retried with backoff; a job that keeps failing is dead-lettered after its last try', async () => {
    const queue = newQueue();
    const pool = new ModelPool(new ModelRepository(repo), { logger: silentLogger(), batching: { maxDelayMs: 1 } });
    const failures = new Map<string, number>(); // model lookups that fail, by job's model name
    failures.set('mlp', 2);
    const flaky = {
      get: async (name: string, version?: string) => {
        const left = failures.get(name) ?? 0;
        if (name === 'always' || left > 0) {
          failures.set(name, left - 1);
          throw new InferqError(`model store unavailable (${name})`, { retriable: true });
        }
        return pool.get(name, version);
      },
    };
    const worker = new RedisWorker({ redis: url, queue, models: flaky, logger: silentLogger(), concurrency: 8 });
    await worker.start();
    const producer = new Producer({ redis: url, queue });
    try {
      const x = features(3, 1);
      const started = Date.now();
      expectMatches(await producer.predict('mlp', x, { timeoutMs: 20_000, backoff: { type: 'fixed', delay: 100 } }), x);
      expect(Date.now() - started).toBeGreaterThanOrEqual(200); // two backoffs of 100 ms
      expect(worker.stats.retried).toBe(2);
      const err = await producer.predict('always', x, { timeoutMs: 20_000, attempts: 3, backoff: { type: 'fixed', delay: 50 } }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RemoteJobError);
      expect((err as Error).message).toMatch(/model store unavailable \(always\)/);
      const dead = await readStream(redis, `inferq:${queue}:dead`);
      expect(dead).toHaveLength(1);
      expect(dead[0]!.fields.get('attempts')!.toString()).toBe('3');
      // A failure a retry could have helped says so on the wire, with its code.
      expect(dead[0]!.fields.get('retriable')!.toString()).toBe('true');
      expect((err as RemoteJobError).retriable).toBe(true);
      expect((err as RemoteJobError).code).toBe(dead[0]!.fields.get('code')!.toString());
    } finally {
      await producer.close();
      await worker.close(10_000);
      await pool.close();
    }
  });

  it('a caller waiting on predict() gets the error reply of a bad job at once', async () => {
    const queue = newQueue();
    const w = await inProcessWorker(queue);
    const producer = new Producer({ redis: url, queue });
    try {
      const err = await producer.predict('mlp', [[1, 2]], { timeoutMs: 10_000 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RemoteJobError);
      expect((err as RemoteJobError).kind).toBe('InvalidInputError');
      expect((err as RemoteJobError).code).toBe('BAD_SHAPE');
      expect((err as Error).message).toMatch(/expected float32 \[n,4\], got float32 \[1,2\]/);
    } finally {
      await producer.close();
      await w.close();
    }
  });

  /** Every reply on a stream so far, by job id (entries that answer packs hold several). */
  async function repliesOn(stream: string): Promise<Map<string, Reply>> {
    const out = new Map<string, Reply>();
    for (const e of await readStream(redis, stream)) for (const r of parseRepliesForTest(e.fields)) out.set(r.id, r);
    return out;
  }

  it('linger: small enqueue() calls are packed into one tensor per pack, and a bad or late job fails alone', async () => {
    const queue = newQueue();
    const stream = `inferq:${queue}:replies`;
    const other = `inferq:${queue}:replies-2`;
    const w = await inProcessWorker(queue);
    const producer = new Producer({ redis: url, queue, linger: { ms: 20, maxJobs: 100 } });
    const q = new Queue(queue, { connection: { url }, prefix: 'inferq' });
    try {
      const n = 250;
      const xs = Array.from({ length: n }, (_, i) => features(1 + (i % 3), 500 + i));
      const nan = features(2, 9);
      nan[1]![2] = Number.NaN;
      const input = (i: number): number[][] => (i === 17 ? [[1, 2, 3]] : i === 42 ? nan : xs[i]!);
      const ids = await Promise.all(
        xs.map((_, i) =>
          producer.enqueue('mlp', input(i), {
            replyTo: i % 50 === 7 ? other : stream, // a second reply stream: packs of its own
            rowIds: input(i).map((_, r) => `${i}.${r}`),
            ...(i === 99 ? { deadline: Date.now() - 1 } : {}), // already late: dead-lettered, its pack runs
          }),
        ),
      );
      const toOther = new Set(xs.flatMap((_, i) => (i % 50 === 7 ? [ids[i]!] : [])));
      await waitFor(async () => (await repliesOn(stream)).size + (await repliesOn(other)).size >= n, 'all replies');
      const main = await repliesOn(stream);
      const second = await repliesOn(other);
      expect(new Set(second.keys())).toEqual(toOther);
      expect(main.size + second.size).toBe(n);
      ids.forEach((id, i) => {
        const r = (toOther.has(id) ? second : main).get(id)!;
        if (i === 17) {
          expect(r.error?.message).toMatch(/expected float32 \[n,4\], got float32 \[1,3\]/);
        } else if (i === 42) {
          expect(r.error?.message).toMatch(/NaN/);
          expect(r.error?.message).toContain(id.slice(0, 8)); // names the job, not the pack
        } else if (i === 99) {
          expect(r.error?.kind).toBe('DeadlineExceededError');
        } else {
          expect(r.ok, `job ${i}: ${r.error?.message}`).toBe(true);
          expectMatches(r, xs[i]!);
          expect(r.rowIds).toEqual(xs[i]!.map((_, k) => `${i}.${k}`));
        }
      });
      const dead = await readStream(redis, `inferq:${queue}:dead`);
      expect(dead.map((e) => e.fields.get('id')!.toString()).sort()).toEqual([ids[17], ids[42], ids[99]].sort());
      // Fewer reply entries than jobs: the first pack (jobs 0–~103, holding 42 and 99) ran job by
      // job, one entry each; a pack that ran whole answers all its jobs in one entry.
      expect((await readStream(redis, stream)).length).toBeLessThan(n / 2);
      // The packs holding job 42 and job 99 were run job by job.
      expect(w.worker.stats.packsSplit).toBeGreaterThanOrEqual(1);
      await waitFor(() => w.worker.stats.completed >= 3, 'the packs to be completed');
      expect(w.worker.stats.completed).toBeLessThanOrEqual(12); // far fewer queue messages than jobs
      expect(await q.getFailedCount()).toBe(1); // job 17 travelled alone (its row shape packs with no other), as an ordinary job
    } finally {
      await q.close();
      await producer.close();
      await w.close();
    }
  });

  it('linger: concurrent predict() calls share packs and each gets its own rows back; subscribe() splits packed entries', async () => {
    const queue = newQueue();
    const stream = `inferq:${queue}:replies`;
    const w = await inProcessWorker(queue);
    const producer = new Producer({ redis: url, queue, linger: { ms: 10 } });
    try {
      const xs = Array.from({ length: 40 }, (_, i) => features(1, 900 + i));
      const bad = features(1, 3);
      bad[0]![0] = Number.POSITIVE_INFINITY;
      const results = await Promise.allSettled(xs.map((x, i) => producer.predict('mlp', i === 5 ? bad : x, { timeoutMs: 10_000 })));
      results.forEach((r, i) => {
        if (i === 5) {
          expect(r.status).toBe('rejected');
          expect((r as PromiseRejectedResult).reason).toBeInstanceOf(RemoteJobError);
          expect(((r as PromiseRejectedResult).reason as Error).message).toMatch(/Infinity/);
        } else {
          expect(r.status).toBe('fulfilled');
          expectMatches((r as PromiseFulfilledResult<Reply>).value, xs[i]!);
        }
      });
      // Packed replies through a consumer group: each job once; an entry whose handler threw is delivered again, whole.
      const ids = await Promise.all(xs.map((x) => producer.enqueue('mlp', x, { replyTo: stream })));
      await waitFor(async () => (await repliesOn(stream)).size >= ids.length, 'the replies');
      const seen: string[] = [];
      let failed = false;
      const sub = producer.subscribe(stream, (r) => {
        if (!failed && r.id === ids[3]) {
          failed = true;
          throw new Error('handler crashed');
        }
        seen.push(r.id);
      }, { group: 'g', consumer: 'A', blockMs: 100, claimIdleMs: 200 });
      try {
        await waitFor(() => new Set(seen).size >= ids.length, 'every reply handled');
      } finally {
        await sub.close();
      }
      expect(new Set(seen)).toEqual(new Set(ids));
      // The replies packed with job 3 came again with it (the entry was redelivered whole).
      expect(seen.length).toBeGreaterThan(ids.length);
      expect(seen.filter((id) => id === ids[3])).toHaveLength(1);
    } finally {
      await producer.close();
      await w.close();
    }
  });

  it('linger: a caller may reuse its arrays at once, and a job as large as a pack is sent alone', async () => {
    const queue = newQueue();
    const stream = `inferq:${queue}:replies`;
    const producer = new Producer({ redis: url, queue, linger: { ms: 20, maxBytes: 4096 } });
    const q = new Queue(queue, { connection: { url }, prefix: 'inferq' });
    try {
      // No worker yet: look at what was queued.
      const shared = new Float32Array(4);
      const small = [0, 1, 2].map((i) => {
        shared.set(features(1, 70 + i)[0]!);
        return producer.enqueue('mlp', { features: { dtype: 'float32', shape: [1, 4], data: shared } }, { replyTo: stream });
      });
      shared.fill(Number.NaN); // after enqueue() returned: the jobs hold their own copies
      const big = features(300, 77); // 4,800 bytes ≥ maxBytes
      const [ids, bigId] = await Promise.all([Promise.all(small), producer.enqueue('mlp', big, { replyTo: stream })]);
      const jobs = await q.getJobs(['wait']);
      expect(jobs.map((j) => (j.data as { bundle?: number }).bundle ?? 1).sort()).toEqual([1, 3]);
      expect(jobs.some((j) => j.id === bigId)).toBe(true); // an ordinary job, under its own id
      const w = await inProcessWorker(queue);
      try {
        await waitFor(async () => (await repliesOn(stream)).size >= 4, 'the replies');
        const replies = await repliesOn(stream);
        ids.forEach((id, i) => expectMatches(replies.get(id)!, features(1, 70 + i)));
        expectMatches(replies.get(bigId)!, big);
      } finally {
        await w.close();
      }
    } finally {
      await q.close();
      await producer.close();
    }
  });

  it('linger: when a pack cannot be sent, each of its callers gets an error that says so', async () => {
    const queue = newQueue();
    // BullMQ's queue metadata key holding a string: its add-job script fails with WRONGTYPE.
    await redis.set(`inferq:${queue}:meta`, 'not a hash');
    const producer = new Producer({ redis: url, queue, linger: { ms: 5 } });
    try {
      const results = await Promise.allSettled([1, 2, 3].map((i) => producer.enqueue('mlp', features(1, i))));
      for (const r of results) {
        expect(r.status).toBe('rejected');
        expect(((r as PromiseRejectedResult).reason as Error).message).toMatch(/enqueue of 3 packed jobs \(model mlp\) failed: .*WRONGTYPE/);
        expect(((r as PromiseRejectedResult).reason as InferqError).retriable).toBe(true);
      }
    } finally {
      await producer.close();
    }
  });

  it('subscribe(): a consumer group shares a reply stream, and a restarted subscriber gets what it had not acknowledged', async () => {
    const queue = newQueue();
    const stream = `inferq:${queue}:replies`;
    const w = await inProcessWorker(queue);
    const producer = new Producer({ redis: url, queue });
    try {
      const ids = await Promise.all(Array.from({ length: 40 }, (_, i) => producer.enqueue('mlp', features(2, i), { replyTo: stream, jobId: `s-${i}` })));
      const seenA: string[] = [];
      const seenB: string[] = [];
      let failOnce = 5; // A fails its first 5 replies: they stay pending for A
      const a = producer.subscribe(stream, (r) => {
        if (failOnce-- > 0) throw new Error('handler crashed');
        seenA.push(r.id);
      }, { group: 'g', consumer: 'A', count: 5, blockMs: 100 });
      const b = producer.subscribe(stream, (r) => void seenB.push(r.id), { group: 'g', consumer: 'B', count: 5, blockMs: 100 });
      await waitFor(() => seenA.length + seenB.length >= 35, '35 replies handled');
      await a.close();
      await b.close();
      expect(seenA.length).toBeGreaterThan(0);
      expect(seenB.length).toBeGreaterThan(0);
      expect(new Set([...seenA, ...seenB]).size).toBe(seenA.length + seenB.length); // each reply to one consumer
      // A restarts with the same name: its 5 unacknowledged replies come first.
      const again: string[] = [];
      const a2 = producer.subscribe(stream, (r) => void again.push(r.id), { group: 'g', consumer: 'A', blockMs: 100 });
      await waitFor(() => seenA.length + seenB.length + again.length >= 40, 'all 40 replies');
      await a2.close();
      expect(new Set([...seenA, ...seenB, ...again])).toEqual(new Set(ids));
      expect(again.length).toBe(5);
    } finally {
      await producer.close();
      await w.close();
    }
  });

  it('subscribe(): replies left pending by a dead consumer are claimed by another', async () => {
    const queue = newQueue();
    const stream = `inferq:${queue}:replies`;
    const w = await inProcessWorker(queue);
    const producer = new Producer({ redis: url, queue });
    try {
      await Promise.all(Array.from({ length: 10 }, (_, i) => producer.enqueue('mlp', features(1, i), { replyTo: stream, jobId: `c-${i}` })));
      // A "dead" consumer: reads everything and never acknowledges.
      await waitFor(async () => (await redis.xlen(stream)) === 10, '10 replies');
      await redis.xgroup('CREATE', stream, 'g2', '0', 'MKSTREAM');
      await redis.xreadgroup('GROUP', 'g2', 'dead', 'COUNT', 100, 'STREAMS', stream, '>');
      const got: string[] = [];
      const sub = producer.subscribe(stream, (r) => void got.push(r.id), { group: 'g2', consumer: 'alive', claimIdleMs: 200, blockMs: 50 });
      await waitFor(() => got.length === 10, 'claimed replies');
      await sub.close();
      expect(new Set(got).size).toBe(10);
    } finally {
      await producer.close();
      await w.close();
    }
  });
});

describe('Redis workers as processes', () => {
  it('a worker asked to serve an unknown model exits with the reason instead of hanging', async () => {
    const w = startWorker(['--queue', newQueue(), '--redis', url, '--model-repo', repo, '--models', 'mlp,nope']);
    const exit = await w.exited;
    expect(exit.code).toBe(1);
    expect(w.output()).toMatch(/inferq: error: unknown model "nope" in repository .*; available: mlp/);
  });

  it('10,000 jobs through 2 worker processes: none lost, none duplicated', async () => {
    const queue = newQueue();
    const stream = `inferq:${queue}:replies`;
    const args = ['--queue', queue, '--redis', url, '--model-repo', repo, '--models', 'mlp', '--threads', '1'];
    const workers = [startWorker(args), startWorker(args)];
    const producer = new Producer({ redis: url, queue });
    try {
      await Promise.all(workers.map((w) => w.ready));
      const n = 10_000;
      for (let i = 0; i < n; i += 500) {
        await Promise.all(Array.from({ length: Math.min(500, n - i) }, (_, k) => producer.enqueue('mlp', features(1 + ((i + k) % 5), i + k), { jobId: `j-${i + k}`, replyTo: stream })));
      }
      await waitFor(async () => (await redis.xlen(stream)) >= n, `${n} replies`, 120_000, 200);
      const entries = await readStream(redis, stream);
      const ids = entries.map((e) => e.fields.get('id')!.toString());
      expect(ids.length).toBe(n);
      expect(new Set(ids).size).toBe(n);
      expect(entries.every((e) => e.fields.get('status')!.toString() === 'ok')).toBe(true);
      expect(await redis.xlen(`inferq:${queue}:dead`)).toBe(0);
    } finally {
      for (const w of workers) w.child.kill('SIGTERM');
      await Promise.all(workers.map((w) => w.exited));
      await producer.close();
    }
  }, 240_000);

  it('kill -9 of a worker mid-run loses nothing: its jobs are taken over by the other worker', async () => {
    const queue = newQueue();
    const stream = `inferq:${queue}:replies`;
    const args = ['--queue', queue, '--redis', url, '--model-repo', repo, '--models', 'mlp', '--lock-duration-ms', '2000', '--threads', '1'];
    const victim = startWorker(args);
    const survivor = startWorker(args);
    const producer = new Producer({ redis: url, queue });
    try {
      await Promise.all([victim.ready, survivor.ready]);
      const n = 3000;
      for (let i = 0; i < n; i += 500) {
        await Promise.all(Array.from({ length: 500 }, (_, k) => producer.enqueue('mlp', features(20, i + k), { jobId: `k-${i + k}`, replyTo: stream })));
      }
      await waitFor(async () => (await redis.xlen(stream)) >= 500, 'some replies before the kill', 60_000, 20);
      victim.child.kill('SIGKILL');
      expect((await victim.exited).signal).toBe('SIGKILL');
      await waitFor(async () => new Set((await readStream(redis, stream)).map((e) => e.fields.get('id')!.toString())).size >= n, `replies for all ${n} jobs`, 120_000, 250);
      const ids = new Set((await readStream(redis, stream)).map((e) => e.fields.get('id')!.toString()));
      for (let i = 0; i < n; i++) expect(ids.has(`k-${i}`)).toBe(true);
      expect(await redis.xlen(`inferq:${queue}:dead`)).toBe(0);
    } finally {
      survivor.child.kill('SIGTERM');
      await survivor.exited;
      await producer.close();
    }
  }, 240_000);

  it('SIGTERM drains: in-flight jobs finish and are acknowledged, the rest wait for the next worker', async () => {
    const queue = newQueue();
    const stream = `inferq:${queue}:replies`;
    const args = ['--queue', queue, '--redis', url, '--model-repo', repo, '--models', 'mlp', '--shutdown-timeout-ms', '20000'];
    const first = startWorker(args);
    const producer = new Producer({ redis: url, queue });
    const q = new Queue(queue, { connection: { url }, prefix: 'inferq' });
    try {
      await first.ready;
      const n = 3000;
      for (let i = 0; i < n; i += 500) {
        await Promise.all(Array.from({ length: 500 }, (_, k) => producer.enqueue('mlp', features(1000, i + k), { jobId: `t-${i + k}`, replyTo: stream })));
      }
      await waitFor(async () => (await redis.xlen(stream)) >= 200, 'work under way', 60_000, 20);
      const t0 = Date.now();
      first.child.kill('SIGTERM');
      const exit = await first.exited;
      expect(exit.code).toBe(0);
      expect(Date.now() - t0).toBeLessThan(20_000);
      expect(await q.getActiveCount()).toBe(0); // nothing left half-done
      const done = await redis.xlen(stream);
      expect(done).toBeLessThan(n); // it really stopped pulling
      const second = startWorker(args);
      await second.ready;
      await waitFor(async () => (await redis.xlen(stream)) >= n, 'the rest, by the next worker', 120_000, 200);
      second.child.kill('SIGTERM');
      await second.exited;
      const ids = (await readStream(redis, stream)).map((e) => e.fields.get('id')!.toString());
      expect(new Set(ids).size).toBe(n);
      expect(ids.length).toBe(n); // drained jobs were acknowledged: none ran twice
    } finally {
      await q.close();
      await producer.close();
    }
  }, 240_000);

  it('a producer far ahead of the worker: in-flight work and memory stay bounded by the worker concurrency', async () => {
    const queue = newQueue();
    const stream = `inferq:${queue}:replies`;
    const concurrency = 32;
    const producer = new Producer({ redis: url, queue });
    const q = new Queue(queue, { connection: { url }, prefix: 'inferq' });
    // The whole backlog is queued before any worker runs: 3,000 jobs × 2,000 rows (≈ 100 MB of features).
    const n = 3000;
    for (let i = 0; i < n; i += 250) {
      await Promise.all(Array.from({ length: 250 }, (_, k) => producer.enqueue('mlp', features(2000, i + k), { jobId: `f-${i + k}`, replyTo: stream })));
    }
    expect(await q.getWaitingCount()).toBe(n);
    const w = startWorker(['--queue', queue, '--redis', url, '--model-repo', repo, '--models', 'mlp', '--concurrency', String(concurrency), '--threads', '1']);
    try {
      await w.ready;
      const rss = async (): Promise<number> => {
        const status = await readFile(`/proc/${w.child.pid}/status`, 'utf8');
        return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
      };
      const baseline = await rss();
      let maxActive = 0;
      let maxRss = 0;
      await waitFor(
        async () => {
          maxActive = Math.max(maxActive, await q.getActiveCount());
          maxRss = Math.max(maxRss, await rss());
          return (await redis.xlen(stream)) >= n;
        },
        'all jobs',
        180_000,
        25,
      );
      expect(maxActive).toBeGreaterThan(0);
      expect(maxActive).toBeLessThanOrEqual(concurrency); // never more than `concurrency` jobs pulled at once
      expect(maxRss - baseline).toBeLessThan(200 * 1024 * 1024); // the ~100 MB backlog stayed in Redis
    } finally {
      w.child.kill('SIGTERM');
      await w.exited;
      await q.close();
      await producer.close();
    }
  }, 240_000);
});
