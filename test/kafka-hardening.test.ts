/**
 * Kafka workers when things go wrong: a missing request topic, brokers that are down at
 * start or at shutdown, a sink that refuses every write, and a message delivered again
 * after a crash whose deadline passed meanwhile.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KafkaProducer, parseKafkaReply } from '@inferq/producer';
import { startKafka } from './infra/kafka.js';
import { freePort } from './infra/redis.js';
import { kafkaServer } from './infra/servers.js';
import { readLocalDataset } from './helpers/datasets.js';
import { committedTotal, createTopic, readTopic, topicName, withAdmin } from './helpers/kafka.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { startWorker, waitFor } from './helpers/redis.js';

const brokers = await kafkaServer();
let repo: string;

beforeAll(async () => {
  repo = join(await tempDir(), 'models');
  await writeModel(repo, 'mlp', '1', smallMlp([4, 16, 2], 9));
});

afterAll(() => undefined);

function features(rows: number, seed: number): number[][] {
  return Array.from({ length: rows }, (_, r) => Array.from({ length: 4 }, (_, c) => Math.sin(seed * 7 + r * 4 + c)));
}

function args(topic: string, more: string[] = [], on: string[] = brokers): string[] {
  return ['--transport', 'kafka', '--topic', topic, '--group', `g-${topic}`, '--brokers', on.join(','), '--model-repo', repo, '--models', 'mlp', '--threads', '1', '--session-timeout-ms', '10000', ...more];
}

const errorLines = (out: string): string[] => out.split('\n').filter((l) => l.startsWith('inferq: error:'));

describe('Kafka worker start', () => {
  it('a missing request topic stops the worker with one line naming it; --create-topic --partitions N creates it and serves (zero-row jobs too)', async () => {
    const topic = topicName('missing');
    const missing = startWorker(args(topic));
    expect((await missing.exited).code).toBe(1);
    expect(errorLines(missing.output())).toEqual([`inferq: error: topic "${topic}" does not exist on ${brokers.join(',')}: create it, or start the worker with --create-topic --partitions N`]);
    expect(await withAdmin(brokers, (a) => a.listTopics())).not.toContain(topic);

    const w = startWorker(args(topic, ['--create-topic', '--partitions', '3']));
    const producer = new KafkaProducer({ brokers, topic });
    try {
      await w.ready;
      const meta = await withAdmin(brokers, (a) => a.fetchTopicMetadata({ topics: [topic] }));
      expect(meta.topics[0]!.partitions).toHaveLength(3);
      const reply = await producer.predict('mlp', features(2, 1), { timeoutMs: 20_000 });
      expect(reply.outputs['score']!.shape).toEqual([2, 2]);
      // An empty batch is a zero-row job, answered with every output.
      const empty = await producer.predict('mlp', [], { timeoutMs: 20_000 });
      expect(empty.outputs['score']!.shape).toEqual([0, 2]);
    } finally {
      w.child.kill('SIGTERM');
      await w.exited;
      await producer.close();
    }
  }, 120_000);

  it('brokers that cannot be reached stop the worker at start with one line naming them', async () => {
    const port = await freePort();
    const t0 = Date.now();
    const w = startWorker(args(topicName(), ['--connect-timeout-ms', '5000'], [`127.0.0.1:${port}`]));
    expect((await w.exited).code).toBe(1);
    expect(Date.now() - t0).toBeLessThan(30_000);
    const lines = errorLines(w.output());
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`127\\.0\\.0\\.1:${port}`));
  }, 60_000);

  it('a sink folder that can never be written stops the worker: at start, or at its first roll, committing nothing past it', async () => {
    const root = await tempDir();
    await writeFile(join(root, 'a-file'), 'not a folder');
    const topic = topicName('sink');
    await createTopic(brokers, topic, 1);
    const atStart = startWorker(args(topic, ['--sink', `parquet:${join(root, 'a-file', 'out')}`]));
    expect((await atStart.exited).code).toBe(1);
    expect(errorLines(atStart.output())).toEqual([expect.stringMatching(/^inferq: error: sink ".*a-file\/out": cannot create the folder: ENOTDIR/)]);

    // The folder is fine at start, but its partition folder is a file: every roll fails for good.
    await writeFile(join(root, 'model=mlp'), 'in the way');
    const w = startWorker(args(topic, ['--sink', `parquet:${root}`, '--sink-roll-ms', '200', '--shutdown-timeout-ms', '3000']));
    const producer = new KafkaProducer({ brokers, topic });
    try {
      await w.ready;
      await Promise.all(Array.from({ length: 5 }, (_, k) => producer.enqueue('mlp', features(1, k))));
      expect((await w.exited).code).toBe(1);
      expect(errorLines(w.output())).toEqual([expect.stringMatching(/^inferq: error: sink ".*" *: writing .*model=mlp.* failed: ENOTDIR/)]);
      expect(await committedTotal(brokers, `g-${topic}`, topic)).toBe(0);
    } finally {
      w.child.kill('SIGKILL');
      await producer.close();
    }
  }, 120_000);
});

describe('Kafka worker shutdown and redelivery', () => {
  it('SIGTERM with the broker gone ends the worker within --shutdown-timeout-ms', async () => {
    const own = await startKafka();
    const topic = topicName('down');
    await createTopic(own.brokers, topic, 1);
    const w = startWorker(args(topic, ['--shutdown-timeout-ms', '4000'], own.brokers));
    const producer = new KafkaProducer({ brokers: own.brokers, topic });
    try {
      await w.ready;
      await Promise.all(Array.from({ length: 50 }, (_, k) => producer.enqueue('mlp', features(100, k))));
      await producer.close();
      await own.stop();
      const t0 = Date.now();
      w.child.kill('SIGTERM');
      await w.exited;
      expect(Date.now() - t0).toBeLessThan(4000 + 3000);
    } finally {
      w.child.kill('SIGKILL');
      await own.destroy();
    }
  }, 180_000);

  it('a message answered before a crash is not failed for its deadline when it is delivered again', async () => {
    const topic = topicName('again');
    await createTopic(brokers, topic, 1);
    const sink = join(await tempDir(), 'out');
    const replyTopic = `${topic}.out`;
    const replies = await readTopic(brokers, replyTopic);
    const dead = await readTopic(brokers, `${topic}.dead`);
    const producer = new KafkaProducer({ brokers, topic });
    // Replies go out at once; the roll (and so the commit of the position) is a minute away: the crash comes between.
    const first = startWorker(args(topic, ['--sink', `parquet:${sink}`, '--sink-roll-ms', '60000']));
    let second: ReturnType<typeof startWorker> | undefined;
    try {
      await first.ready;
      const deadline = Date.now() + 3000;
      await producer.enqueue('mlp', features(2, 3), { jobId: 'answered', replyTo: replyTopic, deadline });
      await waitFor(() => replies.messages.length === 1, 'the first reply', 30_000, 20);
      // Its commit (the old position, with the highest offset taken as metadata) is made while the roll waits.
      await waitFor(async () => (await withAdmin(brokers, (a) => a.fetchOffsets({ groupId: `g-${topic}`, topics: [topic] })))[0]!.partitions[0]!.metadata === '0', 'the metadata commit', 30_000, 50);
      first.child.kill('SIGKILL');
      await first.exited;
      second = startWorker(args(topic, ['--sink', `parquet:${sink}`, '--sink-roll-ms', '200']));
      await second.ready;
      await waitFor(async () => (await committedTotal(brokers, `g-${topic}`, topic)) === 1, 'the message written and committed', 60_000, 100);
      expect(Date.now()).toBeGreaterThan(deadline);
      expect(dead.messages).toHaveLength(0);
      expect(replies.messages.map(parseKafkaReply).map((r) => [r.id, r.ok])).toEqual([
        ['answered', true],
        ['answered', true],
      ]);
      const d = await readLocalDataset(sink);
      expect(d.jobs).toEqual(['answered']);
      expect(d.rows).toBe(2);
    } finally {
      first.child.kill('SIGKILL');
      second?.child.kill('SIGTERM');
      await second?.exited;
      await Promise.all([replies.stop(), dead.stop(), producer.close()]);
    }
  }, 120_000);
});
