/**
 * `inferq dead-letters list|show|replay|purge` against a real Redis and a real Kafka broker:
 * jobs fail on a worker that does not serve their model, are listed and shown, replayed (under
 * their own job ids) once a worker serves it, and purged.
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KafkaProducer, Producer, parseKafkaReply } from '@inferq/producer';
import { KafkaWorker, ModelPool, ModelRepository, RedisWorker, silentLogger } from '@inferq/workers';
import { kafkaServer, redisServer } from './infra/servers.js';
import { runCli } from './helpers/cli.js';
import { createTopic, header, readTopic, topicName, withAdmin } from './helpers/kafka.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { dropQueue, queueName, readStream, waitFor } from './helpers/redis.js';
import { parseRepliesForTest } from './helpers/replies.js';

const url = await redisServer();
const brokers = await kafkaServer();
let repo: string;
let redis: Redis;
const queues: string[] = [];

beforeAll(async () => {
  repo = join(await tempDir(), 'models');
  await writeModel(repo, 'mlp', '1', smallMlp([4, 8, 1], 1));
  await writeModel(repo, 'other', '1', smallMlp([4, 8, 1], 2));
  redis = new Redis(url);
});

afterAll(async () => {
  for (const q of queues) await dropQueue(url, q);
  redis.disconnect();
});

const features = (rows: number, seed: number): number[][] => Array.from({ length: rows }, (_, r) => Array.from({ length: 4 }, (_, c) => Math.sin(seed + r * 4 + c)));

/** A model pool serving only `allow` (all models when undefined). */
const pool = (allow?: string[]): ModelPool => new ModelPool(new ModelRepository(repo), { logger: silentLogger(), batching: { maxDelayMs: 1 }, ...(allow === undefined ? {} : { allow }) });

async function redisWorker(queue: string, allow?: string[]): Promise<() => Promise<void>> {
  const models = pool(allow);
  const worker = new RedisWorker({ redis: url, queue, models, logger: silentLogger(), concurrency: 16 });
  await worker.start();
  return async () => {
    await worker.close(10_000);
    await models.close();
  };
}

const cli = (args: string[]) => runCli(['dead-letters', ...args], { env: { REDIS_URL: url, KAFKA_BROKERS: brokers.join(',') } });

interface ListedLetter {
  entry: string;
  id: string;
  code: string;
  payload: string;
  payloadBytes: number;
  job: string;
}

describe('Redis dead letters', () => {
  it('list, show, replay (the original job ids, a packed job with its own rows), purge with and without --yes', async () => {
    const queue = queueName('dl');
    queues.push(queue);
    const replies = `inferq:${queue}:test-replies`;
    const stop = await redisWorker(queue, ['mlp']);
    const producer = new Producer({ redis: url, queue, payload: 'key' });
    const packer = new Producer({ redis: url, queue, linger: { ms: 50 } });
    let packed: string[];
    try {
      await producer.enqueue('other', features(2, 1), { jobId: 'job-a', replyTo: replies, deadline: Date.now() + 60_000 });
      // Three calls in one linger window travel as one pack; the model fails them all, each with its own letter.
      packed = await Promise.all([3, 1, 2].map((rows, i) => packer.enqueue('other', features(rows, 10 + i), { replyTo: replies })));
      await waitFor(async () => (await redis.xlen(`inferq:${queue}:dead`)) === 4, 'four dead letters');
    } finally {
      await stop();
      await packer.close();
      await producer.close();
    }

    const list = await cli(['list', '--queue', queue, '--json']);
    expect(list.code, list.stderr).toBe(0);
    const listed = JSON.parse(list.stdout) as { total: number; letters: ListedLetter[] };
    expect(listed.total).toBe(4);
    expect(listed.letters.map((l) => l.code)).toEqual(['UNKNOWN_MODEL', 'UNKNOWN_MODEL', 'UNKNOWN_MODEL', 'UNKNOWN_MODEL']);
    const a = listed.letters.find((l) => l.id === 'job-a')!;
    expect(a.job).toBe('job-a');
    expect(a.payload).toMatch(new RegExp(`^inferq:${queue}:dead:payload:`));
    const inner = listed.letters.filter((l) => l.id !== 'job-a');
    expect(inner.map((l) => l.id).sort()).toEqual([...packed].sort());
    // A packed job's letter names the pack it travelled in and keeps its own rows only (1 row: smaller than the 3-row one).
    const one = inner.find((l) => l.id === packed[1])!;
    expect(one.job).not.toBe(one.id);
    expect(one.payloadBytes).toBeLessThan(inner.find((l) => l.id === packed[0])!.payloadBytes);

    const text = await cli(['list', '--queue', queue, '--code', 'UNKNOWN_MODEL', '--limit', '2']);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain('2 shown of 4 dead letters');
    expect(text.stdout).toMatch(/ENTRY\s+JOB\s+CODE/);

    const show = await cli(['show', one.id, '--queue', queue, '--json']);
    expect(show.code, show.stderr).toBe(0);
    const shown = JSON.parse(show.stdout) as { letter: ListedLetter; payload: { envelope: { id: string; rows: number; model: string; replyTo: string } } };
    expect(shown.letter.entry).toBe(one.entry);
    expect(shown.payload.envelope).toMatchObject({ id: one.id, rows: 1, model: 'other', replyTo: replies });
    const showText = await cli(['show', a.entry, '--queue', queue]);
    expect(showText.code, showText.stderr).toBe(0);
    expect(showText.stdout).toMatch(/code\s+UNKNOWN_MODEL/);
    expect(showText.stdout).toMatch(/rows\s+2/);
    expect(showText.stdout).toMatch(/deadline\s+.*\(dropped by a replay\)/);

    // The failed BullMQ job of job-a is still there: BullMQ would take an add of its id for that job.
    const q = new Queue(queue, { connection: { url }, prefix: 'inferq' });
    try {
      expect(await (await q.getJob('job-a'))?.getState()).toBe('failed');
    } finally {
      await q.close();
    }
    const stop2 = await redisWorker(queue);
    try {
      const replay = await cli(['replay', 'job-a', one.id, '--queue', queue]);
      expect(replay.code, replay.stderr + replay.stdout).toBe(0);
      expect(replay.stdout).toContain('2 replayed, 0 not replayed');
      await waitFor(async () => (await readStream(redis, replies)).flatMap((e) => parseRepliesForTest(e.fields)).filter((r) => r.ok).length >= 2, 'two ok replies');
      const ok = (await readStream(redis, replies)).flatMap((e) => parseRepliesForTest(e.fields)).filter((r) => r.ok);
      expect(ok.map((r) => [r.id, r.outputs['score']!.shape[0]]).sort()).toEqual([['job-a', 2], [one.id, 1]].sort());
    } finally {
      await stop2();
    }
    // Replayed letters and their payload copies are gone; the other two stay.
    expect(await redis.xlen(`inferq:${queue}:dead`)).toBe(2);
    expect(await redis.exists(a.payload, one.payload)).toBe(0);

    const refused = await cli(['purge', '--all', '--queue', queue]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('would purge 2 dead letters');
    expect(await redis.xlen(`inferq:${queue}:dead`)).toBe(2);
    const purged = await cli(['purge', '--all', '--yes', '--queue', queue]);
    expect(purged.code, purged.stderr).toBe(0);
    expect(purged.stdout).toContain('purged 2 dead letters');
    expect(await redis.xlen(`inferq:${queue}:dead`)).toBe(0);
    expect(await redis.keys(`inferq:${queue}:dead:payload:*`)).toEqual([]);
  }, 240_000);

  it('replay refuses a job id still waiting in the target queue (the letter stays); --new-id enqueues a copy', async () => {
    const queue = queueName('dl');
    const target = queueName('dl-to');
    queues.push(queue, target);
    const stop = await redisWorker(queue, ['mlp']);
    const producer = new Producer({ redis: url, queue, payload: 'inline' });
    const other = new Producer({ redis: url, queue: target });
    const q = new Queue(target, { connection: { url }, prefix: 'inferq' });
    try {
      await producer.enqueue('other', features(1, 3), { jobId: 'job-w' });
      await waitFor(async () => (await redis.xlen(`inferq:${queue}:dead`)) === 1, 'a dead letter');
      await other.enqueue('mlp', features(1, 4), { jobId: 'job-w' }); // no worker on the target: it waits
      const refused = await cli(['replay', 'job-w', '--queue', queue, '--to-queue', target]);
      expect(refused.code).toBe(1);
      expect(refused.stdout).toMatch(/not replayed .* \(job job-w\): job "job-w" is still in queue ".*" \(waiting\)/);
      expect(await redis.xlen(`inferq:${queue}:dead`)).toBe(1);
      const copied = await cli(['replay', 'job-w', '--queue', queue, '--to-queue', target, '--new-id', '--json']);
      expect(copied.code, copied.stderr).toBe(0);
      const out = JSON.parse(copied.stdout) as { replayed: { job: string; enqueued: string[] }[] };
      expect(out.replayed).toHaveLength(1);
      const newId = out.replayed[0]!.enqueued[0]!;
      expect(newId).not.toBe('job-w');
      expect((await q.getJob(newId))?.data.model).toBe('other');
      expect(await q.getWaitingCount()).toBe(2);
      expect(await redis.xlen(`inferq:${queue}:dead`)).toBe(0);
    } finally {
      await q.close();
      await other.close();
      await producer.close();
      await stop();
    }
  }, 180_000);
});

async function kafkaWorker(topic: string, allow?: string[]): Promise<() => Promise<void>> {
  const models = pool(allow);
  const worker = new KafkaWorker({ brokers, topic, group: `g-${topic}`, models, logger: silentLogger(), sessionTimeoutMs: 10_000 });
  await worker.start();
  return async () => {
    await worker.close(10_000);
    await models.close();
  };
}

const deadCount = (topic: string): Promise<number> =>
  withAdmin(brokers, async (admin) => ((await admin.listTopics()).includes(topic) ? (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high) - Number(p.low), 0) : 0));

interface KafkaListed {
  partition: number;
  offset: string;
  id: string;
  code: string;
  bytes: number;
}

describe('Kafka dead letters', () => {
  it('list, show, replay (the original job ids, a packed job with its own rows), purge up to an offset and all', async () => {
    const topic = topicName('dl');
    const replyTopic = `${topic}.test-replies`;
    await createTopic(brokers, topic);
    const replies = await readTopic(brokers, replyTopic);
    const stop = await kafkaWorker(topic, ['mlp']);
    const producer = new KafkaProducer({ brokers, topic });
    const packer = new KafkaProducer({ brokers, topic, linger: { ms: 50 } });
    let packed: string[];
    try {
      await producer.enqueue('other', features(2, 1), { jobId: 'k-a', replyTo: replyTopic });
      packed = await Promise.all([2, 1].map((rows, i) => packer.enqueue('other', features(rows, 20 + i), { replyTo: replyTopic })));
      await waitFor(async () => (await deadCount(`${topic}.dead`)) === 3, 'three dead letters');
    } finally {
      await stop();
      await packer.close();
      await producer.close();
    }
    const k = ['--transport', 'kafka', '--topic', topic, '--read-timeout-ms', '5000'];
    const list = await cli(['list', ...k, '--json']);
    expect(list.code, list.stderr).toBe(0);
    const listed = JSON.parse(list.stdout) as { total: number; complete: boolean; letters: KafkaListed[] };
    expect(listed).toMatchObject({ total: 3, complete: true });
    expect(listed.letters.map((l) => [l.partition, l.offset, l.code])).toEqual([[0, '0', 'UNKNOWN_MODEL'], [0, '1', 'UNKNOWN_MODEL'], [0, '2', 'UNKNOWN_MODEL']]);
    expect(listed.letters.map((l) => l.id).sort()).toEqual(['k-a', ...packed].sort());

    const second = packed[1]!;
    const show = await cli(['show', second, ...k]);
    expect(show.code, show.stderr).toBe(0);
    expect(show.stdout).toMatch(new RegExp(`job\\s+${second}`));
    expect(show.stdout).toMatch(/packed jobs\s+2/);

    const stop2 = await kafkaWorker(topic);
    try {
      const replay = await cli(['replay', 'k-a', second, ...k]);
      expect(replay.code, replay.stderr + replay.stdout).toBe(0);
      expect(replay.stdout).toContain('2 replayed, 0 not replayed');
      expect(replay.stdout).toContain('replayed letters stay in');
      await waitFor(() => replies.messages.filter((m) => header(m, 'inferq-status') === 'ok').length >= 2, 'two ok replies');
      const ok = replies.messages.filter((m) => header(m, 'inferq-status') === 'ok').flatMap((m) => parseKafkaReply(m));
      expect(ok.map((r) => [r.id, r.outputs['score']!.shape[0]]).sort()).toEqual([['k-a', 2], [second, 1]].sort());
    } finally {
      await stop2();
      await replies.stop();
    }

    const refused = await cli(['purge', '0:1', ...k]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`would delete 2 messages from ${topic}.dead`);
    const byId = await cli(['purge', 'k-a', '--yes', ...k]);
    expect(byId.code).toBe(1);
    expect(byId.stderr).toContain('Kafka deletes no single message');
    expect(await deadCount(`${topic}.dead`)).toBe(3);
    const upTo = await cli(['purge', '0:1', '--yes', ...k]);
    expect(upTo.code, upTo.stderr).toBe(0);
    expect(await deadCount(`${topic}.dead`)).toBe(1);
    const all = await cli(['purge', '--all', '--yes', ...k, '--json']);
    expect(all.code, all.stderr).toBe(0);
    expect(JSON.parse(all.stdout)).toEqual({ deleted: 1, below: { 0: 3 } });
    expect(await deadCount(`${topic}.dead`)).toBe(0);
  }, 300_000);
});

/** A loopback port nothing listens on: one the system just gave out and took back. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('a server that is down', () => {
  it('every command ends within its timeout with one line naming the server', async () => {
    const port = await closedPort();
    const started = Date.now();
    const r = await cli(['list', '--redis', `redis://127.0.0.1:${port}`, '--timeout-ms', '1500']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(new RegExp(`^inferq: error: cannot reach Redis at 127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`))]);
    const k = await cli(['replay', '--all', '--transport', 'kafka', '--brokers', `127.0.0.1:${port}`, '--timeout-ms', '1500', '--topic', `t-${randomUUID()}`]);
    expect(k.code).toBe(1);
    expect(k.stderr.trim().split('\n')).toEqual([expect.stringMatching(new RegExp(`^inferq: error: kafka 127\\.0\\.0\\.1:${port}: `))]);
    expect(Date.now() - started).toBeLessThan(60_000);
  }, 120_000);
});
