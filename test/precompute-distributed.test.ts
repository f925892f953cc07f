/**
 * Distributed precompute against the real Redis (and HDFS for Parquet), with 3 worker processes
 * (`inferq worker --role precompute`): the result equals the single-process run's (every key
 * once, values equal, in Redis and in Parquet); a worker killed with SIGKILL mid-task changes
 * nothing; a second launch while the run is in progress is refused; a run whose workers were all
 * killed resumes with new workers; `--shard i/N` processes give the same table.
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTablePointer, tableKeys } from '@inferq/shared';
import { WebHdfs } from '@inferq/workers';
import { forwardMlp } from '../examples/build/onnx-builder.js';
import { cliArgv, REPO_ROOT, runCli } from './helpers/cli.js';
import type { CliResult } from './helpers/cli.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { dropQueue, queueName, startWorker, waitFor } from './helpers/redis.js';
import type { WorkerProcess } from './helpers/redis.js';
import { runPython } from './infra/python.js';
import { hdfsServer, redisServer } from './infra/servers.js';

const url = await redisServer();
const webhdfs = await hdfsServer();
const COUNTRIES = ['DE', 'FR', 'España', 'IT'];
const v1 = smallMlp([6, 16, 2], 31);
let repo: string;
let dir: string;
let redis: Redis;

beforeAll(async () => {
  dir = await tempDir('inferq-precompute-dist-');
  repo = join(dir, 'models');
  await writeModel(repo, 'scorer', '1', v1);
  redis = new Redis(url);
});

afterAll(() => {
  redis.disconnect();
});

function specText(table: string, opts: { properties: number; chunkRows: number; parquet?: string }): string {
  return [
    `table: ${table}`,
    'model: scorer',
    'space:',
    '  axes:',
    `    - { name: country, values: [${COUNTRIES.join(', ')}] }`,
    '    - { name: nights, range: { from: 1, to: 10 } }',
    `    - { name: property, range: { from: 1, to: ${opts.properties} } }`,
    'key: "{country}:{nights}:{property}"',
    'encode:',
    '  features:',
    '    - { axis: country, as: onehot }',
    '    - { axis: nights, as: number }',
    '    - { axis: property, as: index }',
    `chunkRows: ${opts.chunkRows}`,
    'redis: { graceSeconds: 60 }',
    ...(opts.parquet === undefined ? [] : [`parquet: { path: "${opts.parquet}" }`]),
  ].join('\n');
}

async function writeSpec(name: string, text: string): Promise<string> {
  const path = join(dir, `${name}.yaml`);
  await writeFile(path, text);
  return path;
}

/** Every key → value of a table's current version (each key once: a duplicate fails). */
async function readTable(table: string): Promise<Map<string, string>> {
  const keys = tableKeys('inferq', table);
  const ptr = parseTablePointer(await redis.get(keys.current));
  expect(ptr, `table ${table} is published`).toBeDefined();
  const out = new Map<string, string>();
  for (let b = 0; b < ptr!.buckets; b++) {
    for (const [k, v] of Object.entries(await redis.hgetall(keys.bucket(ptr!.runId, b)))) {
      expect(out.has(k), `key ${k} in one bucket only`).toBe(false);
      out.set(k, v);
    }
  }
  return out;
}

/** The two tables hold the same keys, each with the same scores (to float32 rounding), and both agree with the model. */
function expectSameTable(got: Map<string, string>, want: Map<string, string>, rows: number): void {
  expect(got.size).toBe(rows);
  expect(want.size).toBe(rows);
  for (const [k, v] of want) {
    const g = got.get(k);
    expect(g, k).toBeDefined();
    const a = (JSON.parse(g!) as { score: number[] }).score;
    const b = (JSON.parse(v) as { score: number[] }).score;
    for (let i = 0; i < 2; i++) expect(Math.abs(a[i]! - b[i]!), k).toBeLessThan(1e-5);
  }
  for (const key of ['DE:1:1', 'España:3:7', [...want.keys()][rows - 1]!]) {
    const [country, nights, property] = key.split(':');
    const x = new Float32Array(6);
    x[COUNTRIES.indexOf(country!)] = 1;
    x[4] = Number(nights);
    x[5] = Number(property) - 1;
    const model = Array.from(forwardMlp(v1, { features: x }, 1));
    const a = (JSON.parse(got.get(key)!) as { score: number[] }).score;
    for (let i = 0; i < 2; i++) expect(Math.abs(a[i]! - model[i]!), key).toBeLessThan(1e-5);
  }
}

interface Fleet {
  readonly prefix: string;
  readonly queue: string;
  workers: WorkerProcess[];
  start(n: number): Promise<void>;
  stop(): Promise<void>;
}

/** Precompute workers on a queue and key prefix of the test's own. */
function fleet(extra: readonly string[] = []): Fleet {
  const prefix = queueName('p');
  const queue = queueName('offline');
  const f: Fleet = {
    prefix,
    queue,
    workers: [],
    async start(n) {
      const started = Array.from({ length: n }, () =>
        startWorker(['--role', 'precompute', '--redis', url, '--prefix', prefix, '--queue', queue, '--model-repo', repo, '--allow-specs', dir, '--lock-duration-ms', '3000', ...extra]),
      );
      f.workers.push(...started);
      await Promise.all(started.map((w) => w.ready));
    },
    async stop() {
      for (const w of f.workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGTERM');
      await Promise.all(f.workers.map((w) => w.exited));
      await dropQueue(url, queue, prefix);
    },
  };
  return f;
}

const launch = (f: Fleet, path: string, args: readonly string[] = []): Promise<CliResult> =>
  runCli(['precompute', '--spec', path, '--distributed', '--model-repo', repo, '--redis', url, '--prefix', f.prefix, '--queue', f.queue, '--no-progress', ...args], { timeoutMs: 170_000 });

async function singleProcess(table: string, text: string, args: readonly string[] = []): Promise<void> {
  const r = await runCli(['precompute', '--spec', await writeSpec(`${table}-single`, text), '--model-repo', repo, '--redis', url, '--no-progress', ...args]);
  expect(r.code, r.stderr).toBe(0);
}

const references = new Map<string, Promise<Map<string, string>>>();

/** The table one process makes of a space (made once per space, shared by the tests that compare with it). */
function reference(properties: number, chunkRows: number): Promise<Map<string, string>> {
  const key = `${properties}/${chunkRows}`;
  let table = references.get(key);
  if (table === undefined) {
    const name = `t-${queueName()}`;
    table = singleProcess(name, specText(name, { properties, chunkRows })).then(() => readTable(name));
    references.set(key, table);
  }
  return table;
}

describe('distributed precompute', () => {
  it('3 workers fill the same Redis table and the same Parquet rows (HDFS) as one process; status reports it complete', async () => {
    const host = webhdfs.replace(/^http:\/\//, '');
    const single = `t-${queueName()}`;
    const dist = `t-${queueName()}`;
    const hdfs = (t: string): string => `/inferq-test/tables/${t}`;
    await singleProcess(single, specText(single, { properties: 50, chunkRows: 100, parquet: `webhdfs://${host}${hdfs(single)}` }), ['--to', 'both']);
    const f = fleet(['--allow-outputs', `webhdfs://${host}/inferq-test/tables`]);
    try {
      await f.start(3);
      const path = await writeSpec(dist, specText(dist, { properties: 50, chunkRows: 100, parquet: `webhdfs://${host}${hdfs(dist)}` }));
      const r = await launch(f, path, ['--to', 'both', '--wait', '--timeout-ms', '150000']);
      expect(r.code, r.stderr).toBe(0);
      const m = /table \S+ run (\S+): 20 chunks, 0 done; 20 tasks enqueued/.exec(r.stdout);
      expect(m, r.stdout).not.toBeNull();
      const runId = m![1]!;
      expect(r.stdout).toContain(`run ${runId} (precompute, table "${dist}", 20 tasks on queue ${f.queue}): complete, 20/20 chunks (100 %), 2,000/2,000 rows`);
      expectSameTable(await readTable(dist), await readTable(single), 2000);
      const keys = tableKeys('inferq', dist);
      expect(parseTablePointer(await redis.get(keys.current))!.runId).toBe(runId);
      expect(await redis.exists(keys.lock, keys.running, keys.done(runId))).toBe(0); // lock released, checkpoint cleared
      const status = await runCli(['precompute', 'status', runId, '--redis', url, '--prefix', f.prefix, '--json']);
      expect(status.code, status.stderr).toBe(0);
      expect(JSON.parse(status.stdout)).toMatchObject({ runId, kind: 'precompute', state: 'complete', units: 20, unitsDone: 20, totalRows: 2000, rowsDone: 2000 });

      // Parquet: one part per chunk and _SUCCESS; the rows equal the single-process run's.
      const fs = new WebHdfs({ url: webhdfs });
      const singleRun = parseTablePointer(await redis.get(tableKeys('inferq', single).current))!.runId;
      const local: string[] = [];
      for (const [t, run] of [[single, singleRun], [dist, runId]] as const) {
        const files = (await fs.listStatus(`${hdfs(t)}/${run}`)).map((s) => s.pathSuffix).filter((n) => !n.startsWith('_temporary')).sort();
        expect(files).toEqual(['_SUCCESS', ...Array.from({ length: 20 }, (_, i) => `part-${String(i).padStart(5, '0')}.parquet`)]);
        const to = await tempDir();
        for (const name of files.filter((n) => n.endsWith('.parquet'))) await writeFile(join(to, name), await fs.open(`${hdfs(t)}/${run}/${name}`));
        local.push(to);
      }
      const out = JSON.parse(
        await runPython(
          [
            'import json, sys, pyarrow.dataset as ds',
            "a, b = [sorted(ds.dataset(d, format='parquet').to_table().to_pylist(), key=lambda r: r['key']) for d in sys.argv[1:3]]",
            "same = [x['key'] == y['key'] and x['country'] == y['country'] and x['nights'] == y['nights'] and x['property'] == y['property'] for x, y in zip(a, b)]",
            "diff = max(abs(u - v) for x, y in zip(a, b) for u, v in zip(x['score'], y['score']))",
            "print(json.dumps({'a': len(a), 'b': len(b), 'keys': len({r['key'] for r in b}), 'same': all(same), 'diff': diff}))",
          ].join('\n'),
          local,
        ),
      ) as { a: number; b: number; keys: number; same: boolean; diff: number };
      expect(out).toMatchObject({ a: 2000, b: 2000, keys: 2000, same: true });
      expect(out.diff).toBeLessThan(1e-5);
    } finally {
      await f.stop();
    }
  }, 240_000);

  it('a worker killed with SIGKILL in the middle of a task changes nothing: its task is redone by another and the table equals one process’s', async () => {
    const dist = `t-${queueName()}`;
    const want = await reference(1000, 1000);
    const f = fleet();
    try {
      await f.start(3);
      const r0 = launch(f, await writeSpec(dist, specText(dist, { properties: 1000, chunkRows: 1000 })), ['--chunks-per-task', '2', '--wait', '--timeout-ms', '150000']);
      const keys = tableKeys('inferq', dist);
      // A task of the victim is in progress: it has taken a job, and the run is part-way.
      const queue = new Queue(f.queue, { connection: redis, prefix: f.prefix });
      const victim = f.workers[0]!;
      let runId = '';
      try {
        await waitFor(
          async () => {
            runId = (await redis.get(keys.running)) ?? '';
            if (runId === '' || (await redis.scard(keys.done(runId))) < 6) return false;
            const active = await queue.getActive();
            return active.some((j) => j.processedBy?.endsWith(`:${victim.child.pid}`));
          },
          'the victim working on a task, six chunks done',
          60_000,
          5,
        );
      } finally {
        await queue.close();
      }
      victim.child.kill('SIGKILL');
      expect((await victim.exited).signal).toBe('SIGKILL');
      expect(await redis.scard(keys.done(runId))).toBeLessThan(40);
      const r = await r0;
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain(`run ${runId} (precompute, table "${dist}", 20 tasks on queue ${f.queue}): complete, 40/40 chunks`);
      expectSameTable(await readTable(dist), want, 40_000);
    } finally {
      await f.stop();
    }
  }, 240_000);

  it('a second launch while the run is in progress is refused, naming the holder; a single-process run of the table too', async () => {
    const table = `t-${queueName()}`;
    const f = fleet();
    const path = await writeSpec(table, specText(table, { properties: 50, chunkRows: 100 }));
    try {
      const first = await launch(f, path); // no workers: the run waits on the queue, its lock held
      expect(first.code, first.stderr).toBe(0);
      const runId = /run (\S+):/.exec(first.stdout)![1]!;
      const second = await launch(f, path);
      expect(second.code).toBe(1);
      expect(second.stderr).toContain(`inferq: error: table "${table}": a run is already in progress (held by run:${runId}); at most one run per table at a time`);
      const single = await runCli(['precompute', '--spec', path, '--model-repo', repo, '--redis', url, '--no-progress']);
      expect(single.code).toBe(1);
      expect(single.stderr).toContain(`(held by run:${runId})`);
      // Nothing was enqueued twice: one job per task.
      const queue = new Queue(f.queue, { connection: redis, prefix: f.prefix });
      try {
        expect(await queue.getWaitingCount()).toBe(20);
      } finally {
        await queue.close();
      }
    } finally {
      await redis.del(tableKeys('inferq', table).lock);
      await f.stop();
    }
  }, 120_000);

  it('all workers killed: the relaunch (after the lock expired) resumes the same run, enqueues nothing twice, and new workers complete it', async () => {
    const dist = `t-${queueName()}`;
    const want = await reference(1000, 1000);
    const f = fleet();
    const path = await writeSpec(dist, specText(dist, { properties: 1000, chunkRows: 1000 }));
    const keys = tableKeys('inferq', dist);
    try {
      await f.start(3);
      const first = await launch(f, path, ['--chunks-per-task', '2', '--lock-ttl-ms', '2000']);
      expect(first.code, first.stderr).toBe(0);
      const runId = /run (\S+):/.exec(first.stdout)![1]!;
      await waitFor(async () => (await redis.scard(keys.done(runId))) >= 8, 'eight chunks done', 60_000, 5);
      for (const w of f.workers) w.child.kill('SIGKILL');
      await Promise.all(f.workers.map((w) => w.exited));
      const doneAtKill = await redis.scard(keys.done(runId));
      expect(doneAtKill).toBeLessThan(40);
      expect(await redis.get(keys.current)).toBeNull(); // the partial run was never visible
      await waitFor(async () => (await redis.exists(keys.lock)) === 0, 'the dead run’s lock to expire', 10_000, 100);
      // Another task layout would not match the jobs still queued under the same ids: refused, the run left resumable.
      const other = await launch(f, path, ['--chunks-per-task', '3', '--lock-ttl-ms', '2000']);
      expect(other.code).toBe(1);
      expect(other.stderr).toContain(`run ${runId} was launched as 20 tasks, this launch makes 14: relaunch with the same --chunks-per-task to resume it`);
      expect(await redis.exists(keys.lock)).toBe(0);
      const again = await launch(f, path, ['--chunks-per-task', '2', '--lock-ttl-ms', '2000']);
      expect(again.code, again.stderr).toBe(0);
      const m = new RegExp(`run ${runId} \\(resumed\\): 40 chunks, (\\d+) done; 0 tasks enqueued on ${f.queue} \\(20 in all, (\\d+) already queued\\)`).exec(again.stdout);
      expect(m, again.stdout).not.toBeNull();
      expect(Number(m![1])).toBeGreaterThanOrEqual(doneAtKill);
      await f.start(3);
      const status = await runCli(['precompute', 'status', runId, '--redis', url, '--prefix', f.prefix]);
      expect(status.stdout).toMatch(new RegExp(`^run ${runId} \\(precompute, table "${dist}", 20 tasks on queue ${f.queue}\\): (running|complete), \\d+/40 chunks`));
      await waitFor(async () => parseTablePointer(await redis.get(keys.current))?.runId === runId, 'the resumed run published', 120_000, 100);
      expectSameTable(await readTable(dist), want, 40_000);
    } finally {
      await f.stop();
    }
  }, 240_000);

  it('a task the workers may not run fails the run with its code and reason (unretried); a forged task is refused; the workers keep serving', async () => {
    const f = fleet(); // no --allow-outputs: these workers write no Parquet
    try {
      await f.start(1);
      const bad = `t-${queueName()}`;
      const out = join(dir, 'tables');
      const r = await launch(f, await writeSpec(bad, specText(bad, { properties: 50, chunkRows: 1000, parquet: out })), ['--to', 'both', '--wait', '--timeout-ms', '60000']);
      expect(r.code).toBe(1);
      const runId = /run (\S+):/.exec(r.stdout)![1]!;
      expect(r.stderr.trim()).toBe(
        `inferq: error: run ${runId} failed: CONFIG: task ${runId}.0: parquet.path "${out}" is not allowed: this worker writes no Parquet (start it with --allow-outputs <folder>) (fix it, then launch again to resume)`,
      );
      const queue = new Queue(f.queue, { connection: redis, prefix: f.prefix });
      try {
        const failed = await queue.getJob(`${runId}.0`);
        expect(failed?.attemptsMade).toBe(1); // not retried
        expect(failed?.failedReason).toMatch(/^CONFIG: parquet\.path /);
        // A forged job: its id is not the task its data names.
        await queue.add('precompute', { v: 1, kind: 'precompute', run: runId, index: 0 }, { jobId: 'forged-1' });
        await waitFor(async () => (await queue.getJobState('forged-1')) === 'failed', 'the forged job failed', 30_000, 50);
        expect((await queue.getJob('forged-1'))?.failedReason).toBe(`ID_MISMATCH: task forged-1: its data names task ${runId}.0`);
      } finally {
        await queue.close();
      }
      const good = `t-${queueName()}`;
      const ok = await launch(f, await writeSpec(good, specText(good, { properties: 50, chunkRows: 1000 })), ['--wait', '--timeout-ms', '60000']);
      expect(ok.code, ok.stderr).toBe(0);
      expect((await readTable(good)).size).toBe(2000);
    } finally {
      await f.stop();
    }
  }, 180_000);

  it('--shard i/N: three shard processes (an Indexed Job) fill the same table as one process; the last publishes', async () => {
    const single = `t-${queueName()}`;
    const dist = `t-${queueName()}`;
    await singleProcess(single, specText(single, { properties: 500, chunkRows: 500 }));
    const path = await writeSpec(dist, specText(dist, { properties: 500, chunkRows: 500 }));
    const prefix = queueName('p');
    const shards = [0, 1, 2].map((i) => {
      const child = spawn(process.execPath, cliArgv(['precompute', '--spec', path, '--shard', `${i}/3`, '--model-repo', repo, '--redis', url, '--prefix', prefix, '--no-progress']), { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      return new Promise<{ code: number | null; out: string }>((resolve) => child.once('close', (code) => resolve({ code, out })));
    });
    const results = await Promise.all(shards);
    for (const r of results) expect(r.code, r.out).toBe(0);
    const runIds = new Set(results.map((r) => /run (\S+) shard/.exec(r.out)?.[1]));
    expect(runIds.size).toBe(1); // one run, joined by every shard
    expect(results.filter((r) => r.out.includes('every chunk done: published')).length).toBe(1);
    expect(results.map((r) => /chunks \[(\d+), (\d+)\)/.exec(r.out)!.slice(1).join('-')).sort()).toEqual(['0-14', '14-28', '28-40']);
    expectSameTable(await readTable(dist), await readTable(single), 20_000);
    const runId = [...runIds][0]!;
    const status = await runCli(['precompute', 'status', runId, '--redis', url, '--prefix', prefix, '--json']);
    expect(JSON.parse(status.stdout)).toMatchObject({ runId, mode: 'shard', tasks: 3, state: 'complete', unitsDone: 40 });
  }, 180_000);
});
