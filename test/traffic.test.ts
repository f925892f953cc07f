/**
 * Traffic split and shadow versions against a real Redis: two workers on one queue share 10 k
 * jobs 90/10 between versions 3 and 4, each id on the version a second run (fresh workers, a
 * fresh queue, the ids sent alone) gives it again; a shadow version's rows land under
 * version=4/shadow=true/ equal to version 4's forward pass while every reply stays version 3's.
 */
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Producer } from '@inferq/producer';
import type { Reply } from '@inferq/producer';
import { forwardMlp } from '../examples/build/onnx-builder.js';
import { ModelPool, ModelRepository, ParquetSink, RedisWorker, openParquet, silentLogger } from '@inferq/workers';
import { routingSource } from '../workers/src/models/routing.js';
import { redisServer } from './infra/servers.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { dropQueue, queueName, waitFor } from './helpers/redis.js';

const url = await redisServer();
const specs: Record<string, ReturnType<typeof smallMlp>> = { '3': smallMlp([4, 8, 1], 30), '4': smallMlp([4, 8, 1], 40) };
let root: string;
const queues: string[] = [];

function newQueue(): string {
  const q = queueName('traffic');
  queues.push(q);
  return q;
}

/** A worker as `inferq worker` builds it: its own pool, routing from the repository and that pool. */
async function startWorker(queue: string, sinks: ParquetSink[] = []): Promise<{ worker: RedisWorker; close(): Promise<void> }> {
  const repo = new ModelRepository(root);
  const pool = new ModelPool(repo, { logger: silentLogger(), batching: { maxDelayMs: 2 } });
  const worker = new RedisWorker({ redis: url, queue, models: pool, routing: routingSource(repo, pool), sinks, logger: silentLogger(), concurrency: 32 });
  await worker.start();
  return {
    worker,
    close: async () => {
      await worker.close(15_000);
      await pool.close();
    },
  };
}

const row = (i: number): number[] => [Math.sin(i), Math.cos(i), Math.sin(i * 0.5), (i % 7) / 7];

function expectForward(reply: Reply, x: readonly (readonly number[])[]): void {
  const want = forwardMlp(specs[reply.version!]!, { features: Float32Array.from(x.flat()) }, x.length);
  const got = reply.outputs['score']!.data as Float32Array;
  want.forEach((v, i) => expect(Math.abs(got[i]! - v)).toBeLessThan(1e-5));
}

beforeAll(async () => {
  root = join(await tempDir(), 'models');
  for (const name of ['split', 'shadowed']) for (const v of ['3', '4']) await writeModel(root, name, v, specs[v]!);
  await writeFile(join(root, 'split', 'config.yaml'), 'versionPolicy: all\ntraffic: { "3": 90, "4": 10 }\n');
  await writeFile(join(root, 'shadowed', 'config.yaml'), 'versionPolicy: all\ntraffic: { "3": 1 }\nshadow: { version: "4", sample: 1 }\n');
});

afterAll(async () => {
  for (const q of queues) await dropQueue(url, q);
});

describe('traffic split', () => {
  it('10 k jobs over two workers: 90/10 within ±3 %, and each id on the same version in a second run', async () => {
    const n = 10_000;
    const first = new Map<string, string>();
    {
      const queue = newQueue();
      const workers = [await startWorker(queue), await startWorker(queue)];
      const producer = new Producer({ redis: url, queue, linger: { ms: 20, maxJobs: 500 } });
      try {
        const replies = await Promise.all(Array.from({ length: n }, (_, i) => producer.predict('split', [row(i)], { timeoutMs: 60_000 })));
        replies.forEach((r, i) => {
          expectForward(r, [row(i)]);
          first.set(r.id, r.version!);
        });
        // Both workers served some of the packs.
        for (const w of workers) expect(w.worker.stats.completed).toBeGreaterThan(0);
      } finally {
        await producer.close();
        for (const w of workers) await w.close();
      }
    }
    expect(first.size).toBe(n);
    const share4 = [...first.values()].filter((v) => v === '4').length / n;
    expect([...new Set(first.values())].sort()).toEqual(['3', '4']);
    expect(Math.abs(share4 - 0.1)).toBeLessThan(0.03);

    // A restart: fresh workers on a fresh queue, the same ids each sent alone (not packed).
    const queue = newQueue();
    const workers = [await startWorker(queue), await startWorker(queue)];
    const producer = new Producer({ redis: url, queue });
    try {
      const ids = [...first.keys()];
      const again = await Promise.all(ids.map((id, i) => producer.predict('split', [row(i)], { jobId: id, timeoutMs: 60_000 })));
      const moved = again.filter((r) => r.version !== first.get(r.id)).map((r) => `${r.id}: ${first.get(r.id)} then ${r.version}`);
      expect(moved).toEqual([]);
    } finally {
      await producer.close();
      for (const w of workers) await w.close();
    }
  }, 90_000);
});

describe('shadow', () => {
  it('runs version 4 on every batch into version=4/shadow=true/, every reply version 3 and unchanged', async () => {
    const out = await tempDir();
    const queue = newQueue();
    const w = await startWorker(queue, [new ParquetSink({ location: out, logger: silentLogger(), rollMs: 200 })]);
    const producer = new Producer({ redis: url, queue, linger: { ms: 10, maxJobs: 20 } });
    const jobs = Array.from({ length: 60 }, (_, j) => Array.from({ length: 1 + (j % 3) }, (_, r) => row(j * 10 + r)));
    const inputs = new Map<string, number[][]>();
    try {
      const replies = await Promise.all(jobs.map((x) => producer.predict('shadowed', x, { timeoutMs: 30_000 })));
      replies.forEach((r, j) => {
        expect(r.version).toBe('3');
        expectForward(r, jobs[j]!);
        inputs.set(r.id, jobs[j]!);
      });
      const rows = jobs.reduce((s, x) => s + x.length, 0);
      await waitFor(() => w.worker.shadow!.stats.rows === rows, `${rows} shadow rows`, 20_000);
    } finally {
      await producer.close();
      await w.close();
    }
    expect(w.worker.shadow!.stats).toMatchObject({ dropped: 0, failed: 0 });
    const shadowDir = join(out, 'model=shadowed', 'version=4', 'shadow=true');
    const files = (await readdir(shadowDir, { recursive: true })).filter((f) => f.endsWith('.parquet')).map((f) => join(shadowDir, f));
    expect(files.length).toBeGreaterThan(0);
    const got = new Map<string, number[]>();
    for (const f of files) {
      const reader = await openParquet(f);
      for await (const batch of reader.batches()) {
        const ids = batch.getChild('job_id')!.toArray() as string[];
        const rowIdx = batch.getChild('row')!.toArray() as Int32Array;
        const score = batch.getChild('score')!.toArray() as Float32Array;
        ids.forEach((id, i) => {
          const list = got.get(id) ?? [];
          list[rowIdx[i]!] = score[i]!;
          got.set(id, list);
        });
      }
      await reader.close();
    }
    expect([...got.keys()].sort()).toEqual([...inputs.keys()].sort());
    for (const [id, x] of inputs) {
      const want = forwardMlp(specs['4']!, { features: Float32Array.from(x.flat()) }, x.length);
      expect(got.get(id)!.length).toBe(x.length);
      want.forEach((v, i) => expect(Math.abs(got.get(id)![i]! - v)).toBeLessThan(1e-5));
    }
    // The primary's rows are where they always were, version 3, not shadow.
    expect((await readdir(join(out, 'model=shadowed'))).sort()).toEqual(['version=3', 'version=4']);
    expect(await readdir(join(out, 'model=shadowed', 'version=4'))).toEqual(['shadow=true']);
  }, 60_000);
});
