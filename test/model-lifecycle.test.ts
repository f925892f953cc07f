/**
 * The model lifecycle against real Redis and HDFS, with `inferq worker` processes: hot reload
 * under load and rollback, a broken or half-published version never taking traffic, a
 * version pinned after its retirement, the manual reload, and a repository on HDFS.
 */
import { rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { Producer, RemoteJobError } from '@inferq/producer';
import { WebHdfs } from '@inferq/workers';
import { buildMlp } from '../examples/build/onnx-builder.js';
import { hdfsServer, redisServer } from './infra/servers.js';
import { runCli } from './helpers/cli.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { dropQueue, queueName, startWorker, waitFor } from './helpers/redis.js';
import type { WorkerProcess } from './helpers/redis.js';

const url = await redisServer();
const queues: string[] = [];
const workers: WorkerProcess[] = [];
let redis: Redis;

beforeAll(() => {
  redis = new Redis(url);
});

afterAll(async () => {
  for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGTERM');
  await Promise.all(workers.map((w) => w.exited));
  for (const q of queues) await dropQueue(url, q);
  redis.disconnect();
});

const x = [[0.1, 0.2, 0.3, 0.4]];

async function worker(repo: string, extra: string[] = []): Promise<{ queue: string; producer: Producer; w: WorkerProcess }> {
  const queue = queueName('life');
  queues.push(queue);
  const w = startWorker(['--redis', url, '--queue', queue, '--model-repo', repo, '--http-port', '0', '--max-delay-ms', '2', ...extra]);
  workers.push(w);
  await w.ready;
  return { queue, producer: new Producer({ redis: url, queue }), w };
}

/** The version that answers a job sent now. */
async function versionNow(producer: Producer, model: string): Promise<string | undefined> {
  return (await producer.predict(model, x, { timeoutMs: 20_000 })).version;
}

describe('hot reload', () => {
  it('under load: a version copied in takes over, removed again hands back; no job fails, each answer comes from a version served then', async () => {
    const repo = await tempDir();
    await writeModel(repo, 'm', '1', smallMlp([4, 8, 1], 1));
    const { producer } = await worker(repo, ['--model-poll-ms', '200']);
    const answers: { sent: number; version: string | undefined }[] = [];
    const failures: unknown[] = [];
    let stop = false;
    const client = async (): Promise<void> => {
      while (!stop) {
        const sent = Date.now();
        try {
          answers.push({ sent, version: (await producer.predict('m', x, { timeoutMs: 20_000 })).version });
        } catch (err) {
          failures.push(err);
        }
      }
    };
    const clients = Array.from({ length: 8 }, client);
    try {
      await waitFor(() => answers.length >= 50, '50 answers from version 1');
      const copied = Date.now();
      await writeModel(repo, 'm', '2', smallMlp([4, 8, 1], 2)); // written in place: the two-scan rule guards it
      await waitFor(() => answers.some((a) => a.version === '2'), 'an answer from version 2', 20_000);
      const swapped = Date.now();
      await waitFor(() => answers.filter((a) => a.sent > swapped).length >= 50, '50 answers after the swap');
      const removing = Date.now();
      await rm(join(repo, 'm', '2'), { recursive: true });
      await waitFor(() => answers.some((a) => a.sent > removing && a.version === '1'), 'an answer from version 1 again', 20_000);
      const back = Date.now();
      await waitFor(() => answers.filter((a) => a.sent > back).length >= 50, '50 answers after the rollback');
      stop = true;
      await Promise.all(clients);

      expect(failures).toEqual([]);
      expect(new Set(answers.map((a) => a.version))).toEqual(new Set(['1', '2']));
      expect(answers.filter((a) => a.sent < copied).every((a) => a.version === '1')).toBe(true);
      expect(answers.filter((a) => a.sent > swapped && a.sent < removing).map((a) => a.version)).toEqual(expect.arrayContaining(['2']));
      expect(answers.filter((a) => a.sent > swapped && a.sent < removing).every((a) => a.version === '2')).toBe(true);
      expect(answers.filter((a) => a.sent > back).every((a) => a.version === '1')).toBe(true);
      // A job pinned to the retired version gets a clear refusal.
      const pinned = await producer.predict('m', x, { version: '2', timeoutMs: 20_000 }).catch((err: unknown) => err);
      expect(pinned).toBeInstanceOf(RemoteJobError);
      expect((pinned as RemoteJobError).code).toBe('UNKNOWN_VERSION');
    } finally {
      stop = true;
      await Promise.all(clients);
      await producer.close();
    }
  });

  it('a broken version leaves the old one serving (logged); an unmarked version beside marked ones is never loaded; dead-letter payloads expire as set', async () => {
    const repo = await tempDir();
    await writeModel(repo, 'b', '1', smallMlp());
    await writeFile(join(await writeModel(repo, 'h', '1', smallMlp()), '_READY'), '');
    const { producer, queue, w } = await worker(repo, ['--model-poll-ms', '200', '--dead-letter-ttl-seconds', '321']);
    try {
      expect(await versionNow(producer, 'b')).toBe('1');
      expect(await versionNow(producer, 'h')).toBe('1');
      await writeModel(repo, 'b', '2', new TextEncoder().encode('this is not an onnx model'));
      await writeModel(repo, 'h', '2', smallMlp()); // complete, but no _READY while version 1 has one
      await waitFor(() => /new model version failed to load/.test(w.output()), 'the failed load in the log', 20_000);
      expect(w.output()).toMatch(/"model":"b","version":"2"/);
      expect(await versionNow(producer, 'b')).toBe('1');
      // Publishing 3 with its marker: served at once, and 2 (unmarked) was passed over all along.
      await writeFile(join(await writeModel(repo, 'h', '3', smallMlp()), '_READY'), '');
      await waitFor(async () => (await versionNow(producer, 'h')) === '3', 'version 3 of h', 20_000);
      const pinned = await producer.predict('h', x, { version: '2', timeoutMs: 20_000 }).catch((err: unknown) => err);
      expect((pinned as RemoteJobError).code).toBe('UNKNOWN_VERSION');
      // That refusal is a dead letter; its payload copy expires within --dead-letter-ttl-seconds.
      let keys: string[] = [];
      await waitFor(async () => (keys = await redis.keys(`inferq:${queue}:dead:payload:*`)).length === 1, "the dead letter's payload copy");
      const ttl = await redis.ttl(keys[0]!);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(321);
    } finally {
      await producer.close();
    }
  });

  it('with polling off, `inferq models reload` or SIGHUP makes the workers look at the repository', async () => {
    const repo = await tempDir();
    await writeModel(repo, 'm', '1', smallMlp());
    const { producer, queue, w } = await worker(repo, ['--model-poll-ms', '0']);
    try {
      expect(await versionNow(producer, 'm')).toBe('1');
      await writeModel(repo, 'm', '.2.tmp', smallMlp([4, 8, 1], 2));
      await rename(join(repo, 'm', '.2.tmp'), join(repo, 'm', '2'));
      expect(await versionNow(producer, 'm')).toBe('1'); // nobody looked yet
      const res = await runCli(['models', 'reload', '--redis', url, '--queue', queue]);
      expect(res.stderr).toBe('');
      expect(res.stdout).toContain('reload sent to 1 worker(s)');
      await waitFor(async () => (await versionNow(producer, 'm')) === '2', 'version 2 after the reload', 20_000);
      // Anything else on the control channel is ignored (and logged).
      await writeModel(repo, 'm', '3', smallMlp([4, 8, 1], 3));
      await redis.publish(`inferq:${queue}:control`, '{"command":"exec","path":"/bin/sh"}');
      await waitFor(() => w.output().includes('ignored a control message'), 'the ignored control message in the log');
      expect(await versionNow(producer, 'm')).toBe('2');
      // SIGHUP does what the control message does.
      w.child.kill('SIGHUP');
      await waitFor(async () => (await versionNow(producer, 'm')) === '3', 'version 3 after SIGHUP', 20_000);
    } finally {
      await producer.close();
    }
  });
});

describe('traffic through the CLI worker', () => {
  it('routes jobs without a version by the model-level traffic split; another worker process gives each id the same version', async () => {
    const repo = await tempDir();
    await writeModel(repo, 't', '3', smallMlp([4, 8, 1], 3));
    await writeModel(repo, 't', '4', smallMlp([4, 8, 1], 4));
    await writeFile(join(repo, 't', 'config.yaml'), 'versionPolicy: all\ntraffic: { "3": 90, "4": 10 }\n');
    const [a, b] = await Promise.all([worker(repo), worker(repo)]);
    try {
      const ids = Array.from({ length: 1000 }, (_, i) => `traffic-${a.queue}-${i}`);
      const run = (p: Producer): Promise<(string | undefined)[]> => Promise.all(ids.map((jobId) => p.predict('t', x, { jobId, timeoutMs: 30_000 }).then((r) => r.version)));
      const first = await run(a.producer);
      const share4 = first.filter((v) => v === '4').length / ids.length;
      expect(new Set(first)).toEqual(new Set(['3', '4']));
      expect(share4).toBeGreaterThan(0.06);
      expect(share4).toBeLessThan(0.14);
      expect(await run(b.producer)).toEqual(first);
    } finally {
      await a.producer.close();
      await b.producer.close();
    }
  });
});

describe('a model repository on HDFS', () => {
  let fs: WebHdfs;
  const root = `/inferq-test/lifecycle-${queueName('repo')}`;

  beforeAll(async () => {
    fs = new WebHdfs({ url: await hdfsServer(), user: 'inferq-test' });
  });
  afterAll(async () => {
    await fs.delete(root, true).catch(() => undefined);
  });

  it('a version added on HDFS is picked up, and removed again is rolled back', async () => {
    await fs.create(`${root}/m/1/model.onnx`, buildMlp(smallMlp([4, 8, 1], 1)));
    const host = (await hdfsServer()).replace(/^http:\/\//, '');
    const { producer } = await worker(`webhdfs://${host}${root}`, ['--model-poll-ms', '200']);
    try {
      expect(await versionNow(producer, 'm')).toBe('1');
      await fs.create(`${root}/m/2/model.onnx`, buildMlp(smallMlp([4, 8, 1], 2)));
      await waitFor(async () => (await versionNow(producer, 'm')) === '2', 'version 2 from HDFS', 30_000);
      await fs.delete(`${root}/m/2`, true);
      await waitFor(async () => (await versionNow(producer, 'm')) === '1', 'version 1 after the removal on HDFS', 30_000);
    } finally {
      await producer.close();
    }
  });
});
