/** `inferq worker`: serve a queue (Redis or Kafka), or run scheduled precompute jobs. */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Option } from 'commander';
import type { Command } from 'commander';
import { ConfigError, DEFAULT_QUEUE } from '@inferq/shared';
import type { NonFinitePolicy } from '@inferq/shared';
import { LocalStore, parseLocation } from '../../io/store.js';
import { OFFLINE_QUEUE } from '../../offline/record.js';
import { createLogger } from '../../logging.js';
import type { Logger } from '../../logging.js';
import { ModelRepository } from '../../models/repository.js';
import { ModelPool } from '../../models/model-pool.js';
import { RepoMirror } from '../../models/mirror.js';
import { routingSource } from '../../models/routing.js';
import { ModelWatcher } from '../../models/watcher.js';
import { startOps } from '../../ops/ops.js';
import type { Ops } from '../../ops/ops.js';
import { ParquetSink } from '../../sinks/parquet-sink.js';
import { KafkaWorker } from '../../sources/kafka/worker.js';
import { RedisWorker } from '../../sources/redis/worker.js';
import { parseDevice } from '../../runners/device.js';
import { formatDevice } from '../../runners/runner.js';
import { addConnectionOptions, kafkaClientConfig, kafkaStartFailure, redisClientOptions } from '../connections.js';
import type { ConnectionFlags } from '../connections.js';
import { collect, defaultRedisUrl, nonNegativeInt, positiveInt } from '../flags.js';
import { serve } from '../serve.js';
import { superviseDevices } from '../supervisor/supervise.js';
import { precomputeWorker } from './precompute-worker.js';

export interface WorkerFlags extends ConnectionFlags {
  role: 'serve' | 'precompute';
  transport: 'redis' | 'kafka';
  /** `--queue`: the served queue (default `inferq`), or with --role precompute the offline queue (default `inferq-offline`). */
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
  connectTimeoutMs?: number;
  createTopic: boolean;
  partitions: number;
  nan: NonFinitePolicy;
  allowSpecs?: string;
  allowInputs: string[];
  allowOutputs: string[];
  /** `--devices`: run one child worker per device (see cli/supervisor). */
  devices?: string;
  /** With `--devices`: exits after one child exits this many times in a row. */
  maxRestarts: number;
  /** `--http-port`: /livez, /readyz, /metrics; 0 = off. */
  httpPort: number;
  /** `--model-poll-ms`: scan the model repository this often for new or removed versions; 0 = only on SIGHUP / `inferq models reload`. */
  modelPollMs: number;
  /** `--max-loaded-models`: unload the least recently used idle version beyond this many. */
  maxLoadedModels?: number;
  /** `--dead-letter-ttl-seconds`: expiry of a Redis dead letter's payload copy. */
  deadLetterTtlSeconds: number;
  /** `--log-summary-ms`: a throughput line at info level this often; 0 = off. */
  logSummaryMs: number;
}

/** The flags as commander gives them: `--queue` has no default there, its default depends on `--role`. */
type ParsedWorkerFlags = Omit<WorkerFlags, 'queue'> & { queue?: string };

async function workerCommand(parsed: ParsedWorkerFlags): Promise<void> {
  const flags: WorkerFlags = { ...parsed, queue: parsed.queue ?? (parsed.role === 'precompute' ? OFFLINE_QUEUE : DEFAULT_QUEUE) };
  if (flags.devices !== undefined) return superviseDevices(flags);
  const device = parseDevice(flags.device);
  const logger = createLogger({ base: { cmd: 'worker', device: formatDevice(device) } });
  if (flags.role === 'precompute') return precomputeWorker(flags, device, logger);
  if (flags.modelRepo === undefined) throw new ConfigError('worker: --model-repo is required to serve a queue');
  const allow = flags.models?.split(',').map((s) => s.trim()).filter((s) => s !== '');
  // Listening before the models load: /readyz says "starting" meanwhile.
  const ops = await startOps({ httpPort: flags.httpPort, device: formatDevice(device), logger, models: allow ?? [], summaryMs: flags.logSummaryMs });
  try {
    await serveQueue(flags, device, logger, allow, ops);
  } catch (err) {
    // The endpoints would keep the process alive after a failed start.
    await ops.close(Date.now() + 1000);
    throw err;
  }
}

async function serveQueue(flags: WorkerFlags, device: ReturnType<typeof parseDevice>, logger: Logger, allow: string[] | undefined, ops: Ops): Promise<void> {
  const repo = await openRepository(flags.modelRepo!, logger);
  const repository = new ModelRepository(repo.dir);
  const pool = new ModelPool(repository, {
    device,
    logger,
    allow,
    ...(flags.maxLoadedModels === undefined ? {} : { maxLoadedModels: flags.maxLoadedModels }),
    batching: { maxBatchSize: flags.maxBatch, maxDelayMs: flags.maxDelayMs },
    ...(flags.instances === undefined ? {} : { instances: flags.instances }),
    ...(flags.threads === undefined ? {} : { intraOpThreads: flags.threads }),
    metrics: ops.metrics,
  });
  try {
    await pool.preload();
  } catch (err) {
    await pool.close(); // models that did load hold worker threads: release them so the process can exit
    throw err;
  }
  ops.health.modelsReady();
  const watcher = new ModelWatcher({ pool, pollMs: flags.modelPollMs, logger, ...(repo.sync === undefined ? {} : { sync: repo.sync }) });
  const reload = (): void => void watcher.reload();
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
  let onFatal: (err: Error) => void = () => undefined;
  // What both transports take alike: --concurrency is the jobs in flight, on either.
  const common = {
    models: pool,
    // The model-level traffic split and shadow (docs/traffic.md).
    routing: routingSource(repository, pool),
    logger,
    concurrency: flags.concurrency,
    nonFinite: flags.nan,
    sinks,
    allowJobSinksUnder: flags.allowJobSinks.map((spec) => spec.replace(/^parquet:/, '')),
    openSink,
    ...(flags.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: flags.connectTimeoutMs }),
    onFatal: (err: Error) => onFatal(err),
    metrics: ops.metrics,
  };
  const worker =
    flags.transport === 'kafka'
      ? new KafkaWorker({
          ...common,
          brokers: flags.brokers.split(',').map((b) => b.trim()).filter((b) => b !== ''),
          client: kafkaClientConfig(flags),
          topic: flags.topic,
          group: flags.group,
          ...(flags.deadLetterTopic === undefined ? {} : { deadLetterTopic: flags.deadLetterTopic }),
          ...(flags.sessionTimeoutMs === undefined ? {} : { sessionTimeoutMs: flags.sessionTimeoutMs }),
          ...(flags.createTopic ? { createTopic: { partitions: flags.partitions } } : {}),
        })
      : new RedisWorker({
          ...common,
          redis: flags.redis,
          client: redisClientOptions(flags, flags.redis),
          queue: flags.queue,
          ...(flags.prefix === undefined ? {} : { prefix: flags.prefix }),
          ...(flags.lockDurationMs === undefined ? {} : { lockDurationMs: flags.lockDurationMs }),
          deadLetterTtlSeconds: flags.deadLetterTtlSeconds,
          onControl: reload,
        });
  const source = flags.transport === 'kafka' ? `topic "${flags.topic}" (group "${flags.group}")` : `queue "${flags.queue}"`;
  let fatal: (err: Error) => void = () => undefined;
  onFatal = (err) => fatal(err);
  await serve(
    {
      start: async () => {
        await worker.start().catch((err: unknown) => Promise.reject(flags.transport === 'kafka' ? kafkaStartFailure(err, flags.brokers) : err));
        ops.serving(() => worker.health());
        watcher.start();
      },
      stop: async (timeoutMs) => {
        const deadline = Date.now() + timeoutMs;
        await watcher.stop();
        await worker.close(timeoutMs);
        await pool.close(Math.max(500, deadline - Date.now()));
        // Last: /livez answers until the process is about to exit.
        await ops.close(Math.max(Date.now() + 200, deadline));
      },
      stats: () => ({ ...worker.stats }),
    },
    {
      logger,
      shutdownTimeoutMs: flags.shutdownTimeoutMs,
      servingLine: () => `inferq worker: serving ${source} on ${formatDevice(device)} (pid ${process.pid})${ops.port === undefined ? '' : `; /livez /readyz /metrics on port ${ops.port}`}`,
      onFatal: (f) => (fatal = f),
      onStopping: () => ops.health.draining(),
      onReload: reload,
    },
  );
}

/** The local folder the pool reads; a repository on HDFS is mirrored there, and `sync` brings its changes. */
async function openRepository(uri: string, logger: Logger): Promise<{ dir: string; sync?: () => Promise<void> }> {
  if (parseLocation(uri).store instanceof LocalStore) return { dir: uri };
  const dir = await mkdtemp(join(tmpdir(), 'inferq-models-'));
  const mirror = new RepoMirror(uri, dir, logger);
  await mirror.sync();
  return { dir, sync: () => mirror.sync() };
}

export function registerWorker(program: Command): void {
  const command = program
    .command('worker')
    .description('Serve a queue: pull feature batches, batch them dynamically, run the model, reply / write results.')
    .addOption(new Option('--role <role>', 'serve a queue, or (precompute) run the scheduled precompute jobs and the offline tasks of distributed precompute and predict runs').choices(['serve', 'precompute']).default('serve'))
    .addOption(new Option('--transport <kind>', 'queue transport').choices(['redis', 'kafka']).default('redis'))
    .option('--queue <name>', `queue name (Redis): the served queue, or with --role precompute the offline queue (default: ${DEFAULT_QUEUE} (serve), ${OFFLINE_QUEUE} (precompute))`)
    .option('--redis <url>', 'Redis URL', defaultRedisUrl())
    .option('--prefix <prefix>', 'key prefix (Redis; default "inferq")')
    .option('--topic <name>', 'request topic (Kafka)', 'inferq')
    .option('--group <id>', 'consumer group (Kafka): workers of one group share the partitions', 'inferq-workers')
    .option('--brokers <host:port,…>', 'Kafka bootstrap brokers', process.env['KAFKA_BROKERS'] ?? '127.0.0.1:9092')
    .option('--dead-letter-topic <name>', 'dead-letter topic (Kafka; default <topic>.dead)')
    .option('--sink <parquet:uri>', 'also write every result to Parquet files under this folder (local path, file://, webhdfs://, hdfs://); repeatable', collect, [] as string[])
    .option('--allow-job-sinks <folder>', 'let a job name sinks of its own (enqueue option `sinks`) under this folder; repeatable (default: jobs may name none)', collect, [] as string[])
    .option('--sink-roll-rows <n>', 'roll a sink file at this many rows (default 100000)', positiveInt)
    .option('--sink-roll-ms <n>', 'roll a sink file when its oldest row is this old (default 10000)', positiveInt)
    .option('--session-timeout-ms <n>', 'Kafka: a worker silent this long leaves the group and its partitions move (default 30000)', positiveInt)
    .option('--model-repo <dir>', 'model repository (a local folder, or webhdfs:// / hdfs://, copied locally at start); required')
    .option('--model-poll-ms <n>', 'scan the model repository this often for new, removed or re-pinned versions, swapped in without restart (0 = only on SIGHUP or `inferq models reload`)', nonNegativeInt, 10_000)
    .option('--max-loaded-models <n>', 'keep at most this many model versions loaded: the least recently used idle one is unloaded (default: no limit)', positiveInt)
    .option('--dead-letter-ttl-seconds <n>', 'Redis: expiry of the payload copy a dead letter keeps for a replay', positiveInt, 604_800)
    .option('--models <a,b>', 'serve only these models, loaded and warmed at start (default: any, loaded on first use)')
    .option('--device <device>', 'cpu or cuda:N', 'cpu')
    .option('--devices <list>', 'run one child worker per device: cuda:0,cuda:1,… or "all" (the GPUs nvidia-smi -L or CUDA_VISIBLE_DEVICES lists); each child gets its own --device')
    .option('--max-restarts <n>', 'with --devices: stop every child and exit 1 when one child exits this many times in a row (restarted after 1 s, doubling to 30 s)', positiveInt, 5)
    .addOption(new Option('--http-port <n>', '/livez, /readyz and /metrics on this port (0 = off)').argParser(nonNegativeInt).default(9464).env('INFERQ_HTTP_PORT'))
    .addOption(new Option('--log-summary-ms <n>', 'log a throughput line (jobs/s, rows/s, dead letters, mean batch, pending rows) at info level this often (0 = off)').argParser(nonNegativeInt).default(30_000).env('INFERQ_LOG_SUMMARY_MS'))
    .option('--concurrency <n>', 'jobs (Redis jobs or Kafka messages) in flight at once: enough to fill batches, and the bound on memory', positiveInt, 256)
    .option('--max-batch <n>', 'largest batch in rows (overrides config.yaml)', positiveInt)
    .option('--max-delay-ms <n>', 'longest wait for a batch to fill', Number)
    .option('--threads <n>', 'ONNX Runtime intra-op threads per instance (default: the CPUs shared out over the instances; --role precompute: 1)', positiveInt)
    .option('--instances <n>', 'sessions of the model, each in its own thread, batches spread over them (default 1; --role precompute: one per CPU)', positiveInt)
    .option('--lock-duration-ms <n>', 'a stalled job (with --role precompute: an offline task) is given to another worker after this long', positiveInt)
    .option('--shutdown-timeout-ms <n>', 'on SIGTERM, the process ends within this long, whatever is down; jobs not finished by then are handed back (never acknowledged)', positiveInt, 30_000)
    .option('--connect-timeout-ms <n>', 'at start, how long to wait for the queue server before exiting with an error (default 15000 for Redis; 60000 for Kafka, whose group join waits for a rebalance)', positiveInt)
    .option('--create-topic', 'Kafka: create the request topic when it does not exist (default: a missing topic stops the worker with an error)', false)
    .option('--partitions <n>', 'Kafka: partitions of a topic --create-topic creates (at least the number of workers you will run)', positiveInt, 1)
    .addOption(new Option('--nan <policy>', 'NaN/Inf in float features').choices(['reject', 'pass']).default('reject'))
    .option('--allow-specs <dir>', "--role precompute: the folder of specs' files (Parquet inputs, featurizers); scheduled and distributed specs read nothing outside it (default: they may name no file)")
    .option('--allow-inputs <folder>', '--role precompute: scheduled specs may read remote Parquet inputs (webhdfs://, hdfs://) under this folder, and distributed predict tasks their inputs (local folders too); repeatable (default: none)', collect, [] as string[])
    .option('--allow-outputs <folder>', '--role precompute: scheduled specs and the tasks of distributed precompute and predict runs may write Parquet under this folder; repeatable (default: none)', collect, [] as string[])
    .action(workerCommand);
  addConnectionOptions(command, ['kafka', 'redis', 'hdfs']);
}
