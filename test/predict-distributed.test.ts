/**
 * Distributed offline predict, worker side, against the real Redis with 3 worker processes
 * (`inferq worker --role precompute`): a run launched with launchDistributedPredict writes the
 * same parts as the tasks run one after another in one process (every row once, values equal)
 * and _SUCCESS; a worker killed with SIGKILL changes nothing; a second launch on the same output
 * is refused; a run whose workers were all killed resumes with new workers.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../workers/src/logging.js';
import { loadModel } from '../workers/src/models/loaded-model.js';
import { ModelRepository } from '../workers/src/models/repository.js';
import { launchDistributedPredict } from '../workers/src/offline/predict-launch.js';
import type { LaunchPredictOptions, LaunchedPredict } from '../workers/src/offline/predict-launch.js';
import { planPredict } from '../workers/src/predict/plan.js';
import type { PredictPlan } from '../workers/src/predict/plan.js';
import { runPredictTask } from '../workers/src/predict/task.js';
import { runCli } from './helpers/cli.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { dropQueue, queueName, startWorker, waitFor } from './helpers/redis.js';
import type { WorkerProcess } from './helpers/redis.js';
import { runPython } from './infra/python.js';
import { redisServer } from './infra/servers.js';

const url = await redisServer();
let dir: string;
let repo: string;
let input: string;
let plan: PredictPlan;
let reference: string;
let redis: Redis;

beforeAll(async () => {
  dir = await tempDir('inferq-predict-dist-');
  repo = join(dir, 'models');
  await writeModel(repo, 'mlp', '1', smallMlp([4, 8, 2], 5));
  input = join(dir, 'in');
  // Three files, row groups of 500 / 1000 rows: 12 tasks of about 1000 rows.
  await runPython(
    [
      'import os, sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq',
      'd = sys.argv[1]; os.makedirs(d)',
      'rng = np.random.default_rng(3); start = 0',
      "for name, n, rg in [('a', 6000, 1000), ('b', 3000, 1000), ('c', 2500, 500)]:",
      '    x = rng.standard_normal((n, 4)).astype(np.float32)',
      "    t = pa.table({'id': pa.array(np.arange(start, start + n), pa.int64()), 'features': pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4)})",
      "    pq.write_table(t, os.path.join(d, name + '.parquet'), row_group_size=rg); start += n",
    ].join('\n'),
    [input],
  );
  plan = await planPredict(input, { targetRows: 1000 });
  expect(plan.tasks.length).toBe(12);
  // The single-process result: every task, one after another, in this process.
  reference = join(dir, 'reference');
  const model = await loadModel(new ModelRepository(repo), 'mlp', '1', { logger: silentLogger() });
  try {
    for (const task of plan.tasks) await runPredictTask(model, task, { outputDir: reference });
  } finally {
    await model.close();
  }
  redis = new Redis(url);
}, 180_000);

afterAll(() => {
  redis?.disconnect();
});

/** The output equals the reference: the same part files, each with the same rows (ids equal, scores to float rounding), every input row once. */
async function expectSameOutput(output: string): Promise<void> {
  const parts = (await readdir(output)).filter((n) => /^part-\d{5}\.parquet$/.test(n)).sort();
  expect(parts).toEqual((await readdir(reference)).filter((n) => /^part-\d{5}\.parquet$/.test(n)).sort());
  expect(parts).toHaveLength(12);
  expect(await readdir(output)).toContain('_SUCCESS');
  const out = JSON.parse(
    await runPython(
      [
        'import json, sys, os, numpy as np, pyarrow.parquet as pq',
        'a, b = sys.argv[1:3]; same = True; diff = 0.0; ids = []',
        "for f in sorted(x for x in os.listdir(b) if x.startswith('part-')):",
        '    x, y = pq.read_table(os.path.join(a, f)), pq.read_table(os.path.join(b, f))',
        "    same = same and x.schema.equals(y.schema) and x.column('id').equals(y.column('id'))",
        "    diff = max(diff, float(np.max(np.abs(np.stack(x.column('score').to_numpy(zero_copy_only=False)) - np.stack(y.column('score').to_numpy(zero_copy_only=False))))))",
        "    ids += y.column('id').to_pylist()",
        "print(json.dumps({'same': same, 'diff': diff, 'rows': len(ids), 'distinct': len(set(ids))}))",
      ].join('\n'),
      [reference, output],
    ),
  ) as { same: boolean; diff: number; rows: number; distinct: number };
  expect(out).toMatchObject({ same: true, rows: 11_500, distinct: 11_500 });
  expect(out.diff).toBeLessThan(1e-6);
}

interface Fleet {
  readonly prefix: string;
  readonly queue: string;
  workers: WorkerProcess[];
  start(n: number): Promise<void>;
  stop(): Promise<void>;
}

function fleet(): Fleet {
  const prefix = queueName('p');
  const queue = queueName('offline');
  const f: Fleet = {
    prefix,
    queue,
    workers: [],
    async start(n) {
      const started = Array.from({ length: n }, () =>
        startWorker(['--role', 'precompute', '--redis', url, '--prefix', prefix, '--queue', queue, '--model-repo', repo, '--allow-inputs', input, '--allow-outputs', join(dir, 'out'), '--lock-duration-ms', '3000']),
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

const options = (f: Fleet, output: string, extra: Partial<LaunchPredictOptions> = {}): LaunchPredictOptions => ({
  redis: url,
  prefix: f.prefix,
  queue: f.queue,
  model: 'mlp',
  modelRepo: repo,
  input,
  output,
  plan,
  wait: false,
  logger: silentLogger(),
  ...extra,
});

describe('distributed predict (worker side)', () => {
  it('3 workers write the parts one process writes, and _SUCCESS; a second launch on the output while it runs is refused', async () => {
    const f = fleet();
    const output = join(dir, 'out', queueName('o'));
    try {
      const first = await launchDistributedPredict(options(f, output));
      expect(first).toMatchObject({ resumed: false, tasks: 12, tasksDone: 0, enqueued: { added: 12, retried: 0, present: 0 }, finalized: false });
      // No worker yet: the run waits, its output lock held.
      await expect(launchDistributedPredict(options(f, output))).rejects.toThrow(`output "${output}": a run is already in progress (held by run:${first.runId}); at most one run per output folder at a time`);
      await f.start(3);
      const second = await launchDistributedPredict(options(f, join(dir, 'out', queueName('o')), { wait: true, timeoutMs: 120_000 }));
      expect(second.status).toMatchObject({ state: 'complete', units: 12, unitsDone: 12, totalRows: 11_500, rowsDone: 11_500 });
      await waitFor(async () => (await redis.hget(`${f.prefix}:offline:run:${first.runId}`, 'state')) === 'complete', 'the first run complete', 120_000, 100);
      await expectSameOutput(output);
      const status = await runCli(['precompute', 'status', first.runId, '--redis', url, '--prefix', f.prefix, '--json']);
      expect(status.code, status.stderr).toBe(0);
      expect(JSON.parse(status.stdout)).toMatchObject({ runId: first.runId, kind: 'predict', state: 'complete', units: 12, unitsDone: 12, holds: `output "${output}"` });
    } finally {
      await f.stop();
    }
  }, 240_000);

  it('a worker killed with SIGKILL changes nothing; then, with every worker killed, a relaunch resumes the run and new workers finish it', async () => {
    const f = fleet();
    const output = join(dir, 'out', queueName('o'));
    try {
      await f.start(3);
      const first = await launchDistributedPredict(options(f, output, { lockTtlMs: 2000 }));
      const queue = new Queue(f.queue, { connection: redis, prefix: f.prefix });
      const victim = f.workers[0]!;
      try {
        await waitFor(async () => (await queue.getActive()).some((j) => j.processedBy?.endsWith(`:${victim.child.pid}`)), 'the victim working on a task', 60_000, 2);
      } finally {
        await queue.close();
      }
      victim.child.kill('SIGKILL');
      await victim.exited;
      await waitFor(async () => (await redis.scard(`${f.prefix}:offline:run:${first.runId}:done`)) >= 3, 'three tasks done', 60_000, 5);
      for (const w of f.workers) w.child.kill('SIGKILL');
      await Promise.all(f.workers.map((w) => w.exited));
      const doneAtKill = await redis.scard(`${f.prefix}:offline:run:${first.runId}:done`);
      expect(doneAtKill).toBeLessThan(12);
      expect(await readdir(output)).not.toContain('_SUCCESS');
      let again: LaunchedPredict | undefined;
      await waitFor(
        async () => {
          try {
            again = await launchDistributedPredict(options(f, output, { lockTtlMs: 2000 }));
            return true;
          } catch (err) {
            if (!/already in progress/.test((err as Error).message)) throw err;
            return false; // the killed workers' lock has not expired yet
          }
        },
        'a relaunch once the lock expired',
        15_000,
        200,
      );
      expect(again).toMatchObject({ runId: first.runId, resumed: true, tasks: 12 });
      expect(again!.tasksDone).toBeGreaterThanOrEqual(doneAtKill);
      // Tasks the dead workers held are still on the queue: nothing is enqueued twice.
      expect(again!.enqueued!.added + again!.enqueued!.present + again!.enqueued!.retried).toBe(12 - again!.tasksDone);
      await f.start(3);
      await waitFor(async () => (await redis.hget(`${f.prefix}:offline:run:${first.runId}`, 'state')) === 'complete', 'the resumed run complete', 120_000, 100);
      await expectSameOutput(output);
    } finally {
      await f.stop();
    }
  }, 240_000);
});
