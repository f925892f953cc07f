/**
 * `inferq worker --devices` against a real Redis: one child worker per (fake) GPU, each
 * falling back to the CPU on this machine, restarted when killed, drained on SIGTERM.
 */
import { readFile, readdir, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Producer } from '@inferq/producer';
import { forwardMlp } from '../examples/build/onnx-builder.js';
import { redisServer } from './infra/servers.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { dropQueue, queueName, readStream, startWorker, waitFor } from './helpers/redis.js';
import type { WorkerProcess } from './helpers/redis.js';

const url = await redisServer();
const spec = smallMlp([4, 16, 2], 3);
let redis: Redis;
const queues: string[] = [];

function newQueue(): string {
  const q = queueName('sup');
  queues.push(q);
  return q;
}

async function newRepo(): Promise<string> {
  const repo = join(await tempDir(), 'models');
  await writeModel(repo, 'mlp', '1', spec);
  return repo;
}

function features(rows: number, seed: number): number[][] {
  return Array.from({ length: rows }, (_, r) => Array.from({ length: 4 }, (_, c) => Math.cos(seed * 11 + r * 4 + c)));
}

/** The child worker processes of `pid`, by the --device each was given. */
async function children(pid: number): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const [stat, cmdline] = await Promise.all([readFile(`/proc/${entry}/stat`, 'utf8'), readFile(`/proc/${entry}/cmdline`, 'utf8')]).catch(() => ['', '']); // a process that ended meanwhile
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid !== pid) continue;
    const args = cmdline.split('\0');
    if (!args.includes('--device')) continue; // not a worker (tsx's esbuild service, when run from source)
    if (args.includes('--devices')) throw new Error(`child ${entry} was given --devices: ${args.join(' ')}`);
    out.set(args[args.lastIndexOf('--device') + 1]!, Number(entry));
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

/** A port that is free, with the next two free as well (the children's). */
async function freePorts(): Promise<number> {
  const listen = (port: number): Promise<{ port: number; close(): Promise<void> }> =>
    new Promise((resolve, reject) => {
      const s = createServer();
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => resolve({ port: (s.address() as { port: number }).port, close: () => new Promise((r) => s.close(() => r())) }));
    });
  for (;;) {
    const base = await listen(0);
    const next = await Promise.all([listen(base.port + 1), listen(base.port + 2)].map((p) => p.catch(() => undefined)));
    await Promise.all([base, ...next].map((s) => s?.close()));
    if (next.every((s) => s !== undefined)) return base.port;
  }
}

async function stop(w: WorkerProcess): Promise<void> {
  if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGTERM');
  await w.exited;
}

beforeAll(() => {
  redis = new Redis(url);
});

afterAll(async () => {
  for (const q of queues) await dropQueue(url, q);
  redis.disconnect();
});

describe('inferq worker --devices', () => {
  it('one child per device serves the queue; a child killed with -9 is restarted; SIGTERM drains all and loses no job', async () => {
    const queue = newQueue();
    const stream = `inferq:${queue}:replies`;
    const repo = await newRepo();
    const port = await freePorts();
    const common = ['--queue', queue, '--redis', url, '--model-repo', repo, '--models', 'mlp', '--threads', '1', '--max-delay-ms', '1'];
    const sup = startWorker([...common, '--devices', 'cuda:0,cuda:1', '--http-port', String(port), '--shutdown-timeout-ms', '10000', '--concurrency', '16']);
    const producer = new Producer({ redis: url, queue });
    const q = new Queue(queue, { connection: { url }, prefix: 'inferq' });
    let next: WorkerProcess | undefined;
    try {
      await sup.ready;
      const pid = sup.child.pid!;
      expect(sup.output()).toContain(`inferq worker: serving queue "${queue}" on cuda:0,cuda:1 (pid ${pid})`);
      expect(sup.output().split('inferq worker: serving')).toHaveLength(2); // said once, by the supervisor
      const first = await children(pid);
      expect([...first.keys()].sort()).toEqual(['cuda:0', 'cuda:1']);

      const predictAll = async (seed: number): Promise<void> => {
        const xs = Array.from({ length: 16 }, (_, i) => features(1 + (i % 4), seed + i));
        const replies = await Promise.all(xs.map((x) => producer.predict('mlp', x, { timeoutMs: 20_000 })));
        replies.forEach((reply, i) => {
          const want = forwardMlp(spec, { features: Float32Array.from(xs[i]!.flat()) }, xs[i]!.length);
          const got = reply.outputs['score']!.data as Float32Array;
          for (let k = 0; k < want.length; k++) expect(Math.abs(got[k]! - want[k]!)).toBeLessThan(1e-5);
        });
      };
      await predictAll(1);
      expect((await fetch(`http://127.0.0.1:${port}/livez`)).status).toBe(200);

      process.kill(first.get('cuda:1')!, 'SIGKILL');
      let restarted: Map<string, number> = new Map();
      await waitFor(
        async () => {
          restarted = await children(pid);
          return restarted.has('cuda:1') && restarted.get('cuda:1') !== first.get('cuda:1');
        },
        'a new child on cuda:1',
        30_000,
      );
      expect(restarted.get('cuda:0')).toBe(first.get('cuda:0'));
      // Ready again once the new child serves: /readyz asks every child's own /readyz.
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 'the supervisor to be ready again', 60_000, 200);
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(metrics).toContain('inferq_supervisor_child_restarts_total{device="cuda:0"} 0\n');
      expect(metrics).toContain('inferq_supervisor_child_restarts_total{device="cuda:1"} 1\n');
      expect(metrics).toContain('inferq_supervisor_children_up{device="cuda:0"} 1\n');
      expect(metrics).toContain('inferq_supervisor_children_up{device="cuda:1"} 1\n');
      // The children's own series, merged: one TYPE per family, each child's series under its device.
      expect(metrics.match(/^# TYPE inferq_ready gauge$/gm)).toHaveLength(1);
      expect(metrics).toMatch(/^inferq_ready\{device="cuda:0"\} 1$/m);
      expect(metrics).toMatch(/^inferq_ready\{device="cuda:1"\} 1$/m);
      expect(metrics.match(/^# TYPE process_resident_memory_bytes gauge$/gm)).toHaveLength(1);
      expect(sup.output()).toMatch(/"device":"cuda:1".*"signal":"SIGKILL".*child worker exited unasked: restarting it/);
      await predictAll(100); // still answered

      // Jobs sent just before SIGTERM: each is answered once, now or by the next worker. The queue is
      // paused while they are sent, so that the children are still busy with them when SIGTERM comes.
      const n = 1000;
      await q.pause();
      for (let i = 0; i < n; i += 250) {
        await Promise.all(Array.from({ length: 250 }, (_, k) => producer.enqueue('mlp', features(100, i + k), { jobId: `s-${i + k}`, replyTo: stream })));
      }
      await q.resume();
      await waitFor(async () => (await redis.xlen(stream)) >= 20, 'work under way', 60_000, 10);
      const t0 = Date.now();
      sup.child.kill('SIGTERM');
      const exit = await sup.exited;
      expect(exit.code, sup.output()).toBe(0);
      expect(Date.now() - t0).toBeLessThan(15_000); // --shutdown-timeout-ms, plus the supervisor's grace
      expect([...restarted.values()].map(alive)).toEqual([false, false]);
      expect(await q.getActiveCount()).toBe(0); // nothing left half-done
      expect(await redis.xlen(stream)).toBeLessThan(n); // the children stopped pulling

      next = startWorker(common);
      await next.ready;
      await waitFor(async () => (await redis.xlen(stream)) >= n, 'the rest, by the next worker', 120_000, 200);
      const ids = (await readStream(redis, stream)).map((e) => e.fields.get('id')!.toString());
      expect(ids.length).toBe(n); // none answered twice
      expect(new Set(ids)).toEqual(new Set(Array.from({ length: n }, (_, i) => `s-${i}`)));
      expect(await redis.xlen(`inferq:${queue}:dead`)).toBe(0);
    } finally {
      await stop(sup);
      if (next !== undefined) await stop(next);
      await q.close();
      await producer.close();
    }
  }, 240_000);

  it('a child that keeps failing (its model repository gone) makes the supervisor stop the others and exit 1 with one line', async () => {
    const queue = newQueue();
    const repo = await newRepo();
    const sup = startWorker(['--queue', queue, '--redis', url, '--model-repo', repo, '--models', 'mlp', '--threads', '1', '--devices', 'cuda:0,cuda:1', '--http-port', '0', '--max-restarts', '2']);
    try {
      await sup.ready;
      const pid = sup.child.pid!;
      const first = await children(pid);
      await rm(repo, { recursive: true });
      process.kill(first.get('cuda:1')!, 'SIGKILL');
      const exit = await sup.exited;
      expect(exit.code).toBe(1);
      const errors = sup.output().split('\n').filter((l) => l.startsWith('inferq: error:'));
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatch(/^inferq: error: worker on cuda:1 exited 2 times in a row \(last: code 1: model repository .*: cannot list .*ENOENT/);
      expect(sup.output().match(/child worker exited unasked: restarting it/g)).toHaveLength(1);
      expect([...first.values()].map(alive)).toEqual([false, false]); // cuda:0 was stopped too
    } finally {
      await stop(sup);
    }
  }, 180_000);
});
