/** Options of the Redis worker, with their defaults in one place. */
import type { RedisOptions } from 'ioredis';
import type { NonFinitePolicy } from '@inferq/shared';
import type { Logger } from '../logging.js';
import type { ModelPool } from '../models/model-pool.js';
import type { ParquetSink } from '../sinks/parquet-sink.js';

export interface RedisWorkerOptions {
  /** Redis URL. */
  readonly redis: string;
  /** ioredis options merged into the URL's: TLS files, user, password (cli/connections.ts). The URL's own credentials win. */
  readonly client?: Pick<RedisOptions, 'tls' | 'username' | 'password'>;
  readonly queue: string;
  /** Key prefix. Default "inferq". */
  readonly prefix?: string;
  /** Where models come from (a ModelPool; anything with its `get`). */
  readonly models: Pick<ModelPool, 'get'>;
  readonly logger: Logger;
  /** Jobs in flight at once (enough to fill batches). Default 256. */
  readonly concurrency?: number;
  /** A job whose worker stops renewing its lock for this long is given to another worker. Default 30 s. */
  readonly lockDurationMs?: number;
  /** How often to look for stalled jobs. Default lockDurationMs / 2. */
  readonly stalledIntervalMs?: number;
  /** Approximate length cap of reply streams (XADD MAXLEN ~). Default 100,000. */
  readonly replyMaxLen?: number;
  /** Largest accepted payload. Default 256 MiB. */
  readonly maxPayloadBytes?: number;
  /** NaN/Inf in features. Default 'reject'. */
  readonly nonFinite?: NonFinitePolicy;
  /** How long start() waits for Redis before it fails with ConnectionError. Default 15 s. */
  readonly connectTimeoutMs?: number;
  /**
   * Parquet sinks every result is written to. A job is completed only after the roll
   * holding its rows is published; before a roll is published, the files that hold each
   * job's rows are recorded under the job's run, so a job run again after a crash finds its
   * rows already written and is not written twice (see RollCoordinator).
   */
  readonly sinks?: readonly ParquetSink[];
  /**
   * Folders under which a job may name sinks of its own (`enqueue(…, { sinks })`); its rows
   * then go to those too. A job naming any other folder is dead-lettered. Default: none.
   */
  readonly allowJobSinksUnder?: readonly string[];
  /** Opens a job's sink folder (the CLI passes its roll settings). Default: a ParquetSink with default rolls. */
  readonly openSink?: (uri: string) => ParquetSink;
  /** Called when the worker cannot go on (one of its own sinks refuses every write): the process should stop. */
  readonly onFatal?: (err: Error) => void;
}

type Defaulted = 'prefix' | 'concurrency' | 'lockDurationMs' | 'replyMaxLen' | 'maxPayloadBytes' | 'nonFinite' | 'connectTimeoutMs';

/** The options with every default filled in. */
export type ResolvedRedisWorkerOptions = RedisWorkerOptions & Required<Pick<RedisWorkerOptions, Defaulted>>;

export const REDIS_WORKER_DEFAULTS: Required<Pick<RedisWorkerOptions, Defaulted>> = {
  prefix: 'inferq',
  concurrency: 256,
  lockDurationMs: 30_000,
  replyMaxLen: 100_000,
  maxPayloadBytes: 256 * 1024 * 1024,
  nonFinite: 'reject',
  connectTimeoutMs: 15_000,
};

/** Fills in the defaults (an option given as undefined takes its default too). */
export function resolveRedisWorkerOptions(options: RedisWorkerOptions): ResolvedRedisWorkerOptions {
  const out: Record<string, unknown> = { ...options };
  for (const [k, v] of Object.entries(REDIS_WORKER_DEFAULTS)) if (out[k] === undefined) out[k] = v;
  return out as unknown as ResolvedRedisWorkerOptions;
}
