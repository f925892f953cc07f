/**
 * /livez and /readyz of a real `inferq worker` on a Redis of its own (the test stops it):
 * 503 while its model warms, 200 once it serves, 503 while Redis is down and 200 again after,
 * 503 "draining" from SIGTERM while its last job finishes, /livez 200 all along.
 */
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { Producer } from '@inferq/producer';
import { freePort, startRedis } from './infra/redis.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { queueName, startWorker, waitFor } from './helpers/redis.js';

/** Rows of the warm-up batch and of the job in flight at SIGTERM: big enough to take a while on one thread. */
const BIG = 16_384;

describe('health endpoints', () => {
  it('readiness follows warm-up, the Redis connection and the drain; liveness stays up until exit', async () => {
    const repo = join(await tempDir(), 'models');
    await writeModel(repo, 'slow', '1', smallMlp([64, 1024, 1024, 1], 4), `batching:\n  maxBatchSize: ${BIG}\n  maxDelayMs: 1\n`);
    const redis = await startRedis();
    const queue = queueName('health');
    const port = await freePort();
    const get = async (path: string): Promise<string> => {
      const res = await fetch(`http://127.0.0.1:${port}${path}`);
      return `${res.status} ${(await res.text()).trim()}`;
    };
    const w = startWorker(['--queue', queue, '--redis', redis.url, '--model-repo', repo, '--models', 'slow', '--threads', '1', '--http-port', String(port), '--shutdown-timeout-ms', '30000']);
    const producer = new Producer({ redis: redis.url, queue });
    const client = new Redis(redis.url, { maxRetriesPerRequest: null });
    try {
      // From the first answer on: "starting" while the model loads and warms, then ready.
      const seen: string[] = [];
      await waitFor(
        async () => {
          const r = await get('/readyz').catch(() => undefined);
          if (r !== undefined && seen[seen.length - 1] !== r) seen.push(r);
          return r === '200 ready';
        },
        'the worker to be ready',
        60_000,
        20,
      );
      expect(seen[0]).toBe('503 starting: loading and warming slow');
      expect(seen[seen.length - 1]).toBe('200 ready');
      await w.ready;
      expect(await get('/livez')).toBe('200 ok');

      await redis.stop();
      await waitFor(async () => (await get('/readyz')).startsWith('503 source unreachable: redis 127.0.0.1:'), '/readyz to say Redis is unreachable', 30_000, 50);
      expect(await get('/livez')).toBe('200 ok');
      await redis.start();
      await waitFor(async () => (await get('/readyz')) === '200 ready', 'ready again after Redis came back', 30_000, 50);

      // A job in flight at SIGTERM: the drain waits for it, and readiness says so meanwhile.
      const x = Array.from({ length: BIG }, (_, r) => Array.from({ length: 64 }, (_, c) => Math.sin(r + c)));
      const reply = producer.predict('slow', x, { timeoutMs: 60_000 });
      const q = new Queue(queue, { connection: client, prefix: 'inferq' });
      await waitFor(async () => (await q.getJobCounts('active')).active === 1, 'the job to be active', 30_000, 10);
      await q.close();
      w.child.kill('SIGTERM');
      await waitFor(async () => (await get('/readyz').catch(() => '')) === '503 draining', '/readyz to say draining', 10_000, 10);
      expect(await get('/livez')).toBe('200 ok');
      expect((await reply).ok).toBe(true);
      expect((await w.exited).code).toBe(0);
      await expect(get('/livez')).rejects.toThrow();
    } finally {
      if (w.child.exitCode === null) w.child.kill('SIGKILL');
      await producer.close();
      client.disconnect();
      await redis.stop();
    }
  });
});
