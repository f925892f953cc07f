/**
 * What works over Redis works over Kafka: a job's own sinks (exactly once, through a kill -9)
 * and the producer's linger packs (one message for many small jobs, one reply each).
 */
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { KafkaProducer, parseKafkaReplies } from '@inferq/producer';
import { kafkaServer } from './infra/servers.js';
import { readLocalDataset } from './helpers/datasets.js';
import { committedTotal, createTopic, readTopic, topicName } from './helpers/kafka.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { startWorker, waitFor } from './helpers/redis.js';
import { forwardMlp } from '../examples/build/onnx-builder.js';

const brokers = await kafkaServer();
const spec = smallMlp([4, 16, 2], 9);
let repo: string;

beforeAll(async () => {
  repo = join(await tempDir(), 'models');
  await writeModel(repo, 'mlp', '1', spec);
});

function features(rows: number, seed: number): number[][] {
  return Array.from({ length: rows }, (_, r) => Array.from({ length: 4 }, (_, c) => Math.sin(seed * 7 + r * 4 + c)));
}

function args(topic: string, more: string[] = []): string[] {
  return ['--transport', 'kafka', '--topic', topic, '--group', `g-${topic}`, '--brokers', brokers.join(','), '--model-repo', repo, '--models', 'mlp', '--threads', '1', '--session-timeout-ms', '10000', ...more];
}

describe('Kafka parity with Redis', () => {
  it("a job's own sinks: its rows go there too, only under allowed folders, and every row is written once through a kill -9", async () => {
    const topic = topicName('jobsinks');
    await createTopic(brokers, topic, 2);
    const root = await tempDir();
    const team = join(root, 'jobs', 'team');
    const sinkArgs = args(topic, ['--sink', `parquet:${join(root, 'all')}`, '--allow-job-sinks', join(root, 'jobs'), '--sink-roll-rows', '300', '--sink-roll-ms', '200']);
    const producer = new KafkaProducer({ brokers, topic });
    let w = startWorker(sinkArgs);
    try {
      await w.ready;
      const n = 1200;
      const ofTeam = (k: number): boolean => k % 3 === 0;
      await Promise.all(Array.from({ length: n }, (_, k) => producer.enqueue('mlp', features(2, k), ofTeam(k) ? { jobId: `j-${k}`, sinks: [`parquet:${team}`] } : { jobId: `j-${k}` })));
      await waitFor(async () => (await readLocalDataset(join(root, 'all'))).rows > 0, 'the first rolls', 60_000, 50);
      w.child.kill('SIGKILL');
      await w.exited;
      w = startWorker(sinkArgs);
      await w.ready;
      await waitFor(async () => (await committedTotal(brokers, `g-${topic}`, topic)) === n, 'every message written and committed', 120_000, 200);
      const all = await readLocalDataset(join(root, 'all'));
      expect(all.rows).toBe(2 * n);
      expect(all.distinct).toBe(2 * n);
      const own = await readLocalDataset(team);
      const teamIds = Array.from({ length: n }, (_, k) => k).filter(ofTeam).map((k) => `j-${k}`);
      expect(own.jobs).toEqual([...teamIds].sort());
      expect(own.rows).toBe(2 * teamIds.length);
      expect(own.distinct).toBe(own.rows);
    } finally {
      w.child.kill('SIGTERM');
      await w.exited;
      await producer.close();
    }
  }, 240_000);

  it('linger packs: many small enqueue() calls travel as a few messages, each job gets its own reply rows', async () => {
    const topic = topicName('linger');
    await createTopic(brokers, topic, 1);
    const replyTopic = `${topic}.out`;
    const w = startWorker(args(topic));
    const producer = new KafkaProducer({ brokers, topic, linger: { ms: 20 } });
    const requests = await readTopic(brokers, topic);
    const replies = await readTopic(brokers, replyTopic);
    try {
      await w.ready;
      const n = 300;
      const ids = await Promise.all(Array.from({ length: n }, (_, k) => producer.enqueue('mlp', features(1 + (k % 3), k), { replyTo: replyTopic })));
      await waitFor(() => replies.messages.flatMap((m) => parseKafkaReplies(m)).length >= n, `${n} replies`, 60_000, 50);
      expect(requests.messages.length).toBeLessThan(n / 10); // packed: far fewer messages than jobs
      const byId = new Map(replies.messages.flatMap((m) => parseKafkaReplies(m)).map((r) => [r.id, r]));
      expect(new Set(byId.keys())).toEqual(new Set(ids));
      ids.forEach((id, k) => {
        const x = features(1 + (k % 3), k);
        const want = forwardMlp(spec, { features: Float32Array.from(x.flat()) }, x.length);
        const got = byId.get(id)!.outputs['score']!;
        expect(got.shape).toEqual([x.length, 2]);
        want.forEach((v, i) => expect(Math.abs((got.data[i] as number) - v)).toBeLessThan(1e-5));
      });
      // predict() over a linger producer: each caller gets its own rows.
      const ys = [features(2, 1000), features(1, 1001), features(3, 1002)];
      const answers = await Promise.all(ys.map((y) => producer.predict('mlp', y, { timeoutMs: 20_000 })));
      answers.forEach((a, i) => expect(a.outputs['score']!.shape).toEqual([ys[i]!.length, 2]));
    } finally {
      w.child.kill('SIGTERM');
      await w.exited;
      await Promise.all([requests.stop(), replies.stop(), producer.close()]);
    }
  }, 120_000);
});
