/**
 * The SDK when its servers are down or refuse it: every call settles with a ConnectionError
 * (naming the server and the cause) within connectTimeoutMs, nothing is left rejected
 * unhandled, close() settles, and the same Producer works again once Redis is back.
 * Real servers only: a free port with nothing listening, the shared Redis (a throw-away ACL
 * user), and a redis-server of the test's own that it stops and starts.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { REPLY_FIELDS } from '@inferq/shared';
import { ClosedError, ConnectionError, KafkaProducer, Producer, RemoteJobError } from '@inferq/producer';
import type { Reply } from '@inferq/producer';
import { freePort, startRedis } from './infra/redis.js';
import { redisServer } from './infra/servers.js';
import { REPO_ROOT } from './helpers/cli.js';
import { dropQueue, queueName, waitFor } from './helpers/redis.js';

const url = await redisServer();
const BOUND = 1000;
/** Scheduling slack on a busy 2-core machine. */
const MARGIN = 1500;
const queues: string[] = [];

function newQueue(): string {
  const q = queueName('conn');
  queues.push(q);
  return q;
}

/** What a call settled with, and after how long. */
async function outcome(p: Promise<unknown>, t0: number): Promise<{ err: unknown; ms: number }> {
  try {
    await p;
    return { err: undefined, ms: Date.now() - t0 };
  } catch (err) {
    return { err, ms: Date.now() - t0 };
  }
}

function expectRefused(what: string, r: { err: unknown; ms: number }, address: string, bound: number): void {
  expect(r.err, what).toBeInstanceOf(ConnectionError);
  const e = r.err as ConnectionError;
  expect(e.address, what).toBe(address);
  expect(e.causeCode, what).toBe('ECONNREFUSED');
  expect(e.code, what).toBe('UNAVAILABLE');
  expect(e.retriable, what).toBe(true);
  expect(e.message, what).toContain(address);
  expect(e.message, what).toContain('ECONNREFUSED');
  expect(r.ms, what).toBeLessThan(bound + MARGIN);
}

afterAll(async () => {
  for (const q of queues) await dropQueue(url, q);
});

describe('Redis Producer', () => {
  it('with nothing listening: every call rejects with ConnectionError (address, ECONNREFUSED) within connectTimeoutMs, close() settles', async () => {
    const port = await freePort();
    const address = `127.0.0.1:${port}`;
    const warnings: object[] = [];
    const logger = { warn: (obj: object) => void warnings.push(obj), error: (obj: object) => void warnings.push(obj) };
    const producer = new Producer({ redis: `redis://${address}`, queue: newQueue(), connectTimeoutMs: BOUND, logger });
    const lingering = new Producer({ redis: `redis://${address}`, queue: newQueue(), connectTimeoutMs: BOUND, linger: { ms: 5 } });
    const t0 = Date.now();
    const sub = producer.subscribe('replies', () => undefined, { group: 'g' });
    const [enqueue, predict, lookup, lookupMany, packed, ready, done] = await Promise.all([
      outcome(producer.enqueue('m', [[1, 2]]), t0),
      // A reply timeout far beyond the bound: the ConnectionError must come first.
      outcome(producer.predict('m', [[1, 2]], { timeoutMs: 30_000 }), t0),
      outcome(producer.lookup('table', 'k'), t0),
      outcome(producer.lookupMany('table', ['a', 'b']), t0),
      outcome(Promise.all([lingering.enqueue('m', [[1, 2]]), lingering.enqueue('m', [[3, 4]])]), t0),
      outcome(sub.ready, t0),
      outcome(sub.done, t0),
    ]);
    expectRefused('enqueue', enqueue, address, BOUND);
    expectRefused('predict', predict, address, BOUND);
    expectRefused('lookup', lookup, address, BOUND);
    expectRefused('lookupMany', lookupMany, address, BOUND);
    expectRefused('linger enqueue', packed, address, BOUND);
    expectRefused('subscribe ready', ready, address, BOUND);
    expectRefused('subscribe done', done, address, BOUND);
    // The logger heard of it, once per connection (main, inbox, subscription) rather than once per reconnect attempt.
    expect(warnings.length).toBeGreaterThan(0);
    expect(warnings.length).toBeLessThanOrEqual(3);
    expect(warnings[0]).toMatchObject({ server: 'redis', address, code: 'ECONNREFUSED' });
    const c0 = Date.now();
    await Promise.all([producer.close(), lingering.close()]);
    expect(Date.now() - c0).toBeLessThan(BOUND + MARGIN);
    await expect(producer.enqueue('m', [[1, 2]])).rejects.toBeInstanceOf(ClosedError);
  });

  it('a wrong password rejects with ConnectionError WRONGPASS at once; the right one works', async () => {
    const admin = new Redis(url);
    const user = `inferq-test-${randomUUID().slice(0, 8)}`;
    const password = randomUUID();
    await admin.call('ACL', 'SETUSER', user, 'on', `>${password}`, '~*', '&*', '+@all');
    const withPassword = (p: string): string => {
      const u = new URL(url);
      u.username = user;
      u.password = p;
      return u.toString();
    };
    const address = `${new URL(url).hostname}:${new URL(url).port}`;
    const wrong = new Producer({ redis: withPassword(`not-${password}`), queue: newQueue(), connectTimeoutMs: 10_000 });
    const right = new Producer({ redis: withPassword(password), queue: newQueue(), connectTimeoutMs: 10_000 });
    try {
      const t0 = Date.now();
      const r = await outcome(wrong.enqueue('m', [[1, 2]]), t0);
      expect(r.err).toBeInstanceOf(ConnectionError);
      expect((r.err as ConnectionError).causeCode).toBe('WRONGPASS');
      expect((r.err as ConnectionError).address).toBe(address);
      expect((r.err as Error).message).toContain(`redis ${address}`);
      expect(r.ms).toBeLessThan(5000); // the server said no: no waiting out the 10 s bound
      await expect(right.enqueue('m', [[1, 2]])).resolves.toEqual(expect.any(String));
    } finally {
      await Promise.all([wrong.close(), right.close()]);
      await admin.call('ACL', 'DELUSER', user);
      admin.disconnect();
    }
  });

  it('a server that goes away and comes back: ConnectionError meanwhile, then the same Producer, inbox and subscription work again', async () => {
    const server = await startRedis();
    const queue = queueName('restart');
    // 3 s: a call made right after the restart waits out ioredis's reconnect backoff (at most 1 s).
    const producer = new Producer({ redis: server.url, queue, connectTimeoutMs: 3000 });
    const raw = new Redis(server.url, { maxRetriesPerRequest: 0, retryStrategy: () => 100 });
    raw.on('error', () => undefined); // the test's own client sees the outage too
    const seen: Reply[] = [];
    const stream = `replies-${randomUUID().slice(0, 8)}`;
    const sub = producer.subscribe(stream, (reply) => void seen.push(reply), { group: 'g', blockMs: 200 });
    try {
      await sub.ready;
      const before = await producer.enqueue('m', [[1, 2]]);
      expect(await raw.exists(`inferq:${queue}:${before}`)).toBe(1);

      await server.stop();
      const t0 = Date.now();
      const [enqueue, lookup] = await Promise.all([outcome(producer.enqueue('m', [[1, 2]]), t0), outcome(producer.lookup('table', 'k'), t0)]);
      expectRefused('enqueue while down', enqueue, `127.0.0.1:${server.port}`, 3000);
      expectRefused('lookup while down', lookup, `127.0.0.1:${server.port}`, 3000);

      await server.start();
      const after = await producer.enqueue('m', [[1, 2]]);
      expect(await raw.exists(`inferq:${queue}:${after}`)).toBe(1);
      expect(await producer.lookup('table', 'k')).toBeUndefined();
      // The inbox reader came back: a reply written to it reaches the waiting predict().
      const jobId = `job-${randomUUID().slice(0, 8)}`;
      const predicted = producer.predict('m', [[1, 2]], { jobId, timeoutMs: 20_000 });
      await waitFor(async () => (await raw.exists(`inferq:${queue}:${jobId}`)) === 1, 'the predict() job', 10_000);
      await raw.xadd(producer.inbox, '*', REPLY_FIELDS.id, jobId, REPLY_FIELDS.status, 'error', REPLY_FIELDS.error, 'bad input', REPLY_FIELDS.kind, 'InvalidInputError');
      const err = await predicted.catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RemoteJobError);
      expect((err as RemoteJobError).kind).toBe('InvalidInputError');
      // The subscription rode out the outage (the server came back empty: it made its group again).
      await raw.xadd(stream, '*', REPLY_FIELDS.id, 'r-1', REPLY_FIELDS.status, 'error', REPLY_FIELDS.error, 'x', REPLY_FIELDS.kind, 'Error');
      await waitFor(() => seen.some((r) => r.id === 'r-1'), 'the reply on the subscribed stream', 10_000);
    } finally {
      await producer.close();
      raw.disconnect();
      await server.stop();
    }
    await expect(sub.done).resolves.toBeUndefined();
  }, 60_000);

  it('subscribe(): close() before it could connect resolves done and rejects ready with ClosedError, at once', async () => {
    const port = await freePort();
    const producer = new Producer({ redis: `redis://127.0.0.1:${port}`, queue: newQueue(), connectTimeoutMs: 10_000 });
    const sub = producer.subscribe('replies', () => undefined, { group: 'g' });
    const t0 = Date.now();
    await sub.close();
    await expect(sub.done).resolves.toBeUndefined();
    await expect(sub.ready).rejects.toBeInstanceOf(ClosedError);
    await producer.close();
    expect(Date.now() - t0).toBeLessThan(MARGIN);
  });

  it('subscribe(): a reply stream deleted under a subscription is made again (with its group) and read on', async () => {
    const producer = new Producer({ redis: url, queue: newQueue() });
    const raw = new Redis(url);
    const stream = `replies-${randomUUID().slice(0, 8)}`;
    const seen: string[] = [];
    const sub = producer.subscribe(stream, (reply) => void seen.push(reply.id), { group: 'g', blockMs: 200 });
    try {
      await sub.ready;
      await raw.del(stream);
      await waitFor(async () => (await raw.exists(stream)) === 1, 'the stream made again', 10_000);
      await raw.xadd(stream, '*', REPLY_FIELDS.id, 'after-del', REPLY_FIELDS.status, 'error', REPLY_FIELDS.error, 'x', REPLY_FIELDS.kind, 'Error');
      await waitFor(() => seen.includes('after-del'), 'the reply written after the delete', 10_000);
    } finally {
      await producer.close();
      await raw.del(stream);
      raw.disconnect();
    }
    await expect(sub.done).resolves.toBeUndefined();
  });

  it('an app that leaves a failing predict() unawaited is not crashed, prints nothing, and catches ConnectionError later', async () => {
    const port = await freePort();
    const fixture = fileURLToPath(new URL('./fixtures/careless-predict.ts', import.meta.url));
    const child = spawn(process.execPath, ['--conditions=inferq-source', '--import', 'tsx', fixture, String(port)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    clearTimeout(timer);
    expect(code, `stderr:\n${stderr}`).toBe(0);
    expect(stderr).not.toContain('Unhandled');
    expect(stderr).not.toContain('[ioredis]');
    expect(stderr).not.toMatch(/^\s+at /m); // no stack trace
    const result = JSON.parse(stdout.trim()) as { connectionError: boolean; caught: string; code: string; address: string };
    expect(result, result.caught).toMatchObject({ connectionError: true, code: 'ECONNREFUSED', address: `127.0.0.1:${port}` });
  }, 40_000);
});

describe('KafkaProducer', () => {
  it('with nothing listening: enqueue, predict and subscribe reject with ConnectionError (broker, ECONNREFUSED) within connectTimeoutMs', async () => {
    const port = await freePort();
    const address = `127.0.0.1:${port}`;
    const bound = 2000;
    const producer = new KafkaProducer({ brokers: [address], topic: `t-${randomUUID().slice(0, 8)}`, connectTimeoutMs: bound });
    try {
      const t0 = Date.now();
      const sub = producer.subscribe('replies', () => undefined, { group: 'g' });
      const [enqueue, predict, ready, done] = await Promise.all([
        outcome(producer.enqueue('m', [[1, 2]]), t0),
        outcome(producer.predict('m', [[1, 2]], { timeoutMs: 30_000 }), t0),
        outcome(sub.ready, t0),
        outcome(sub.done, t0),
      ]);
      expectRefused('enqueue', enqueue, address, bound);
      expectRefused('predict', predict, address, bound);
      expectRefused('subscribe ready', ready, address, bound);
      expectRefused('subscribe done', done, address, bound);
    } finally {
      const c0 = Date.now();
      await producer.close();
      expect(Date.now() - c0).toBeLessThan(bound + MARGIN);
    }
  });
});
