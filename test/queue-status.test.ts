/**
 * `inferq queue status` against a real Redis and a real Kafka broker: job counts per state,
 * dead letters and workers of a Redis queue; lag per partition, members and dead letters of a
 * Kafka consumer group.
 */
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Producer } from '@inferq/producer';
import { KafkaWorker, ModelPool, ModelRepository, RedisWorker, silentLogger } from '@inferq/workers';
import { kafkaServer, redisServer } from './infra/servers.js';
import { runCli } from './helpers/cli.js';
import { committedTotal, createTopic, testKafka, topicName, withAdmin } from './helpers/kafka.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { dropQueue, queueName, waitFor } from './helpers/redis.js';

const url = await redisServer();
const brokers = await kafkaServer();
let repo: string;
const queues: string[] = [];

beforeAll(async () => {
  repo = join(await tempDir(), 'models');
  await writeModel(repo, 'mlp', '1', smallMlp([4, 8, 1], 1));
});

afterAll(async () => {
  for (const q of queues) await dropQueue(url, q);
});

const status = (args: string[]) => runCli(['queue', 'status', ...args], { env: { REDIS_URL: url, KAFKA_BROKERS: brokers.join(',') } });
const pool = (): ModelPool => new ModelPool(new ModelRepository(repo), { logger: silentLogger(), batching: { maxDelayMs: 1 } });

describe('queue status (Redis)', () => {
  it('counts waiting and delayed jobs enqueued with no worker, then lists the worker that connects', async () => {
    const queue = queueName('st');
    queues.push(queue);
    const producer = new Producer({ redis: url, queue });
    try {
      for (let i = 0; i < 3; i++) await producer.enqueue('mlp', [[1, 2, 3, 4]]);
      await producer.enqueue('mlp', [[1, 2, 3, 4]], { delay: 600_000 });
    } finally {
      await producer.close();
    }
    const idle = await status(['--queue', queue, '--json']);
    expect(idle.code, idle.stderr).toBe(0);
    const s = JSON.parse(idle.stdout) as { jobs: Record<string, number>; deadLetters: number; consumers: { name: string }[] };
    expect(s.jobs).toMatchObject({ waiting: 3, delayed: 1, active: 0, failed: 0 });
    expect(s.deadLetters).toBe(0);
    expect(s.consumers).toEqual([]);

    const models = pool();
    const worker = new RedisWorker({ redis: url, queue, models, logger: silentLogger() });
    await worker.start();
    try {
      const text = await status(['--queue', queue]);
      expect(text.code, text.stderr).toBe(0);
      expect(text.stdout).toMatch(/^delayed\s+1$/m);
      expect(text.stdout).toContain('consumers: 1');
      // The worker names its connections host:pid (the in-process worker: this process).
      expect(text.stdout).toMatch(new RegExp(`^${hostname().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:${process.pid}\\s`, 'm'));
    } finally {
      await worker.close(10_000);
      await models.close();
    }
  }, 120_000);
});

interface KafkaStatusJson {
  state: string;
  lag: number;
  partitions: { partition: number; committed: number; lag: number; owner: string }[];
  members: { partitions: number[] }[];
  deadLetters?: number;
}

describe('queue status (Kafka)', () => {
  it('lag per partition of a group with no member, then the member that owns the partitions and the dead letters it wrote', async () => {
    const topic = topicName('st');
    const group = `g-${topic}`;
    await createTopic(brokers, topic, 2);
    const producer = testKafka(brokers).producer();
    await producer.connect();
    try {
      // Messages that are no inferq job's: a worker dead-letters each of them.
      const junk = (n: number, partition: number) => Array.from({ length: n }, (_, i) => ({ key: `k${partition}-${i}`, value: Buffer.from('not an envelope'), partition }));
      await producer.send({ topic, messages: [...junk(3, 0), ...junk(2, 1)] });
    } finally {
      await producer.disconnect();
    }
    // The group has read the first message of partition 0 and nothing of partition 1.
    await withAdmin(brokers, (admin) => admin.setOffsets({ groupId: group, topic, partitions: [{ partition: 0, offset: '1' }] }));
    const before = await status(['--transport', 'kafka', '--topic', topic, '--group', group, '--json']);
    expect(before.code, before.stderr).toBe(0);
    const b = JSON.parse(before.stdout) as KafkaStatusJson;
    expect(b.partitions.map((p) => [p.partition, p.committed, p.lag])).toEqual([
      [0, 1, 2],
      [1, -1, 2],
    ]);
    expect(b.lag).toBe(4);
    expect(b.members).toEqual([]);
    expect(b.deadLetters).toBeUndefined();

    const models = pool();
    const worker = new KafkaWorker({ brokers, topic, group, models, logger: silentLogger(), sessionTimeoutMs: 10_000 });
    await worker.start();
    try {
      await waitFor(async () => (await committedTotal(brokers, group, topic)) === 5, 'the worker to commit every message');
      const after = await status(['--transport', 'kafka', '--topic', topic, '--group', group, '--json']);
      expect(after.code, after.stderr).toBe(0);
      const a = JSON.parse(after.stdout) as KafkaStatusJson;
      expect(a.lag).toBe(0);
      expect(a.state).toBe('Stable');
      expect(a.members.map((m) => m.partitions)).toEqual([[0, 1]]);
      expect(a.partitions.every((p) => p.owner !== '')).toBe(true);
      // The first message of partition 0 was committed before the worker came: it was never read.
      expect(a.deadLetters).toBe(4);
      const text = await status(['--transport', 'kafka', '--topic', topic, '--group', group]);
      expect(text.code, text.stderr).toBe(0);
      expect(text.stdout).toMatch(/^PARTITION\s+COMMITTED\s+LOW\s+HIGH\s+LAG\s+OWNER$/m);
      expect(text.stdout).toContain('total lag: 0');
      expect(text.stdout).toContain(`dead letters (${topic}.dead): 4`);
      expect(text.stdout).toContain('members: 1');
    } finally {
      await worker.close(10_000);
      await models.close();
    }
  }, 180_000);

  it('a topic that does not exist is one clear line', async () => {
    const r = await status(['--transport', 'kafka', '--topic', topicName('none')]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^inferq: error: topic "none-[0-9a-f]{8}" does not exist$/);
  }, 60_000);
});
