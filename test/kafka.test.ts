/**
 * The Kafka transport against a real Apache Kafka 3.9.1 broker (KRaft) started by
 * test/infra: producer SDK, kafkajs workers (in process and as `inferq worker`
 * processes), replies, dead letters, rebalances, crashes and a broker restart.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KAFKA_HEADERS, encodeEnvelope } from '@inferq/shared';
import { KafkaProducer, PredictTimeoutError, RemoteJobError, parseKafkaReply } from '@inferq/producer';
import type { Reply } from '@inferq/producer';
import { KafkaWorker, ModelPool, ModelRepository, silentLogger } from '@inferq/workers';
import type { KafkaWorkerOptions } from '@inferq/workers';
import { startKafka } from './infra/kafka.js';
import { kafkaServer } from './infra/servers.js';
import { committedTotal, createTopic, header, readTopic, testKafka, topicName } from './helpers/kafka.js';
import type { TopicReader } from './helpers/kafka.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { startWorker, waitFor } from './helpers/redis.js';

const brokers = await kafkaServer();
const spec = smallMlp([4, 16, 2], 9);
let repo: string;
let session: ort.InferenceSession;

beforeAll(async () => {
  repo = join(await tempDir(), 'models');
  const dir = await writeModel(repo, 'mlp', '1', spec);
  session = await ort.InferenceSession.create(await readFile(join(dir, 'model.onnx')));
});

afterAll(async () => {
  await session.release();
});

function features(rows: number, seed: number): number[][] {
  return Array.from({ length: rows }, (_, r) => Array.from({ length: 4 }, (_, c) => Math.sin(seed * 7 + r * 4 + c)));
}

/** The reply equals a direct ONNX Runtime run of the same rows. */
async function expectMatchesOrt(reply: Reply, x: number[][]): Promise<void> {
  const out = await session.run({ features: new ort.Tensor('float32', Float32Array.from(x.flat()), [x.length, 4]) });
  const want = out['score']!.data as Float32Array;
  const got = reply.outputs['score']!;
  expect(got.shape).toEqual([x.length, 2]);
  for (let i = 0; i < want.length; i++) expect(Math.abs((got.data[i] as number) - want[i]!)).toBeLessThan(1e-6);
}

async function inProcessWorker(topic: string, over: Partial<KafkaWorkerOptions> = {}): Promise<{ worker: KafkaWorker; close(): Promise<void> }> {
  const pool = new ModelPool(new ModelRepository(repo), { logger: silentLogger(), batching: { maxDelayMs: 1 } });
  const worker = new KafkaWorker({ brokers, topic, group: `g-${topic}`, models: pool, logger: silentLogger(), sessionTimeoutMs: 10_000, ...over });
  await worker.start();
  return {
    worker,
    close: async () => {
      await worker.close(10_000);
      await pool.close();
    },
  };
}

/** Distinct reply ids and the count of every id, from a reply topic reader. */
function replyIds(messages: readonly { key: Buffer | null; headers?: unknown }[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const m of messages) {
    const id = m.key?.toString() ?? '';
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

describe('Kafka transport', () => {
  it('predict(): enqueue → worker → reply topic, equal to a direct ONNX Runtime run, rows and row ids in order', async () => {
    const topic = topicName();
    await createTopic(brokers, topic, 3);
    const w = await inProcessWorker(topic);
    const producer = new KafkaProducer({ brokers, topic });
    try {
      for (const rows of [1, 7, 300]) {
        const x = features(rows, rows);
        const reply = await producer.predict('mlp', x, { timeoutMs: 20_000, rowIds: x.map((_, i) => `r${i}`) });
        expect(reply.ok).toBe(true);
        expect(reply.model).toBe('mlp');
        expect(reply.version).toBe('1');
        expect(reply.rowIds).toEqual(x.map((_, i) => `r${i}`));
        await expectMatchesOrt(reply, x);
      }
      // Many at once: each caller gets its own reply.
      const xs = Array.from({ length: 50 }, (_, i) => features(1 + (i % 9), 100 + i));
      const replies = await Promise.all(xs.map((x) => producer.predict('mlp', x, { timeoutMs: 20_000 })));
      for (let i = 0; i < xs.length; i++) await expectMatchesOrt(replies[i]!, xs[i]!);
      // Every answered message is committed, over the three partitions.
      await waitFor(async () => (await committedTotal(brokers, `g-${topic}`, topic)) === 53, 'offsets committed up to the last answered message', 20_000, 100);
      expect(w.worker.stats.completed).toBe(53);
    } finally {
      await producer.close();
      await w.close();
    }
  }, 120_000);

  it('the request message carries key, headers and the envelope as documented', async () => {
    const topic = topicName();
    await createTopic(brokers, topic, 1);
    const producer = new KafkaProducer({ brokers, topic });
    const reader = await readTopic(brokers, topic);
    try {
      const id = await producer.enqueue('mlp', features(3, 1), { jobId: 'job-1', version: '1', replyTo: 'somewhere' });
      await producer.enqueue('mlp', features(2, 2), { partitionKey: 'customer-42' });
      await waitFor(() => reader.messages.length === 2, 'both requests on the topic', 20_000);
      const [m, keyed] = reader.messages;
      expect(id).toBe('job-1');
      expect(m!.key!.toString()).toBe('job-1');
      expect(header(m!, KAFKA_HEADERS.model)).toBe('mlp');
      expect(header(m!, KAFKA_HEADERS.version)).toBe('1');
      expect(header(m!, KAFKA_HEADERS.replyTo)).toBe('somewhere');
      expect(header(m!, KAFKA_HEADERS.rows)).toBe('3');
      expect(header(m!, KAFKA_HEADERS.contentType)).toBe('application/x-inferq-envelope');
      expect(keyed!.key!.toString()).toBe('customer-42');
      expect(header(keyed!, KAFKA_HEADERS.id)).not.toBe('customer-42');
    } finally {
      await reader.stop();
      await producer.close();
    }
  }, 60_000);

  it('predict() with no worker fails with a clear timeout error', async () => {
    const topic = topicName();
    await createTopic(brokers, topic, 1);
    const producer = new KafkaProducer({ brokers, topic });
    try {
      const err = await producer.predict('mlp', features(1, 1), { timeoutMs: 1500, jobId: 'lonely' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PredictTimeoutError);
      expect((err as Error).message).toBe('no reply for job lonely (model mlp) within 1500 ms');
    } finally {
      await producer.close();
    }
  }, 60_000);

  it('every kind of bad message lands in the dead-letter topic with its reason, the partition keeps moving, callers get error replies', async () => {
    const topic = topicName();
    await createTopic(brokers, topic, 1);
    const w = await inProcessWorker(topic, { maxPayloadBytes: 64 * 1024 });
    const producer = new KafkaProducer({ brokers, topic });
    const raw = testKafka(brokers).producer();
    await raw.connect();
    const dead = await readTopic(brokers, `${topic}.dead`);
    const replyTopic = `${topic}.out`;
    const replies = await readTopic(brokers, replyTopic);
    try {
      const good = (i: number): Promise<string> => producer.enqueue('mlp', features(2, i), { jobId: `good-${i}`, replyTo: replyTopic });
      const env = (id: string, model: string, tensors: Parameters<typeof encodeEnvelope>[1]): Buffer => Buffer.from(encodeEnvelope({ id, model, replyTo: replyTopic }, tensors));
      const f32 = (shape: number[], data?: number[]) => ({ dtype: 'float32' as const, shape, data: Float32Array.from(data ?? new Array<number>(shape.reduce((a, b) => a * b, 1)).fill(0.5)) });
      const corrupt = env('bad-crc', 'mlp', { features: f32([1, 4]) });
      corrupt[corrupt.length - 1]! ^= 0xff;
      const bad: { id: string; code: string; value: Buffer | null; reason: RegExp; headers?: Record<string, string> }[] = [
        { id: 'bad-shape', code: 'BAD_SHAPE', value: env('bad-shape', 'mlp', { features: f32([2, 3]) }), reason: /features.*\[2,3\]|3.*4/ },
        { id: 'bad-dtype', code: 'BAD_DTYPE', value: env('bad-dtype', 'mlp', { features: { dtype: 'int32', shape: [1, 4], data: Int32Array.from([1, 2, 3, 4]) } }), reason: /int32/ },
        { id: 'bad-model', code: 'UNKNOWN_MODEL', value: env('bad-model', 'nope', { features: f32([1, 4]) }), reason: /nope/ },
        { id: 'bad-nan', code: 'NON_FINITE', value: env('bad-nan', 'mlp', { features: f32([1, 4], [0, Number.NaN, 0, 0]) }), reason: /NaN/ },
        { id: 'bad-crc', code: 'BAD_ENVELOPE', value: corrupt, reason: /checksum|crc/i },
        { id: 'bad-bytes', code: 'BAD_ENVELOPE', value: Buffer.from('this is not an envelope'), reason: /magic|envelope/i, headers: { [KAFKA_HEADERS.id]: 'bad-bytes', [KAFKA_HEADERS.replyTo]: replyTopic } },
        { id: 'bad-size', code: 'PAYLOAD_TOO_LARGE', value: env('bad-size', 'mlp', { features: f32([5000, 4]) }), reason: /exceeds the 65536-byte limit/ },
        { id: 'bad-tomb', code: 'BAD_JOB_DATA', value: null, reason: /tombstone/, headers: { [KAFKA_HEADERS.id]: 'bad-tomb' } },
        { id: 'bad-id', code: 'ID_MISMATCH', value: env('env-id', 'mlp', { features: f32([1, 4]) }), reason: /does not match/, headers: { [KAFKA_HEADERS.id]: 'bad-id' } },
        {
          id: 'bad-sinks',
          code: 'SINK_NOT_ALLOWED',
          value: Buffer.from(encodeEnvelope({ id: 'bad-sinks', model: 'mlp', replyTo: replyTopic, sinks: ['/tmp/x'] }, { features: f32([1, 4]) })),
          reason: /job sink "\/tmp\/x" is not allowed: this worker takes no job sinks/,
        },
      ];
      let i = 0;
      for (const b of bad) {
        await good(i++);
        await raw.send({ topic, messages: [{ key: b.id, value: b.value, headers: b.headers ?? { [KAFKA_HEADERS.id]: b.id } }] });
      }
      await good(i++);
      await waitFor(() => dead.messages.length === bad.length && replies.messages.map(parseKafkaReply).filter((r) => r.ok).length >= i, 'dead letters and good replies', 30_000);
      for (const b of bad) {
        const d = dead.messages.find((m) => header(m, KAFKA_HEADERS.id) === b.id);
        expect(d, `dead letter of ${b.id}`).toBeDefined();
        expect(header(d!, KAFKA_HEADERS.error)).toMatch(b.reason);
        // The stable code and whether a retry could help travel beside the reason.
        expect(header(d!, KAFKA_HEADERS.code), b.id).toBe(b.code);
        expect(header(d!, KAFKA_HEADERS.retriable)).toBe('false');
        expect(header(d!, KAFKA_HEADERS.sourceTopic)).toBe(topic);
        expect(header(d!, KAFKA_HEADERS.sourceOffset)).toMatch(/^\d+$/);
        // The original bytes are kept, so a fixed consumer can replay them.
        expect(d!.value === null ? null : Buffer.compare(d!.value, b.value!)).toBe(b.value === null ? null : 0);
      }
      const ok = replies.messages.map(parseKafkaReply).filter((r) => r.ok);
      expect(ok.map((r) => r.id).sort()).toEqual(Array.from({ length: i }, (_, k) => `good-${k}`).sort());
      // A caller that named a reply topic hears about its failure even when the bytes were garbage.
      const errors = replies.messages.map(parseKafkaReply).filter((r) => !r.ok);
      expect(errors.find((r) => r.id === 'bad-bytes')?.error?.kind).toBe('EnvelopeError');
      expect(errors.find((r) => r.id === 'bad-model')?.error?.message).toMatch(/nope/);
      expect(errors.find((r) => r.id === 'bad-model')?.error?.code).toBe('UNKNOWN_MODEL');
      await waitFor(async () => (await committedTotal(brokers, `g-${topic}`, topic)) === bad.length + i, 'the partition committed past the bad messages', 20_000, 100);
      // predict() of a bad job fails at once with the worker's reason.
      const err = await producer.predict('nope', features(1, 1), { timeoutMs: 20_000 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RemoteJobError);
      expect((err as RemoteJobError).kind).toBe('UnknownModelError');
      expect((err as RemoteJobError).code).toBe('UNKNOWN_MODEL');
      expect((err as RemoteJobError).retriable).toBe(false);
    } finally {
      await Promise.all([dead.stop(), replies.stop(), raw.disconnect(), producer.close()]);
      await w.close();
    }
  }, 120_000);

  it('backpressure: a producer far ahead pauses the topic at the in-flight limit; everything is still answered', async () => {
    const topic = topicName();
    await createTopic(brokers, topic, 1);
    const producer = new KafkaProducer({ brokers, topic });
    const replyTopic = `${topic}.out`;
    const n = 600;
    await Promise.all(Array.from({ length: n }, (_, k) => producer.enqueue('mlp', features(3, k), { jobId: `bp-${k}`, replyTo: replyTopic })));
    const replies = await readTopic(brokers, replyTopic);
    const w = await inProcessWorker(topic, { concurrency: 16 });
    try {
      await waitFor(() => replyIds(replies.messages).size === n, `${n} replies`, 60_000);
      expect(w.worker.stats.peakInFlight).toBeLessThanOrEqual(16);
      expect(w.worker.stats.pauses).toBeGreaterThan(0);
      expect(replies.messages.length).toBe(n);
    } finally {
      await Promise.all([replies.stop(), producer.close()]);
      await w.close();
    }
  }, 120_000);

  it('subscribe(): a consumer group shares a reply topic, and a restarted subscriber resumes after the last reply it handled', async () => {
    const topic = topicName();
    await createTopic(brokers, topic, 2);
    const replyTopic = `${topic}.out`;
    await createTopic(brokers, replyTopic, 2);
    const w = await inProcessWorker(topic);
    const producer = new KafkaProducer({ brokers, topic });
    const seen: string[] = [];
    try {
      const first = producer.subscribe(replyTopic, (r) => void seen.push(r.id), { group: 'apps' });
      for (let k = 0; k < 20; k++) await producer.enqueue('mlp', features(2, k), { jobId: `s-${k}`, replyTo: replyTopic });
      await waitFor(() => seen.length >= 20, 'the first 20 replies', 30_000);
      await first.close();
      for (let k = 20; k < 40; k++) await producer.enqueue('mlp', features(2, k), { jobId: `s-${k}`, replyTo: replyTopic });
      const again: string[] = [];
      const second = producer.subscribe(replyTopic, (r) => void again.push(r.id), { group: 'apps' });
      await waitFor(() => again.length >= 20, 'the 20 replies written while no subscriber ran', 30_000);
      await second.close();
      expect(new Set([...seen, ...again]).size).toBe(40);
      expect(again.every((id) => Number(id.slice(2)) >= 20)).toBe(true);
    } finally {
      await producer.close();
      await w.close();
    }
  }, 120_000);

  it('10,000 messages over 3 partitions, 2 worker processes and a rebalance mid-run: none lost, every reply correct', async () => {
    const topic = topicName();
    await createTopic(brokers, topic, 3);
    const replyTopic = `${topic}.out`;
    await createTopic(brokers, replyTopic, 3);
    const args = ['--transport', 'kafka', '--topic', topic, '--group', `g-${topic}`, '--brokers', brokers.join(','), '--model-repo', repo, '--models', 'mlp', '--threads', '1'];
    const replies = await readTopic(brokers, replyTopic);
    const producer = new KafkaProducer({ brokers, topic });
    const first = startWorker(args);
    let second: ReturnType<typeof startWorker> | undefined;
    try {
      await first.ready;
      const n = 10_000;
      for (let i = 0; i < n; i += 500) {
        await Promise.all(Array.from({ length: 500 }, (_, k) => producer.enqueue('mlp', features(1 + ((i + k) % 5), i + k), { jobId: `j-${i + k}`, replyTo: replyTopic })));
        if (i === 2000) {
          // A second worker joins the group: partitions move while the first has messages in flight.
          second = startWorker(args);
          await second.ready;
        }
      }
      await waitFor(() => replyIds(replies.messages).size >= n, `${n} distinct replies`, 180_000, 200);
      // Both workers answered: the rebalance really split the work.
      const answeredBy = new Set(replies.messages.map((m) => header(m, KAFKA_HEADERS.worker)));
      expect(answeredBy.size).toBe(2);
      const counts = replyIds(replies.messages);
      for (let i = 0; i < n; i++) expect(counts.has(`j-${i}`)).toBe(true);
      expect(counts.size).toBe(n);
      // At least once: a message in flight while its partition moved may be answered twice, never differently.
      const byId = new Map<string, Reply>();
      for (const m of replies.messages) {
        const r = parseKafkaReply(m);
        expect(r.ok).toBe(true);
        const prev = byId.get(r.id);
        if (prev !== undefined) expect(Array.from(r.outputs['score']!.data as Float32Array)).toEqual(Array.from(prev.outputs['score']!.data as Float32Array));
        byId.set(r.id, r);
      }
      const duplicates = replies.messages.length - n;
      console.log(`[kafka rebalance] ${duplicates} duplicate replies of ${n}`);
      expect(duplicates).toBeLessThan(n * 0.2);
      for (const i of [0, 4321, 9999]) await expectMatchesOrt(byId.get(`j-${i}`)!, features(1 + (i % 5), i));
      await waitFor(async () => (await committedTotal(brokers, `g-${topic}`, topic)) === n, 'all offsets committed', 30_000, 200);
    } finally {
      for (const w of [first, second]) w?.child.kill('SIGTERM');
      await Promise.all([first.exited, second?.exited]);
      await Promise.all([replies.stop(), producer.close()]);
    }
  }, 300_000);

  it('kill -9 of a worker mid-run: a new worker resumes from the committed offsets and nothing is lost', async () => {
    const topic = topicName();
    await createTopic(brokers, topic, 3);
    const replyTopic = `${topic}.out`;
    const args = ['--transport', 'kafka', '--topic', topic, '--group', `g-${topic}`, '--brokers', brokers.join(','), '--model-repo', repo, '--models', 'mlp', '--threads', '1', '--session-timeout-ms', '6000'];
    const producer = new KafkaProducer({ brokers, topic });
    const replies = await readTopic(brokers, replyTopic);
    const n = 4000;
    await Promise.all(Array.from({ length: n }, (_, k) => producer.enqueue('mlp', features(50, k), { jobId: `k-${k}`, replyTo: replyTopic })));
    const victim = startWorker(args);
    let next: ReturnType<typeof startWorker> | undefined;
    try {
      await victim.ready;
      await waitFor(() => replies.messages.length >= 500, 'some replies before the kill', 60_000, 10);
      victim.child.kill('SIGKILL');
      expect((await victim.exited).signal).toBe('SIGKILL');
      const committedAtKill = await committedTotal(brokers, `g-${topic}`, topic);
      expect(committedAtKill).toBeLessThan(n);
      next = startWorker(args);
      await next.ready;
      await waitFor(() => replyIds(replies.messages).size >= n, `replies for all ${n} messages`, 120_000, 200);
      const counts = replyIds(replies.messages);
      for (let k = 0; k < n; k++) expect(counts.has(`k-${k}`)).toBe(true);
      // The new worker started exactly at the committed offsets: it answered everything after them, nothing before.
      const victimId = replies.messages.map((m) => header(m, KAFKA_HEADERS.worker)).find((w) => w?.endsWith(`:${victim.child.pid}`));
      expect(victimId).toBeDefined();
      const byNext = replies.messages.filter((m) => header(m, KAFKA_HEADERS.worker) !== victimId).length;
      expect(byNext).toBe(n - committedAtKill);
      await waitFor(async () => (await committedTotal(brokers, `g-${topic}`, topic)) === n, 'all offsets committed', 30_000, 200);
    } finally {
      next?.child.kill('SIGTERM');
      await next?.exited;
      await Promise.all([replies.stop(), producer.close()]);
    }
  }, 240_000);

  it('SIGTERM drains: in-flight messages finish and are committed, the next worker answers only the rest', async () => {
    const topic = topicName();
    await createTopic(brokers, topic, 2);
    const replyTopic = `${topic}.out`;
    const args = ['--transport', 'kafka', '--topic', topic, '--group', `g-${topic}`, '--brokers', brokers.join(','), '--model-repo', repo, '--models', 'mlp', '--shutdown-timeout-ms', '20000', '--threads', '1'];
    const producer = new KafkaProducer({ brokers, topic });
    const replies = await readTopic(brokers, replyTopic);
    const n = 3000;
    await Promise.all(Array.from({ length: n }, (_, k) => producer.enqueue('mlp', features(200, k), { jobId: `t-${k}`, replyTo: replyTopic })));
    const first = startWorker(args);
    try {
      await first.ready;
      await waitFor(() => replies.messages.length >= 200, 'work under way', 60_000, 10);
      const t0 = Date.now();
      first.child.kill('SIGTERM');
      const exit = await first.exited;
      expect(exit.code).toBe(0);
      expect(Date.now() - t0).toBeLessThan(20_000);
      const committed = await committedTotal(brokers, `g-${topic}`, topic);
      expect(committed).toBeLessThan(n); // it really stopped taking messages
      // Everything it answered is committed: nothing half-done is left for the next worker.
      await waitFor(() => replies.messages.length >= committed, 'replies of the committed messages to arrive', 10_000);
      expect(replies.messages.length).toBe(committed);
      const second = startWorker(args);
      await second.ready;
      await waitFor(() => replyIds(replies.messages).size >= n, 'the rest, by the next worker', 120_000, 200);
      second.child.kill('SIGTERM');
      await second.exited;
      expect(replies.messages.length).toBe(n); // none answered twice
    } finally {
      await Promise.all([replies.stop(), producer.close()]);
    }
  }, 240_000);

  it('a broker restart mid-run loses nothing: the worker waits, retries, and finishes', async () => {
    // Every step runs against one budget that ends before the test's own timeout, so a hang
    // fails naming the step, with the trail of steps, the worker's log and the progress made.
    const t0 = Date.now();
    const budgetEnd = t0 + 230_000; // the rest is for the clean-up
    const trail: string[] = [];
    let w: ReturnType<typeof startWorker> | undefined;
    let replies: TopicReader | undefined;
    const step = async <T>(what: string | (() => string), f: () => Promise<T>, capMs = Infinity): Promise<T> => {
      const name = (): string => (typeof what === 'string' ? what : what());
      const ms = Math.max(1000, Math.min(capMs, budgetEnd - Date.now()));
      trail.push(`${((Date.now() - t0) / 1000).toFixed(1)} s: ${name()}`);
      let timer: NodeJS.Timeout | undefined;
      try {
        return await Promise.race([f(), new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no result within ${ms} ms`)), ms)))]);
      } catch (err) {
        const log = (w?.output() ?? '').split('\n');
        const ours = log.filter((l) => !l.includes('"kafkajs"')).join('\n').slice(-5000);
        const theirs = log.filter((l) => l.includes('"kafkajs"')).slice(-12).join('\n');
        const seen = replies === undefined ? 'no reader yet' : `${replyIds(replies.messages).size} distinct replies; reader crashes: ${replies.crashes.join(' | ') || 'none'}`;
        const failure = new Error(`${name()}: ${(err as Error).message} (${seen})\n--- steps ---\n${trail.join('\n')}\n--- worker log ---\n${ours}\n--- last kafkajs lines ---\n${theirs}`);
        console.error(failure.message); // also here, in case the clean-up below outlives the test's timeout
        throw failure;
      } finally {
        clearTimeout(timer);
      }
    };
    const own = await step('start a broker of its own', () => startKafka(), 120_000);
    const b = own.brokers;
    try {
      const topic = topicName();
      const replyTopic = `${topic}.out`;
      await step('create topics', async () => {
        await createTopic(b, topic, 3);
        await createTopic(b, replyTopic, 1);
      });
      const args = ['--transport', 'kafka', '--topic', topic, '--group', `g-${topic}`, '--brokers', b.join(','), '--model-repo', repo, '--models', 'mlp', '--threads', '1', '--session-timeout-ms', '6000'];
      const n = 3000;
      await step('enqueue', async () => {
        const producer = new KafkaProducer({ brokers: b, topic });
        try {
          await Promise.all(Array.from({ length: n }, (_, k) => producer.enqueue('mlp', features(100, k), { jobId: `r-${k}`, replyTo: replyTopic })));
        } finally {
          await producer.close();
        }
      });
      // An SDK subscriber on the reply topic lives through the outage too.
      const app = new KafkaProducer({ brokers: b, topic });
      const subscribed = new Set<string>();
      const sub = app.subscribe(replyTopic, (reply) => void subscribed.add(reply.id), { group: `sub-${topic}` });
      w = startWorker(args);
      const worker = w;
      try {
        await step('worker start', () => worker.ready, 60_000);
        await step('replies before the restart', () => waitFor(() => subscribed.size >= 300, 'some replies', 60_000, 10));
        await step('stop the broker', () => own.stop(), 30_000);
        await new Promise((r) => setTimeout(r, 2000)); // the broker stays down for a while (this is the fault, not a sync)
        await step('restart the broker', () => own.start(), 100_000);
        const reader = (replies = await step('reply reader after the restart', () => readTopic(b, replyTopic), 30_000));
        await step('replies after the restart', () => waitFor(() => replyIds(reader.messages).size >= n, `all ${n}`, 200_000, 250));
        const counts = replyIds(reader.messages);
        for (let k = 0; k < n; k++) expect(counts.has(`r-${k}`)).toBe(true);
        await step(() => `the SDK subscriber through the restart (${subscribed.size} of ${n})`, () => waitFor(() => subscribed.size >= n, `all ${n}`, 60_000, 100));
        let committed = -1;
        await step(
          () => `offset commits (last seen ${committed} of ${n})`,
          () => waitFor(async () => (committed = await committedTotal(b, `g-${topic}`, topic)) === n, 'all committed', 60_000, 250),
        );
        expect(worker.child.exitCode).toBeNull(); // it kept serving through the outage
      } finally {
        const bounded = (p: Promise<unknown> | undefined): Promise<unknown> => Promise.race([p, new Promise((r) => setTimeout(r, 15_000).unref())]);
        await bounded(replies?.stop());
        await bounded(sub.close().then(() => app.close()));
        worker.child.kill('SIGTERM');
        if ((await bounded(worker.exited)) === undefined) {
          worker.child.kill('SIGKILL');
          await worker.exited;
        }
      }
    } finally {
      await own.destroy();
    }
  }, 300_000);
});
