#!/usr/bin/env node
/**
 * The `inferq` command. Entry file: the only place that parses argv, installs
 * signal handlers and sets the exit code.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { ConfigError, InferqError } from '@inferq/shared';
import type { NonFinitePolicy } from '@inferq/shared';
import { createLogger } from '../logging.js';
import { loadModel } from '../models/loaded-model.js';
import { ModelRepository } from '../models/repository.js';
import { ModelPool } from '../models/model-pool.js';
import { predictParquet } from '../predict/predict.js';
import { LocalStore, localCopy, parseLocation } from '../io/store.js';
import { precompute } from '../precompute/precompute.js';
import type { PrecomputeTarget } from '../precompute/precompute.js';
import { PrecomputeWorker, addSchedule, listSchedules, removeSchedule } from '../precompute/schedules.js';
import { loadSpec } from '../precompute/spec.js';
import { ParquetSink } from '../sinks/parquet-sink.js';
import { KafkaWorker } from '../transports/kafka.js';
import { RedisWorker } from '../transports/redis.js';
import { parseDevice } from '../runners/device.js';
import { throughputThreads } from '../runners/onnx.js';
import { formatDevice } from '../runners/runner.js';
import { ProgressBar, fmt } from './progress.js';

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive integer, got "${value}"`);
  return n;
}

/** A model repository on HDFS is copied to a local folder first (ONNX Runtime loads from bytes on disk). */
async function modelRepoDir(uri: string): Promise<string> {
  if (parseLocation(uri).store instanceof LocalStore) return uri;
  return localCopy(uri, await mkdtemp(join(tmpdir(), 'inferq-models-')));
}

interface PredictFlags {
  modelRepo: string;
  model: string;
  version?: string;
  input: string;
  output: string;
  device: string;
  maxBatch?: number;
  maxDelayMs?: number;
  threads?: number;
  instances?: number;
  nan: NonFinitePolicy;
  progress: boolean;
}

async function predictCommand(flags: PredictFlags): Promise<void> {
  // predict prints its own summary; its logs are warnings and errors unless INFERQ_LOG_LEVEL says otherwise.
  const logger = createLogger({ level: process.env['INFERQ_LOG_LEVEL'] ?? 'warn', base: { cmd: 'predict' } });
  const device = parseDevice(flags.device);
  const repo = new ModelRepository(await modelRepoDir(flags.modelRepo));
  const model = await loadModel(repo, flags.model, flags.version, {
    device,
    logger,
    batching: { maxBatchSize: flags.maxBatch, maxDelayMs: flags.maxDelayMs },
    ...throughputThreads(flags, device),
  });
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    logger.warn({ signal }, 'interrupted: stopping; no output will be written');
    abort.abort(new InferqError(`interrupted by ${signal}; no output written`));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const bar = new ProgressBar();
  // A folder (trailing "/") gets part-00000.parquet and a _SUCCESS marker, as Spark and Hive
  // jobs write; HDFS outputs are written to a local temporary file first, then published.
  const dirMode = flags.output.endsWith('/');
  const target = parseLocation(dirMode ? `${flags.output}part-00000.parquet` : flags.output);
  const remote = !(target.store instanceof LocalStore);
  const successPath = posix.join(posix.dirname(target.path), '_SUCCESS');
  if (dirMode) await target.store.delete(successPath);
  const staging = remote ? await mkdtemp(join(tmpdir(), 'inferq-predict-')) : undefined;
  try {
    const summary = await predictParquet(model, {
      input: flags.input,
      output: staging === undefined ? target.path : join(staging, 'part.parquet'),
      nonFinite: flags.nan,
      signal: abort.signal,
      ...(flags.progress ? { onProgress: (p: { rows: number; totalRows: number }) => bar.update(p.rows, p.totalRows) } : {}),
    });
    bar.done();
    if (staging !== undefined) await target.store.putFile(summary.output, target.path);
    if (dirMode) await target.store.putBytes(successPath, new Uint8Array(0));
    process.stdout.write(
      `inferq predict: ${fmt(summary.rows)} rows in ${summary.seconds.toFixed(2)} s = ${fmt(summary.rowsPerSecond)} rows/s; ` +
        `${fmt(summary.batches)} batches, mean batch ${summary.meanBatchSize.toFixed(1)} rows; ` +
        `model ${model.name}:${model.version} on ${formatDevice(model.runner.device)} → ${remote ? target.uri : summary.output} (${fmt(summary.bytes)} bytes)\n`,
    );
  } finally {
    bar.done();
    if (staging !== undefined) await rm(staging, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await model.close();
  }
}

interface WorkerFlags {
  role: 'serve' | 'precompute';
  transport: 'redis' | 'kafka';
  queue: string;
  topic: string;
  group: string;
  brokers: string;
  deadLetterTopic?: string;
  sessionTimeoutMs?: number;
  sink: string[];
  allowJobSinks: string[];
  sinkRollRows?: number;
  sinkRollMs?: number;
  redis: string;
  prefix?: string;
  modelRepo?: string;
  models?: string;
  device: string;
  concurrency: number;
  maxBatch?: number;
  maxDelayMs?: number;
  threads?: number;
  instances?: number;
  lockDurationMs?: number;
  shutdownTimeoutMs: number;
  nan: NonFinitePolicy;
}

async function workerCommand(flags: WorkerFlags): Promise<void> {
  const device = parseDevice(flags.device);
  const logger = createLogger({ base: { cmd: 'worker', device: formatDevice(device) } });
  if (flags.role === 'precompute') return precomputeWorker(flags, device, logger);
  if (flags.modelRepo === undefined) throw new ConfigError('worker: --model-repo is required to serve a queue');
  const allow = flags.models?.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const pool = new ModelPool(new ModelRepository(await modelRepoDir(flags.modelRepo)), {
    device,
    logger,
    allow,
    batching: { maxBatchSize: flags.maxBatch, maxDelayMs: flags.maxDelayMs },
    ...(flags.instances === undefined ? {} : { instances: flags.instances }),
    ...(flags.threads === undefined ? {} : { intraOpThreads: flags.threads }),
  });
  try {
    await pool.preload();
  } catch (err) {
    await pool.close(); // models that did load hold worker threads: release them so the process can exit
    throw err;
  }
  const openSink = (location: string): ParquetSink =>
    new ParquetSink({
      location,
      logger,
      ...(flags.sinkRollRows === undefined ? {} : { rollRows: flags.sinkRollRows }),
      ...(flags.sinkRollMs === undefined ? {} : { rollMs: flags.sinkRollMs }),
    });
  const sinks = flags.sink.map((spec) => {
    const m = /^parquet:(.+)$/.exec(spec);
    if (m === null) throw new ConfigError(`--sink "${spec}": expected parquet:<folder or URI> (a local path, file://, webhdfs:// or hdfs://)`);
    return openSink(m[1]!);
  });
  if (flags.transport === 'kafka' && flags.allowJobSinks.length > 0) {
    throw new ConfigError('--allow-job-sinks: job sinks are honoured by Redis workers only (a Kafka worker writes every result to its --sink folders)');
  }
  const worker =
    flags.transport === 'kafka'
      ? new KafkaWorker({
          brokers: flags.brokers.split(',').map((b) => b.trim()).filter((b) => b !== ''),
          topic: flags.topic,
          group: flags.group,
          ...(flags.deadLetterTopic === undefined ? {} : { deadLetterTopic: flags.deadLetterTopic }),
          ...(flags.sessionTimeoutMs === undefined ? {} : { sessionTimeoutMs: flags.sessionTimeoutMs }),
          models: pool,
          logger,
          maxInFlightMessages: flags.concurrency * 16,
          onFatal: (err) => fatal(err),
          sinks,
          nonFinite: flags.nan,
        })
      : new RedisWorker({
          redis: flags.redis,
          queue: flags.queue,
          ...(flags.prefix === undefined ? {} : { prefix: flags.prefix }),
          models: pool,
          logger,
          concurrency: flags.concurrency,
          ...(flags.lockDurationMs === undefined ? {} : { lockDurationMs: flags.lockDurationMs }),
          nonFinite: flags.nan,
          sinks,
          allowJobSinksUnder: flags.allowJobSinks.map((spec) => spec.replace(/^parquet:/, '')),
          openSink,
        });
  const source = flags.transport === 'kafka' ? `topic "${flags.topic}" (group "${flags.group}")` : `queue "${flags.queue}"`;
  let stopping: Promise<void> | undefined;
  const stop = (signal: NodeJS.Signals): Promise<void> => {
    stopping ??= (async () => {
      logger.info({ signal, timeoutMs: flags.shutdownTimeoutMs }, 'stopping: no new jobs; draining in-flight jobs');
      const started = Date.now();
      await worker.close(flags.shutdownTimeoutMs);
      await pool.close(Math.max(1000, flags.shutdownTimeoutMs - (Date.now() - started)));
      logger.info({ ...worker.stats, ms: Date.now() - started }, 'stopped');
    })();
    return stopping;
  };
  let fatal: (err: Error) => void = () => undefined;
  await new Promise<void>((resolve, reject) => {
    fatal = (err) => {
      logger.error({ err }, 'the queue consumer stopped for good: exiting so that the process is restarted');
      // Exit non-zero whatever the drain does: a worker whose consumer is gone must not linger half-alive.
      const exit = (): never => {
        process.stderr.write(`inferq: error: queue consumer stopped: ${err.message}\n`);
        process.exit(1);
      };
      setTimeout(exit, flags.shutdownTimeoutMs + 5000).unref();
      stop('SIGTERM').then(exit, (closeErr: unknown) => {
        logger.error({ err: closeErr }, 'drain after the consumer stopped failed');
        exit();
      });
    };
    const onSignal = (signal: NodeJS.Signals): void => {
      stop(signal).then(resolve, reject);
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
    worker.start().then(
      () => process.stdout.write(`inferq worker: serving ${source} on ${formatDevice(device)} (pid ${process.pid})\n`),
      reject,
    );
  });
}

/** `inferq worker --role precompute`: runs the precompute jobs of the schedules, one at a time. */
async function precomputeWorker(flags: WorkerFlags, device: ReturnType<typeof parseDevice>, logger: ReturnType<typeof createLogger>): Promise<void> {
  const worker = new PrecomputeWorker({
    redis: flags.redis,
    logger,
    model: { device, ...throughputThreads(flags, device) },
  });
  await new Promise<void>((resolve, reject) => {
    const onSignal = (): void => void worker.close(flags.shutdownTimeoutMs).then(resolve, reject);
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
    worker.start().then(() => process.stdout.write(`inferq worker: serving precompute schedules on ${formatDevice(device)} (pid ${process.pid})\n`), reject);
  });
}

interface PrecomputeFlags {
  spec: string;
  to: PrecomputeTarget;
  redis: string;
  modelRepo: string;
  device: string;
  threads?: number;
  instances?: number;
  lockTtlMs?: number;
  progress: boolean;
}

async function precomputeCommand(flags: PrecomputeFlags): Promise<void> {
  const logger = createLogger({ level: process.env['INFERQ_LOG_LEVEL'] ?? 'warn', base: { cmd: 'precompute' } });
  const spec = await loadSpec(flags.spec);
  const device = parseDevice(flags.device);
  const model = await loadModel(new ModelRepository(await modelRepoDir(flags.modelRepo)), spec.spec.model, spec.spec.version, {
    device,
    logger,
    ...throughputThreads(flags, device),
  });
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => abort.abort(new InferqError(`interrupted by ${signal}; the run is resumable`));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const bar = new ProgressBar();
  try {
    const s = await precompute({
      spec,
      model,
      to: flags.to,
      redis: flags.redis,
      logger,
      signal: abort.signal,
      ...(flags.lockTtlMs === undefined ? {} : { lockTtlMs: flags.lockTtlMs }),
      ...(flags.progress ? { onProgress: (p: { rows: number; totalRows: number; startRows: number }) => bar.update(p.rows, p.totalRows, p.startRows) } : {}),
    });
    bar.done();
    process.stdout.write(
      `inferq precompute: table ${s.table} run ${s.runId}: ${fmt(s.rows)} rows in ${s.seconds.toFixed(2)} s = ${fmt(s.rowsPerSecond)} rows/s` +
        `${s.resumedChunks > 0 ? ` (resumed: ${s.resumedChunks} of ${s.chunks} chunks were already done)` : ''}; ` +
        `${fmt(s.totalRows)} rows in the table` +
        `${s.buckets === undefined ? '' : `; redis: current → ${s.runId} (${fmt(s.buckets)} buckets)`}${s.parquet === undefined ? '' : `; parquet: ${s.parquet}`}\n`,
    );
  } finally {
    bar.done();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await model.close();
  }
}

export function buildProgram(): Command {
  const program = new Command('inferq')
    .description('Queue-driven, batched ML prediction: workers, offline predict and precompute.')
    .showHelpAfterError()
    .configureOutput({ outputError: (s, write) => write(s) });
  program
    .command('predict')
    .description('Predict a Parquet file offline (no queue, no server): Parquet in → model → Parquet out.')
    .requiredOption('--model-repo <dir>', 'model repository: <dir>/<name>/<version>/model.onnx (a local folder, or webhdfs:// / hdfs://, copied locally at start)')
    .requiredOption('--model <name>', 'model name')
    .option('--version <v>', 'model version (default: the newest its versionPolicy serves)')
    .requiredOption('--input <file.parquet>', 'input Parquet file; columns named like model inputs feed them')
    .requiredOption('--output <file.parquet|dir/>', 'output Parquet file, or a folder ending in "/" (part-00000.parquet + _SUCCESS); a local path, file://, webhdfs:// or hdfs:// URI; written under a temporary name, renamed on success')
    .option('--device <device>', 'cpu or cuda:N', 'cpu')
    .option('--max-batch <n>', 'largest batch in rows (overrides config.yaml)', positiveInt)
    .option('--max-delay-ms <n>', 'longest wait for a batch to fill', Number)
    .option('--threads <n>', 'ONNX Runtime intra-op threads per instance (default 1, with one instance per CPU)', positiveInt)
    .option('--instances <n>', 'sessions of the model, each in its own thread, batches spread over them (default: one per CPU)', positiveInt)
    .addOption(new Option('--nan <policy>', 'NaN/Inf in float features').choices(['reject', 'pass']).default('reject'))
    .option('--no-progress', 'no progress bar')
    .action(predictCommand);
  program
    .command('precompute')
    .description('Predict a whole feature space offline into a lookup table (Redis and/or Parquet); resumable.')
    .requiredOption('--spec <spec.yaml>', 'the table, model, feature space, key template and encoding')
    .addOption(new Option('--to <target>', 'where the table goes').choices(['redis', 'parquet', 'both']).default('redis'))
    .option('--redis <url>', 'Redis URL', process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379')
    .requiredOption('--model-repo <dir>', 'model repository (a local folder, or webhdfs:// / hdfs://)')
    .option('--device <device>', 'cpu or cuda:N', 'cpu')
    .option('--threads <n>', 'ONNX Runtime intra-op threads per instance (default 1, with one instance per CPU)', positiveInt)
    .option('--instances <n>', 'sessions of the model, each in its own thread, batches spread over them (default: one per CPU)', positiveInt)
    .option('--lock-ttl-ms <n>', 'lifetime of the table lock (renewed while the run lives); a crashed run blocks the next this long', positiveInt)
    .option('--no-progress', 'no progress bar')
    .action(precomputeCommand);
  const schedule = program.command('schedule').description('Cron schedules of precompute runs (BullMQ job schedulers), run by `inferq worker --role precompute`.');
  schedule
    .command('add <name>')
    .description('add or replace a schedule')
    .requiredOption('--cron <pattern>', 'cron pattern, e.g. "0 3 * * *" (a sixth, leading field is seconds)')
    .requiredOption('--spec <spec.yaml>', 'precompute spec (read at each run)')
    .requiredOption('--model-repo <dir>', 'model repository the worker loads from')
    .addOption(new Option('--to <target>', 'where the table goes').choices(['redis', 'parquet', 'both']).default('redis'))
    .option('--redis <url>', 'Redis URL', process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379')
    .action(async (name: string, f: { cron: string; spec: string; modelRepo: string; to: PrecomputeTarget; redis: string }) => {
      await addSchedule(f.redis, name, f.cron, { spec: f.spec, to: f.to, modelRepo: f.modelRepo });
      process.stdout.write(`inferq schedule: "${name}" runs ${f.spec} at "${f.cron}"\n`);
    });
  schedule
    .command('list')
    .description('list the schedules and their next run')
    .option('--redis <url>', 'Redis URL', process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379')
    .action(async (f: { redis: string }) => {
      for (const s of await listSchedules(f.redis)) {
        process.stdout.write(`${s.name}\t${s.cron ?? ''}\tnext ${s.next === undefined ? '-' : new Date(s.next).toISOString()}\t${s.spec ?? ''}\n`);
      }
    });
  schedule
    .command('remove <name>')
    .description('remove a schedule')
    .option('--redis <url>', 'Redis URL', process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379')
    .action(async (name: string, f: { redis: string }) => {
      if (!(await removeSchedule(f.redis, name))) throw new ConfigError(`no schedule named "${name}"`);
      process.stdout.write(`inferq schedule: "${name}" removed\n`);
    });
  program
    .command('worker')
    .description('Serve a queue: pull feature batches, batch them dynamically, run the model, reply / write results.')
    .addOption(new Option('--role <role>', 'serve a queue, or run scheduled precompute jobs').choices(['serve', 'precompute']).default('serve'))
    .addOption(new Option('--transport <kind>', 'queue transport').choices(['redis', 'kafka']).default('redis'))
    .option('--queue <name>', 'queue name (Redis)', 'inferq')
    .option('--redis <url>', 'Redis URL', process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379')
    .option('--prefix <prefix>', 'key prefix (Redis; default "inferq")')
    .option('--topic <name>', 'request topic (Kafka)', 'inferq')
    .option('--group <id>', 'consumer group (Kafka): workers of one group share the partitions', 'inferq-workers')
    .option('--brokers <host:port,…>', 'Kafka bootstrap brokers', process.env['KAFKA_BROKERS'] ?? '127.0.0.1:9092')
    .option('--dead-letter-topic <name>', 'dead-letter topic (Kafka; default <topic>.dead)')
    .option('--sink <parquet:uri>', 'also write every result to Parquet files under this folder (local path, file://, webhdfs://, hdfs://); repeatable', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--allow-job-sinks <folder>', 'redis: let a job name sinks of its own (enqueue option `sinks`) under this folder; repeatable (default: jobs may name none)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--sink-roll-rows <n>', 'roll a sink file at this many rows (default 100000)', positiveInt)
    .option('--sink-roll-ms <n>', 'roll a sink file when its oldest row is this old (default 10000)', positiveInt)
    .option('--session-timeout-ms <n>', 'Kafka: a worker silent this long leaves the group and its partitions move (default 30000)', positiveInt)
    .option('--model-repo <dir>', 'model repository (a local folder, or webhdfs:// / hdfs://, copied locally at start); required to serve')
    .option('--models <a,b>', 'serve only these models, loaded and warmed at start (default: any, loaded on first use)')
    .option('--device <device>', 'cpu or cuda:N', 'cpu')
    .option('--concurrency <n>', 'jobs in flight (enough to fill batches; Kafka: the topic is paused at 16× this many messages)', positiveInt, 256)
    .option('--max-batch <n>', 'largest batch in rows (overrides config.yaml)', positiveInt)
    .option('--max-delay-ms <n>', 'longest wait for a batch to fill', Number)
    .option('--threads <n>', 'ONNX Runtime intra-op threads per instance (default: the CPUs shared out over the instances; --role precompute: 1)', positiveInt)
    .option('--instances <n>', 'sessions of the model, each in its own thread, batches spread over them (default 1; --role precompute: one per CPU)', positiveInt)
    .option('--lock-duration-ms <n>', 'a stalled job is given to another worker after this long', positiveInt)
    .option('--shutdown-timeout-ms <n>', 'on SIGTERM, longest wait for in-flight jobs', positiveInt, 30_000)
    .addOption(new Option('--nan <policy>', 'NaN/Inf in float features').choices(['reject', 'pass']).default('reject'))
    .action(workerCommand);
  return program;
}

async function main(): Promise<void> {
  try {
    await buildProgram().parseAsync(process.argv);
  } catch (err) {
    if (err instanceof InferqError) {
      process.stderr.write(`inferq: error: ${err.message}\n`);
    } else {
      process.stderr.write(`inferq: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    }
    process.exitCode = 1;
  }
}

await main();
