/**
 * `inferq precompute`: a whole feature space into a lookup table (Redis and/or Parquet), in this
 * process, spread over the precompute workers (`--distributed`), or as one shard of an Indexed
 * Job (`--shard i/N`); `inferq precompute status RUN` follows a distributed run.
 */
import { Option } from 'commander';
import type { Command } from 'commander';
import { ConfigError, DEFAULT_PREFIX, InferqError } from '@inferq/shared';
import { createLogger } from '../../logging.js';
import type { Logger } from '../../logging.js';
import { loadModel } from '../../models/loaded-model.js';
import { ModelRepository } from '../../models/repository.js';
import { predictUnitsDoneIn } from '../../offline/predict-run.js';
import { OFFLINE_QUEUE } from '../../offline/record.js';
import { formatStatus, runStatus, waitForRun } from '../../offline/status.js';
import type { RunStatus } from '../../offline/status.js';
import { computeRange, precomputeUnitsDone, prepareRun } from '../../precompute/distributed.js';
import { launchDistributedPrecompute, runShard } from '../../precompute/launch.js';
import { precompute } from '../../precompute/precompute.js';
import type { PrecomputeTarget } from '../../precompute/precompute.js';
import { checkSpecFiles, loadSpec } from '../../precompute/spec.js';
import { connectRedis } from '../../precompute/table-run.js';
import { parseDevice } from '../../runners/device.js';
import { throughputThreads } from '../../runners/onnx/runner.js';
import { defaultRedisUrl, modelRepoDir, positiveInt } from '../flags.js';
import { ProgressBar, fmt } from '../progress.js';
import { addConnectionOptions, redisClientOptions } from '../connections.js';
import type { ConnectionFlags } from '../connections.js';

interface PrecomputeFlags extends ConnectionFlags {
  spec?: string;
  to: PrecomputeTarget;
  redis: string;
  modelRepo?: string;
  device: string;
  threads?: number;
  instances?: number;
  lockTtlMs?: number;
  progress: boolean;
  distributed: boolean;
  shard?: { shard: number; shards: number };
  queue?: string;
  prefix: string;
  specsRoot?: string;
  chunksPerTask?: number;
  wait: boolean;
  timeoutMs?: number;
}

const logger = (): Logger => createLogger({ level: process.env['INFERQ_LOG_LEVEL'] ?? 'warn', base: { cmd: 'precompute' } });

/** Aborts on SIGINT / SIGTERM while `body` runs (entry-file code). */
async function interruptible<T>(body: (signal: AbortSignal) => Promise<T>, what: string): Promise<T> {
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => abort.abort(new InferqError(`interrupted by ${signal}; ${what}`));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await body(abort.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

async function precomputeCommand(flags: PrecomputeFlags): Promise<void> {
  if (flags.spec === undefined) throw new ConfigError("precompute: required option '--spec <spec.yaml>' not specified");
  if (flags.modelRepo === undefined) throw new ConfigError("precompute: required option '--model-repo <dir>' not specified");
  if (flags.distributed && flags.shard !== undefined) throw new ConfigError('precompute: --distributed and --shard are two ways of spreading a run: give one');
  if (flags.wait && !flags.distributed) throw new ConfigError('precompute: --wait follows a --distributed run');
  if (flags.distributed) return distributed(flags as PrecomputeFlags & { spec: string; modelRepo: string });
  if (flags.shard !== undefined) return shard(flags as PrecomputeFlags & { spec: string; modelRepo: string; shard: { shard: number; shards: number } });
  const log = logger();
  const spec = await loadSpec(flags.spec);
  // Files the spec names (and the featurizer's place beside it) are checked before the model loads.
  await checkSpecFiles(spec);
  const device = parseDevice(flags.device);
  const model = await loadModel(new ModelRepository(await modelRepoDir(flags.modelRepo)), spec.spec.model, spec.spec.version, { device, logger: log, ...throughputThreads(flags, device) });
  const bar = new ProgressBar();
  try {
    const s = await interruptible(
      (signal) =>
        precompute({
          spec,
          model,
          to: flags.to,
          redis: flags.redis,
          redisOptions: redisClientOptions(flags, flags.redis),
          logger: log,
          signal,
          ...(flags.lockTtlMs === undefined ? {} : { lockTtlMs: flags.lockTtlMs }),
          ...(flags.progress ? { onProgress: (p: { rows: number; totalRows: number; startRows: number }) => bar.update(p.rows, p.totalRows, p.startRows) } : {}),
        }),
      'the run is resumable',
    );
    bar.done();
    process.stdout.write(
      `inferq precompute: table ${s.table} run ${s.runId}: ${fmt(s.rows)} rows in ${s.seconds.toFixed(2)} s = ${fmt(s.rowsPerSecond)} rows/s` +
        `${s.resumedChunks > 0 ? ` (resumed: ${s.resumedChunks} of ${s.chunks} chunks were already done)` : ''}; ` +
        `${fmt(s.totalRows)} rows in the table` +
        `${s.buckets === undefined ? '' : `; redis: current → ${s.runId} (${fmt(s.buckets)} buckets)`}${s.parquet === undefined ? '' : `; parquet: ${s.parquet}`}\n`,
    );
  } finally {
    bar.done();
    await model.close();
  }
}

async function distributed(flags: PrecomputeFlags & { spec: string; modelRepo: string }): Promise<void> {
  const redisOptions = redisClientOptions(flags, flags.redis);
  const run = await launchDistributedPrecompute({
    redis: flags.redis,
    redisOptions,
    prefix: flags.prefix,
    queue: flags.queue,
    specPath: flags.spec,
    specsRoot: flags.specsRoot,
    to: flags.to,
    modelRepo: await modelRepoDir(flags.modelRepo),
    chunksPerTask: flags.chunksPerTask,
    lockTtlMs: flags.lockTtlMs,
    logger: logger(),
  });
  const what = run.finalized
    ? `every chunk was done: published now`
    : `${fmt(run.enqueued!.added + run.enqueued!.retried)} tasks enqueued on ${flags.queue ?? OFFLINE_QUEUE} (${fmt(run.tasks)} in all, ${fmt(run.enqueued!.present)} already queued)`;
  process.stdout.write(`inferq precompute: table ${run.table} run ${run.runId}${run.resumed ? ' (resumed)' : ''}: ${fmt(run.chunks)} chunks, ${fmt(run.chunksDone)} done; ${what}\n`);
  if (!flags.wait || run.finalized) return;
  const redis = await connectRedis(flags.redis, redisOptions);
  const bar = new ProgressBar();
  let last: RunStatus;
  try {
    last = await interruptible(
      (signal) =>
        waitForRun(redis, flags.prefix, run.runId, precomputeUnitsDone, {
          timeoutMs: flags.timeoutMs,
          signal,
          onProgress: (s) => flags.progress && bar.update(s.rowsDone, s.totalRows, Math.round((run.chunksDone * s.totalRows) / Math.max(1, s.units))),
        }),
      `run ${run.runId} goes on (inferq precompute status ${run.runId})`,
    );
  } finally {
    bar.done();
    redis.disconnect();
  }
  if (last.state === 'failed') throw new InferqError(`run ${run.runId} failed: ${last.error ?? 'no reason recorded'} (fix it, then launch again to resume)`);
  process.stdout.write(`inferq precompute: ${formatStatus(last)}\n`);
}

async function shard(flags: PrecomputeFlags & { spec: string; modelRepo: string; shard: { shard: number; shards: number } }): Promise<void> {
  const log = logger();
  const device = parseDevice(flags.device);
  const repoDir = await modelRepoDir(flags.modelRepo);
  const repo = new ModelRepository(repoDir);
  const started = performance.now();
  const r = await interruptible(
    (signal) =>
      runShard({ redis: flags.redis, redisOptions: redisClientOptions(flags, flags.redis), prefix: flags.prefix, specPath: flags.spec, to: flags.to, modelRepo: repoDir, lockTtlMs: flags.lockTtlMs, logger: log, ...flags.shard }, async (run) => {
        const model = await loadModel(repo, run.spec.spec.model, run.version, { device, logger: log, ...throughputThreads(flags, device) });
        const renew = setInterval(() => void run.renew().catch((err: unknown) => log.warn({ err }, 'could not renew the run lock')), (flags.lockTtlMs ?? 60_000) / 3);
        try {
          const p = await prepareRun(run.runId, run.spec, flags.to, model, run.redis, run.expect);
          try {
            return await computeRange(p, run.range, run.redis, signal);
          } finally {
            await p.close();
          }
        } finally {
          clearInterval(renew);
          await model.close();
        }
      }),
    'the run is resumable (start the shard again)',
  );
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(
    `inferq precompute: table ${r.table} run ${r.runId} shard ${flags.shard.shard}/${flags.shard.shards}: chunks [${r.range[0]}, ${r.range[1]}): ${fmt(r.rows)} rows in ${seconds.toFixed(2)} s; ` +
      `${fmt(r.chunksDone)} of ${fmt(r.chunks)} chunks done${r.finalized ? `; every chunk done: published (current → ${r.runId})` : ''}\n`,
  );
}

interface StatusFlags extends ConnectionFlags {
  redis: string;
  prefix: string;
  json: boolean;
}

async function statusCommand(runId: string, flags: StatusFlags): Promise<void> {
  const redis = await connectRedis(flags.redis, redisClientOptions(flags, flags.redis));
  try {
    // Any offline run: a distributed predict's status reads the same way.
    const s = await runStatus(redis, flags.prefix, runId, (record, r) => (record.kind === 'predict' ? predictUnitsDoneIn(flags.prefix)(record, r) : precomputeUnitsDone(record, r)));
    process.stdout.write(flags.json ? `${JSON.stringify(s)}\n` : `${formatStatus(s)}\n`);
  } finally {
    redis.disconnect();
  }
}

function parseShard(value: string): { shard: number; shards: number } {
  const m = /^(\d+)\/(\d+)$/.exec(value);
  if (m === null || Number(m[1]) >= Number(m[2])) throw new ConfigError(`--shard "${value}": expected i/N with 0 ≤ i < N (e.g. $JOB_COMPLETION_INDEX/8)`);
  return { shard: Number(m[1]), shards: Number(m[2]) };
}

/** --log-level after `precompute` (main.ts adds it to leaf commands only; this one has `status`). */
const logLevel = (): Option => new Option('--log-level <level>', 'log level on stderr (default warn)').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).env('INFERQ_LOG_LEVEL');

export function registerPrecompute(program: Command): void {
  const command = program
    .command('precompute')
    .description('Predict a whole feature space offline into a lookup table (Redis and/or Parquet); resumable. In this process, spread over the precompute workers (--distributed), or as one shard of an Indexed Job (--shard).')
    .option('--spec <spec.yaml>', 'the table, model, feature space, key template and encoding (required)')
    .addOption(new Option('--to <target>', 'where the table goes').choices(['redis', 'parquet', 'both']).default('redis'))
    .option('--redis <url>', 'Redis URL', defaultRedisUrl())
    .option('--model-repo <dir>', 'model repository (a local folder, or webhdfs:// / hdfs://) (required; --distributed: the version is pinned from it)')
    .option('--device <device>', 'cpu or cuda:N', 'cpu')
    .option('--threads <n>', 'ONNX Runtime intra-op threads per instance (default 1, with one instance per CPU)', positiveInt)
    .option('--instances <n>', 'sessions of the model, each in its own thread, batches spread over them (default: one per CPU)', positiveInt)
    .option('--lock-ttl-ms <n>', 'lifetime of the table lock (renewed while the run lives); a crashed run blocks the next this long (default 30000; distributed runs 60000)', positiveInt)
    .option('--no-progress', 'no progress bar')
    .option('--distributed', 'enqueue the run as tasks for `inferq worker --role precompute` processes and return (see --wait)', false)
    .option('--queue <name>', `--distributed: the offline queue, the workers' --queue (default ${OFFLINE_QUEUE})`)
    .option('--prefix <prefix>', '--distributed, --shard: key prefix of the offline queue and run records', DEFAULT_PREFIX)
    .option('--specs-root <dir>', "--distributed: the folder the workers' --allow-specs is a copy of (default: the spec's own folder)")
    .option('--chunks-per-task <n>', '--distributed: chunks per queue task (default 1)', positiveInt)
    .option('--wait', '--distributed: follow the run until it is complete; exit 1 with one line if it fails or --timeout-ms passes', false)
    .option('--timeout-ms <n>', '--wait: give up waiting after this long (the run goes on)', positiveInt)
    .option('--shard <i/N>', 'compute shard i of N (0-based; an Indexed Job\'s $JOB_COMPLETION_INDEX/N) of the run, no queue; the last shard to finish publishes', parseShard)
    .addOption(logLevel())
    .action(precomputeCommand);
  addConnectionOptions(command, ['redis', 'hdfs']);
  const status = command
    .command('status <run>')
    .description('progress of a distributed run (precompute, or a distributed predict): chunks or tasks done, rows/s, ETA, state')
    .option('--redis <url>', 'Redis URL', defaultRedisUrl())
    .option('--prefix <prefix>', 'key prefix of the run records', DEFAULT_PREFIX)
    .option('--json', 'one JSON object', false)
    .action(statusCommand);
  addConnectionOptions(status, ['redis']);
}
