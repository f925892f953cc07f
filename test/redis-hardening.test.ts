/**
 * Redis workers when things go wrong: a job sink that can never be written, servers that
 * are down at start or at shutdown, reused job ids, crashes between a reply and the
 * acknowledgement, zero-row jobs, and roll records forged by someone who can write Redis.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Producer } from '@inferq/producer';
import type { FeatureBatch } from '@inferq/producer';
import { forwardMlp } from '../examples/build/onnx-builder.js';
import { ModelPool, ModelRepository, RedisWorker, WebHdfs, silentLogger } from '@inferq/workers';
import { startHdfs } from './infra/hdfs.js';
import { freePort, startRedis } from './infra/redis.js';
import { redisServer } from './infra/servers.js';
import { readLocalDataset } from './helpers/datasets.js';
import { captureLogger, smallMlp, tempDir, writeModel } from './helpers/models.js';
import { dropQueue, queueName, readStream, startWorker, waitFor } from './helpers/redis.js';

const url = await redisServer();
const spec = smallMlp([4, 16, 2], 9);
let repo: string;
let redis: Redis;
const queues: string[] = [];

function newQueue(): string {
  const q = queueName('hard');
  queues.push(q);
  return q;
}

function features(rows: number, seed: number): number[][] {
  return Array.from({ length: rows }, (_, r) => Array.from({ length: 4 }, (_, c) => Math.sin(seed * 7 + r * 4 + c)));
}

/** Nothing waiting, delayed or running in the queue. */
async function idle(serverUrl: string, queue: string): Promise<boolean> {
  const q = new Queue(queue, { connection: { url: serverUrl }, prefix: 'inferq' });
  try {
    const c = await q.getJobCounts('wait', 'active', 'delayed', 'prioritized');
    return Object.values(c).every((v) => v === 0);
  } finally {
    await q.close();
  }
}

function workerArgs(queue: string, more: string[] = [], serverUrl = url): string[] {
  return ['--transport', 'redis', '--queue', queue, '--redis', serverUrl, '--model-repo', repo, '--models', 'mlp', '--threads', '1', ...more];
}

/** Dead letters of a queue: id → reason. */
async function deadLetters(queue: string, r: Redis = redis): Promise<Map<string, string>> {
  return new Map((await readStream(r, `inferq:${queue}:dead`)).map((e) => [e.fields.get('id')!.toString(), e.fields.get('reason')!.toString()]));
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

describe('a job sink that can never be written', () => {
  it('fails only its own jobs (dead letter naming the folder and the error); every other row is written once, the worker keeps serving, a kill -9 and restart lose nothing', async () => {
    const queue = newQueue();
    const root = await tempDir();
    const all = join(root, 'all');
    await mkdir(join(root, 'jobs', 'late'), { recursive: true });
    await writeFile(join(root, 'jobs', 'a-file'), 'a file, not a folder');
    // Passes the probe (the folder can be created) but not the roll (its partition folder is a file).
    await writeFile(join(root, 'jobs', 'late', 'model=mlp'), 'in the way');
    const args = workerArgs(queue, ['--sink', `parquet:${all}`, '--allow-job-sinks', join(root, 'jobs'), '--sink-roll-rows', '200', '--sink-roll-ms', '300', '--lock-duration-ms', '2000', '--shutdown-timeout-ms', '5000']);
    const producer = new Producer({ redis: url, queue });
    let w = startWorker(args);
    try {
      await w.ready;
      const good: string[] = [];
      const early: string[] = [];
      const late: string[] = [];
      const ok: string[] = [];
      const sends: Promise<string>[] = [];
      for (let k = 0; k < 330; k++) {
        if (k % 33 === 5) sends.push(producer.enqueue('mlp', features(2, k), { jobId: `early-${k}`, sinks: [join(root, 'jobs', 'a-file', 'sub')] }).then((id) => (early.push(id), id)));
        else if (k % 33 === 17) sends.push(producer.enqueue('mlp', features(2, k), { jobId: `late-${k}`, sinks: [join(root, 'jobs', 'late')] }).then((id) => (late.push(id), id)));
        else if (k % 33 === 25) sends.push(producer.enqueue('mlp', features(2, k), { jobId: `ok-${k}`, sinks: [join(root, 'jobs', 'ok')] }).then((id) => (ok.push(id), id)));
        else sends.push(producer.enqueue('mlp', features(2, k), { jobId: `good-${k}` }).then((id) => (good.push(id), id)));
      }
      await Promise.all(sends);
      await waitFor(() => idle(url, queue), 'the queue to drain', 60_000, 100);
      const dead = await deadLetters(queue);
      expect([...dead.keys()].sort()).toEqual([...early, ...late].sort());
      for (const id of early) expect(dead.get(id)).toMatch(/job sink ".*\/jobs\/a-file\/sub" cannot be written: .*ENOTDIR/);
      for (const id of late) expect(dead.get(id)).toMatch(/job sink ".*\/jobs\/late" refused the rows: .*ENOTDIR/);
      const everything = await readLocalDataset(all);
      expect(everything.jobs).toEqual([...good, ...ok].sort());
      expect(everything.rows).toBe(2 * (good.length + ok.length));
      expect(everything.distinct).toBe(everything.rows);
      const own = await readLocalDataset(join(root, 'jobs', 'ok'));
      expect(own.jobs).toEqual([...ok].sort());
      expect(own.rows).toBe(2 * ok.length);

      // More of the same, and a kill -9 in the middle: a restarted worker loses none of the good rows.
      const more = Array.from({ length: 600 }, (_, k) => 1000 + k);
      await Promise.all(more.map((k) => producer.enqueue('mlp', features(2, k), k % 50 === 0 ? { jobId: `late-${k}`, sinks: [join(root, 'jobs', 'late')] } : { jobId: `good-${k}` })));
      await waitFor(async () => (await readLocalDataset(all)).rows > everything.rows, 'rolls of the second batch', 60_000, 100);
      w.child.kill('SIGKILL');
      await w.exited;
      w = startWorker(args);
      await w.ready;
      await waitFor(() => idle(url, queue), 'the queue to drain after the restart', 90_000, 200);
      const after = await readLocalDataset(all);
      const goodMore = more.filter((k) => k % 50 !== 0).map((k) => `good-${k}`);
      expect(after.jobs).toEqual([...good, ...ok, ...goodMore].sort());
      expect(after.rows).toBe(2 * (good.length + ok.length + goodMore.length));
      expect(after.distinct).toBe(after.rows);
      expect([...(await deadLetters(queue)).keys()].filter((id) => id.startsWith('good-'))).toEqual([]);

      const t0 = Date.now();
      w.child.kill('SIGTERM');
      expect((await w.exited).code).toBe(0);
      expect(Date.now() - t0).toBeLessThan(8000);
    } finally {
      w.child.kill('SIGKILL');
      await producer.close();
    }
  }, 240_000);
});

describe('shutdown and start, whatever is down', () => {
  it('a worker that cannot reach Redis at start exits 1 with one line naming the address and the cause', async () => {
    const port = await freePort();
    const t0 = Date.now();
    const w = startWorker(workerArgs(newQueue(), ['--connect-timeout-ms', '1500'], `redis://127.0.0.1:${port}`));
    const exit = await w.exited;
    expect(exit.code).toBe(1);
    expect(Date.now() - t0).toBeLessThan(20_000);
    const errors = w.output().split('\n').filter((l) => l.startsWith('inferq: error:'));
    expect(errors).toEqual([expect.stringMatching(new RegExp(`^inferq: error: cannot reach Redis at 127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`))]);
  }, 60_000);

  it('SIGTERM while Redis is unreachable ends the worker within --shutdown-timeout-ms, starting or serving', async () => {
    // Starting: Redis was never there.
    const port = await freePort();
    const starting = startWorker(workerArgs(newQueue(), ['--connect-timeout-ms', '120000', '--shutdown-timeout-ms', '2000'], `redis://127.0.0.1:${port}`));
    await waitFor(() => starting.output().includes('connection error (retrying)'), 'the worker to try to connect', 30_000, 50);
    let t0 = Date.now();
    starting.child.kill('SIGTERM');
    await starting.exited;
    expect(Date.now() - t0).toBeLessThan(2000 + 3000);

    // Serving: Redis goes away under it, with jobs in flight.
    const own = await startRedis();
    const queue = queueName('down');
    const w = startWorker(workerArgs(queue, ['--shutdown-timeout-ms', '3000'], own.url));
    const producer = new Producer({ redis: own.url, queue });
    try {
      await w.ready;
      await Promise.all(Array.from({ length: 200 }, (_, k) => producer.enqueue('mlp', features(500, k))));
      await own.stop();
      t0 = Date.now();
      w.child.kill('SIGTERM');
      await w.exited;
      expect(Date.now() - t0).toBeLessThan(3000 + 3000);
    } finally {
      w.child.kill('SIGKILL');
      await producer.close().catch(() => undefined);
      await own.stop();
    }
  }, 120_000);

  it('SIGTERM with HDFS down mid-roll: the worker ends in time, acknowledges nothing unwritten, and the next worker writes every row once', async () => {
    const hdfs = await startHdfs();
    const hostPort = hdfs.url.replace(/^http:\/\//, '');
    const queue = newQueue();
    const args = workerArgs(queue, ['--sink', `parquet:webhdfs://${hostPort}/out`, '--sink-roll-rows', '100000', '--sink-roll-ms', '1000', '--shutdown-timeout-ms', '4000']);
    const producer = new Producer({ redis: url, queue });
    const q = new Queue(queue, { connection: { url }, prefix: 'inferq' });
    let w = startWorker(args);
    try {
      await w.ready;
      await hdfs.stop();
      await Promise.all(Array.from({ length: 50 }, (_, k) => producer.enqueue('mlp', features(2, k), { jobId: `h-${k}` })));
      await waitFor(() => w.output().includes('sink roll failed'), 'a roll to fail', 60_000, 50);
      const t0 = Date.now();
      w.child.kill('SIGTERM');
      expect((await w.exited).code).toBe(0);
      expect(Date.now() - t0).toBeLessThan(4000 + 3000);
      // Nothing was acknowledged: every job is back in the queue.
      expect(await q.getCompletedCount()).toBe(0);
      expect(await q.getWaitingCount()).toBe(50);
      await hdfs.start();
      w = startWorker(args);
      await w.ready;
      await waitFor(() => idle(url, queue), 'the jobs to be written by the next worker', 120_000, 200);
      const local = await tempDir();
      const fs = new WebHdfs({ url: hdfs.url });
      const copy = async (dir: string, to: string): Promise<void> => {
        await mkdir(to, { recursive: true });
        for (const s of await fs.listStatus(dir)) {
          if (s.pathSuffix === '_temporary') continue;
          if (s.type === 'DIRECTORY') await copy(`${dir}/${s.pathSuffix}`, join(to, s.pathSuffix));
          else await writeFile(join(to, s.pathSuffix), await fs.open(`${dir}/${s.pathSuffix}`));
        }
      };
      await copy('/out', local);
      const d = await readLocalDataset(local);
      expect(d.rows).toBe(100);
      expect(d.distinct).toBe(100);
    } finally {
      w.child.kill('SIGTERM');
      await w.exited;
      await q.close();
      await producer.close();
      await hdfs.destroy();
    }
  }, 300_000);
});

describe('job runs', () => {
  it('a job id used again after its job completed is a new job: both jobs\' rows are written', async () => {
    const queue = newQueue();
    const sink = join(await tempDir(), 'out');
    const w = startWorker(workerArgs(queue, ['--sink', `parquet:${sink}`, '--sink-roll-ms', '200']));
    const producer = new Producer({ redis: url, queue });
    try {
      await w.ready;
      const a = features(3, 1);
      const b = features(3, 2);
      await producer.enqueue('mlp', a, { jobId: 'same-id' });
      await waitFor(async () => (await readLocalDataset(sink)).rows === 3, 'the first job\'s rows', 30_000, 100);
      await waitFor(() => idle(url, queue), 'the first job to complete', 30_000, 50);
      await producer.enqueue('mlp', b, { jobId: 'same-id' });
      await waitFor(async () => (await readLocalDataset(sink)).rows === 6, 'the second job\'s rows', 30_000, 100);
      const d = await readLocalDataset(sink);
      const want = [...forwardMlp(spec, { features: Float32Array.from(a.flat()) }, 3), ...forwardMlp(spec, { features: Float32Array.from(b.flat()) }, 3)];
      const got = d.all.flatMap(([, , s0, s1]) => [s0, s1]).sort((x, y) => x - y);
      want.sort((x, y) => x - y);
      expect(got.length).toBe(want.length);
      got.forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThan(1e-5));
    } finally {
      w.child.kill('SIGTERM');
      await w.exited;
      await producer.close();
    }
  }, 120_000);

  it('a job that replied before a crash is not failed for its deadline when it runs again, and does not reply twice', async () => {
    const queue = newQueue();
    const sink = join(await tempDir(), 'out');
    const stream = `inferq:${queue}:replies`;
    const producer = new Producer({ redis: url, queue });
    // The job replies, then waits for a roll that is a minute away: the crash comes between the two.
    const first = startWorker(workerArgs(queue, ['--sink', `parquet:${sink}`, '--sink-roll-ms', '60000', '--lock-duration-ms', '2000']));
    let second: ReturnType<typeof startWorker> | undefined;
    try {
      await first.ready;
      const deadline = Date.now() + 2000;
      await producer.enqueue('mlp', features(2, 7), { jobId: 'replied-once', replyTo: stream, deadline });
      await waitFor(async () => (await redis.xlen(stream)) === 1, 'the reply', 30_000, 20);
      first.child.kill('SIGKILL');
      await first.exited;
      second = startWorker(workerArgs(queue, ['--sink', `parquet:${sink}`, '--sink-roll-ms', '200', '--lock-duration-ms', '2000']));
      await second.ready;
      await waitFor(() => idle(url, queue), 'the job to run again and complete', 60_000, 100);
      expect(Date.now()).toBeGreaterThan(deadline);
      expect(await redis.xlen(`inferq:${queue}:dead`)).toBe(0);
      const replies = await readStream(redis, stream);
      expect(replies.map((e) => e.fields.get('status')!.toString())).toEqual(['ok']);
      const d = await readLocalDataset(sink);
      expect(d.jobs).toEqual(['replied-once']);
      expect(d.rows).toBe(2);
    } finally {
      first.child.kill('SIGKILL');
      second?.child.kill('SIGTERM');
      await second?.exited;
      await producer.close();
    }
  }, 120_000);

  it('a forged roll record (files outside the sink, "..") is ignored: nothing is deleted, the job\'s rows are written', async () => {
    const queue = newQueue();
    const root = await tempDir();
    const sink = join(root, 'out');
    const w = startWorker(workerArgs(queue, ['--sink', `parquet:${sink}`, '--sink-roll-ms', '200']));
    const producer = new Producer({ redis: url, queue });
    const q = new Queue(queue, { connection: { url }, prefix: 'inferq' });
    try {
      await w.ready;
      await producer.enqueue('mlp', features(2, 1), { jobId: 'earlier' });
      await waitFor(async () => (await readLocalDataset(sink)).rows === 2, 'an earlier job\'s rows', 30_000, 100);
      const inside = join(sink, (await readLocalDataset(sink)).files[0]!);
      const outside = join(root, 'precious.parquet');
      await writeFile(outside, 'precious');
      const insideBytes = await readFile(inside);
      await producer.enqueue('mlp', features(2, 2), { jobId: 'forged', delay: 600_000 });
      const job = (await q.getJob('forged'))!;
      // What an attacker with write access to Redis can do: a record naming files to "clean up", and a job that looks run before.
      await redis.hset(`inferq:${queue}:run:forged:${job.timestamp}`, 'sunk:forged', JSON.stringify({ [`file://${sink}`]: [inside, outside, `${sink}/../precious.parquet`], 'file:///etc': ['/etc/hostname'] }));
      await redis.hincrby(`inferq:${queue}:forged`, 'ats', 1);
      await job.promote();
      await waitFor(async () => (await readLocalDataset(sink)).jobs.includes('forged'), 'the forged job\'s rows', 30_000, 100);
      expect(await readFile(outside, 'utf8')).toBe('precious');
      expect(await readFile(inside)).toEqual(insideBytes);
      const d = await readLocalDataset(sink);
      expect(d.rows).toBe(4);
      expect(w.output()).toMatch(/ignoring a roll record that names files outside the sinks this worker may write/);
    } finally {
      w.child.kill('SIGTERM');
      await w.exited;
      await q.close();
      await producer.close();
    }
  }, 120_000);

  it('zero-row jobs get a zero-row reply with every output; names from the queue are escaped in dead letters and logs', async () => {
    const queue = newQueue();
    const { logger, lines } = captureLogger();
    const pool = new ModelPool(new ModelRepository(repo), { logger: silentLogger(), batching: { maxDelayMs: 1 } });
    const worker = new RedisWorker({ redis: url, queue, models: pool, logger });
    const producer = new Producer({ redis: url, queue });
    try {
      await worker.start();
      const batches: FeatureBatch[] = [{ features: { dtype: 'float32', shape: [0, 4], data: new Float32Array(0) } }, {}, []];
      for (const batch of batches) {
        const reply = await producer.predict('mlp', batch, { timeoutMs: 10_000 });
        expect(reply.ok).toBe(true);
        expect(reply.outputs['score']!.shape).toEqual([0, 2]);
        expect(reply.outputs['score']!.data.length).toBe(0);
      }
      const evil = 'job\u202e\nforged log line';
      await producer.enqueue('mlp', [[1, 2, 3]], { jobId: evil }); // three features where the model takes four
      await waitFor(async () => (await deadLetters(queue)).size === 1, 'the dead letter', 30_000, 50);
      const reason = (await deadLetters(queue)).get(evil)!;
      expect(reason).toContain('(job job\\u202e\\u000afor…)');
      expect(reason).not.toMatch(/[\u202e\n]/);
      const logged = lines.filter((l) => l['msg'] === 'job dead-lettered');
      expect(logged).toHaveLength(1);
      expect(logged[0]!['jobId']).toBe('job\\u202e\\u000aforged log line');
    } finally {
      await producer.close();
      await worker.close(5000);
      await pool.close();
    }
  }, 60_000);
});
