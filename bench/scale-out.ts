/**
 * Scale-out of a distributed precompute (`inferq precompute --distributed`) over
 * `inferq worker --role precompute` processes, against a Redis of its own:
 *
 *  1. 1 vs 2 worker processes on one run (medium MLP, chunks of 8,192 rows; each worker one
 *     single-threaded model instance, so a worker is about one core): rows/s and the
 *     efficiency rate₂ / (2 · rate₁), medians of rounds that alternate the two; and the same
 *     run in one process without a queue.
 *  2. The coordination cost per task: a tiny model (4→1) on one-chunk tasks of 16 rows, one
 *     worker: seconds per task, minus the same chunks' time in a single-process run (the
 *     compute and the writes), is what taking, admitting, checkpointing and acknowledging a
 *     task adds.
 *
 * Workers are started (and ready), and a small warm-up run has them load the model, before each
 * timed run; a run's time is from its launch until its record says complete (the table published).
 *
 *   node --conditions=inferq-source --import tsx bench/scale-out.ts      (BENCH_QUICK=1: smaller)
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { randomMlp } from '../examples/build/onnx-builder.js';
import { writeModel } from '../test/helpers/models.js';
import { startRedis } from '../test/infra/redis.js';
import type { RedisServer } from '../test/infra/redis.js';
import { silentLogger } from '../workers/src/logging.js';
import { loadModel } from '../workers/src/models/loaded-model.js';
import { ModelRepository } from '../workers/src/models/repository.js';
import { waitForRun } from '../workers/src/offline/status.js';
import { launchDistributedPrecompute } from '../workers/src/precompute/launch.js';
import { precomputeUnitsDone } from '../workers/src/precompute/distributed.js';
import { precompute } from '../workers/src/precompute/precompute.js';
import { loadSpec } from '../workers/src/precompute/spec.js';
import { connectRedis } from '../workers/src/precompute/table-run.js';
import { QUICK, fmt, table } from './common.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const CLI = fileURLToPath(new URL('../workers/src/cli/main.ts', import.meta.url));
const DAYS = QUICK ? 64 : 512;
const TINY_TASKS = QUICK ? 200 : 1000;
const ROUNDS = QUICK ? 1 : 3;

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

interface Worker {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
}

function startWorker(args: readonly string[]): Promise<Worker> {
  const child = spawn(process.execPath, ['--conditions=inferq-source', '--import', 'tsx', CLI, 'worker', '--role', 'precompute', '--http-port', '0', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, INFERQ_LOG_LEVEL: 'warn' } });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('inferq worker: serving')) resolve({ child, exited });
    });
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => reject(new Error(`worker exited (${code}) before it served:\n${out}`)));
  });
}

async function specFile(dir: string, name: string, lines: string[]): Promise<string> {
  const path = join(dir, `${name}.yaml`);
  await writeFile(path, lines.join('\n'));
  return path;
}

/**
 * Seconds of one distributed run over `workers` fresh worker processes, after a warm-up run of
 * the same model (`warmPath`) that has every worker load it (workers keep it for the next run).
 */
async function distributedRun(redis: RedisServer, repo: string, warmPath: string, specPath: string, workers: number, prefix: string): Promise<{ seconds: number; rows: number; tasks: number }> {
  const args = ['--redis', redis.url, '--prefix', prefix, '--model-repo', repo, '--instances', '1', '--threads', '1'];
  const started = await Promise.all(Array.from({ length: workers }, () => startWorker(args)));
  const client = await connectRedis(redis.url);
  const run = async (path: string): Promise<{ seconds: number; rows: number; tasks: number }> => {
    const t0 = performance.now();
    const r = await launchDistributedPrecompute({ redis: redis.url, prefix, specPath: path, to: 'redis', modelRepo: repo, logger: silentLogger() });
    const s = await waitForRun(client, prefix, r.runId, precomputeUnitsDone, { everyMs: 20 });
    if (s.state !== 'complete') throw new Error(`run ${r.runId}: ${s.state} ${s.error ?? ''}`);
    return { seconds: (performance.now() - t0) / 1000, rows: r.totalRows, tasks: r.tasks };
  };
  try {
    await run(warmPath);
    return await run(specPath);
  } finally {
    client.disconnect();
    for (const w of started) w.child.kill('SIGTERM');
    await Promise.all(started.map((w) => w.exited));
  }
}

export async function scaleOutBench(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'inferq-bench-scale-'));
  let redis: RedisServer | undefined;
  try {
    redis = await startRedis();
    const repo = join(dir, 'models');
    await writeModel(repo, 'medium', '1', randomMlp([256, 1024, 1024, 512, 1], 5));
    await writeModel(repo, 'tiny', '1', randomMlp([4, 1], 6));
    console.log(`\ninferq scale-out bench — distributed precompute over worker processes${QUICK ? ' (quick)' : ''}`);

    // 1. 1 vs 2 workers, medium MLP.
    const rows: (string | number)[][] = [];
    const rates: number[] = [];
    const medium = (table: string, days: number, chunkRows: number): string[] => [`table: ${table}`, 'model: medium', 'space:', '  axes:', '    - { name: item, range: { from: 1, to: 255 } }', `    - { name: day, range: { from: 1, to: ${days} } }`, 'key: "{item}:{day}"', 'encode:', '  features:', '    - { axis: item, as: onehot }', '    - { axis: day, as: number }', `chunkRows: ${chunkRows}`];
    // Rounds alternate 1 and 2 workers (this machine's speed drifts); the table shows the medians.
    const seconds = new Map<number, number[]>([[1, []], [2, []]]);
    let total = 0;
    let tasks = 0;
    for (let round = 0; round < ROUNDS; round++) {
      for (const workers of [1, 2]) {
        const name = `medium-${round}-${workers}`;
        const warm = await specFile(dir, `${name}-warm`, medium(`${name}-warm`, 8, 255));
        const r = await distributedRun(redis, repo, warm, await specFile(dir, name, medium(name, DAYS, 8192)), workers, `scale-${round}-${workers}`);
        seconds.get(workers)!.push(r.seconds);
        total = r.rows;
        tasks = r.tasks;
      }
    }
    for (const workers of [1, 2]) {
      const all = seconds.get(workers)!;
      const m = median(all);
      rates.push(total / m);
      rows.push([String(workers), fmt(total), tasks, `${m.toFixed(2)} (${all.map((x) => x.toFixed(1)).join(', ')})`, fmt(total / m)]);
    }
    // The same run in one process without a queue (one single-threaded instance): what a worker is measured against.
    const alone = await loadModel(new ModelRepository(repo), 'medium', '1', { logger: silentLogger(), instances: 1, intraOpThreads: 1 });
    try {
      await precompute({ spec: await loadSpec(await specFile(dir, 'medium-alone-warm', medium('medium-alone-warm', 8, 255))), model: alone, to: 'redis', redis: redis.url, logger: silentLogger() });
      const s = await precompute({ spec: await loadSpec(await specFile(dir, 'medium-alone', medium('medium-alone', DAYS, 8192))), model: alone, to: 'redis', redis: redis.url, logger: silentLogger() });
      rows.push(['1 process, no queue', fmt(s.totalRows), '-', s.seconds.toFixed(2), fmt(s.rowsPerSecond)]);
    } finally {
      await alone.close();
    }
    table(`medium MLP, one single-threaded model instance per worker, tasks of one chunk (8,192 rows); median of ${ROUNDS} rounds`, ['workers', 'rows', 'tasks', 's (rounds)', 'rows/s'], rows);
    console.log(`  efficiency rate₂ / (2 · rate₁) = ${(rates[1]! / (2 * rates[0]!)).toFixed(2)}  (speed-up ${(rates[1]! / rates[0]!).toFixed(2)}×)`);

    // 2. Coordination cost per task: tiny model, one-chunk tasks of 16 rows, one worker.
    const tinyLines = (table: string): string[] => [`table: ${table}`, 'model: tiny', 'space:', '  axes:', '    - { name: a, range: { from: 1, to: 16 } }', `    - { name: b, range: { from: 1, to: ${TINY_TASKS} } }`, 'key: "{a}:{b}"', 'encode:', '  features:', '    - { axis: a, as: number }', '    - { axis: b, as: number }', '    - { axis: a, as: number }', '    - { axis: b, as: number }', 'chunkRows: 16'];
    const single = await loadSpec(await specFile(dir, 'tiny-single', tinyLines('tiny-single')));
    const model = await loadModel(new ModelRepository(repo), 'tiny', '1', { logger: silentLogger(), instances: 1, intraOpThreads: 1 });
    let perChunk: number;
    try {
      const s = await precompute({ spec: single, model, to: 'redis', redis: redis.url, logger: silentLogger(), window: 1 });
      perChunk = s.seconds / s.chunks;
    } finally {
      await model.close();
    }
    const d = await distributedRun(redis, repo, await specFile(dir, 'tiny-warm', tinyLines('tiny-warm').map((l) => l.replace(`to: ${TINY_TASKS}`, 'to: 4'))), await specFile(dir, 'tiny-dist', tinyLines('tiny-dist')), 1, 'tiny');
    const perTask = d.seconds / d.tasks;
    table(
      `coordination cost per task: tiny model, ${TINY_TASKS} tasks of one 16-row chunk, one worker`,
      ['distributed: ms per task', 'single process: ms per chunk', 'overhead ms per task'],
      [[(perTask * 1000).toFixed(2), (perChunk * 1000).toFixed(2), ((perTask - perChunk) * 1000).toFixed(2)]],
    );
  } finally {
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await scaleOutBench();
