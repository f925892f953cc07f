/**
 * A precompute run: every row of a feature space → the model at full batch → a lookup table.
 *
 * ```
 *  lock the table ─► resume the unfinished run of the same spec, or start one (runId)
 *  space chunks (lazy, finished chunks skipped) ─► encode ─► throughput batcher ─► model
 *     │   (before the model: the chunk's keys, and its columns for Parquet, become UTF-8 bytes)
 *     └► per chunk: Parquet part-<chunk>.parquet (temp + rename)  and/or  Redis: HSET into the
 *        run's hash buckets + SADD the chunk to the run's checkpoint, in one pipeline of
 *        protocol bytes (resp.ts)
 *  all chunks done ─► Parquet _SUCCESS; Redis: MULTI { SET current "<runId>:<buckets>";
 *     EXPIRE the previous version after the grace period } ─► unlock
 * ```
 *
 * Readers follow `current`, so they see the previous complete table until the swap and the
 * new one after it; never a partial or mixed one. A crashed run leaves its checkpoint: the
 * next run of the same spec resumes it and only computes the chunks not yet done.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Redis, RedisOptions } from 'ioredis';
import { ConfigError, tableKeys } from '@inferq/shared';
import { parseLocation } from '../io/store.js';
import type { Logger } from '../logging.js';
import type { LoadedModel } from '../models/loaded-model.js';
import { bucketsOf, chunkRowsOf, computeChunks } from './chunks.js';
import { RespConnection } from './resp.js';
import { makeEncoder, openSpace } from './space.js';
import type { LoadedSpec } from './spec.js';
import { releaseLock, renewLock } from '../offline/lock.js';
import { newRunId } from '../offline/record.js';
import { commitRun, connectRedis, doneChunks, findResumable, finishParquet, lockTable, recordRun } from './table-run.js';
import type { PrecomputeTarget, RunMeta } from './table-run.js';

export { connectRedis } from './table-run.js';
export type { PrecomputeTarget } from './table-run.js';
export { redisChunk, rowJson } from './chunks.js';

export interface PrecomputeOptions {
  readonly spec: LoadedSpec;
  readonly model: LoadedModel;
  readonly to: PrecomputeTarget;
  /** Redis URL (targets redis/both). */
  readonly redis?: string;
  /** ioredis options beside the URL: TLS files, user, password (the CLI's connection flags). */
  readonly redisOptions?: RedisOptions;
  readonly logger: Logger;
  /** rows: done so far, including `startRows` that a resumed run found done. */
  readonly onProgress?: (p: { rows: number; totalRows: number; startRows: number }) => void;
  readonly signal?: AbortSignal;
  /** Chunks in the model at once. Default 4. */
  readonly window?: number;
  /** The table lock's lifetime (renewed every third of it while the run lives): how long a crashed run blocks the next. Default 30 s. */
  readonly lockTtlMs?: number;
}

export interface PrecomputeSummary {
  readonly table: string;
  readonly runId: string;
  readonly totalRows: number;
  /** Rows computed by this invocation (a resumed run skips the finished chunks). */
  readonly rows: number;
  readonly chunks: number;
  readonly resumedChunks: number;
  readonly seconds: number;
  readonly rowsPerSecond: number;
  readonly buckets: number | undefined;
  readonly parquet: string | undefined;
}

export async function precompute(options: PrecomputeOptions): Promise<PrecomputeSummary> {
  const started = performance.now();
  const { spec, model } = options;
  const table = spec.spec.table;
  const useRedis = options.to !== 'parquet';
  const useParquet = options.to !== 'redis';
  if (useParquet && spec.spec.parquet === undefined) throw new ConfigError(`--to ${options.to}: the spec has no parquet.path`);
  if (useRedis && options.redis === undefined) throw new ConfigError(`--to ${options.to}: no Redis URL (--redis or REDIS_URL)`);
  const log = options.logger.child({ table });
  const keys = tableKeys(spec.spec.redis.prefix, table);
  const parquetBase = useParquet ? parseLocation(spec.spec.parquet!.path) : undefined;
  const owner = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
  let renew: NodeJS.Timeout | undefined;
  let bulk: RespConnection | undefined;
  // Everything that can fail before the try below opens nothing: a client left open kept the process alive.
  const { space, close: closeSpace } = await openSpace(spec);
  let redis: Redis | undefined;
  try {
    redis = useRedis ? await connectRedis(options.redis!, options.redisOptions) : undefined;
  } catch (err) {
    await closeSpace();
    throw err;
  }
  try {
    if (redis !== undefined) {
      const ttl = options.lockTtlMs ?? 30_000;
      await lockTable(redis, keys, owner, table, ttl);
      const r = redis;
      renew = setInterval(() => void renewLock(r, keys.lock, owner, ttl).catch((err: unknown) => log.warn({ err }, 'could not renew the table lock')), ttl / 3);
      // The rows' connection, to the server and database ioredis parsed from the same URL.
      bulk = await RespConnection.open(redis.options);
    }
    const buckets = bucketsOf(space.total);
    checkBuckets(buckets, space);
    const meta: RunMeta = { specHash: spec.hash, model: model.name, version: model.version, to: options.to, buckets, totalRows: space.total, chunks: space.chunkCount };
    const resumed = await findResumable(redis, keys, parquetBase, meta);
    const runId = resumed ?? newRunId();
    const done = resumed === undefined ? new Set<number>() : await doneChunks(redis, keys, parquetBase, runId);
    if (resumed !== undefined) log.info({ runId, done: done.size, chunks: space.chunkCount }, 'resuming an unfinished run');
    else await recordRun(redis, keys, parquetBase, runId, meta);

    const startRows = [...done].reduce((s, i) => s + chunkRowsOf(space, i), 0);
    let progressRows = startRows;
    const rows = await computeChunks(
      { keys, runId, buckets, parquet: parquetBase, bulk },
      {
        spec,
        space,
        model,
        encode: await makeEncoder(spec, space, model.inputs),
        window: options.window,
        signal: options.signal,
        onChunk: (_, n) => {
          progressRows += n;
          options.onProgress?.({ rows: progressRows, totalRows: space.total, startRows });
        },
      },
      (i) => done.has(i),
    );
    if (parquetBase !== undefined) await finishParquet(parquetBase, runId);
    if (redis !== undefined) await commitRun(redis, keys, runId, { buckets, graceSeconds: spec.spec.redis.graceSeconds });
    const seconds = (performance.now() - started) / 1000;
    log.info({ runId, rows, seconds }, 'precompute run complete');
    return {
      table,
      runId,
      totalRows: space.total,
      rows,
      chunks: space.chunkCount,
      resumedChunks: done.size,
      seconds,
      rowsPerSecond: rows / seconds,
      buckets: redis === undefined ? undefined : buckets,
      parquet: parquetBase === undefined ? undefined : `${spec.spec.parquet!.path.replace(/\/+$/, '')}/${runId}/`,
    };
  } finally {
    clearInterval(renew);
    bulk?.close();
    await closeSpace();
    if (redis !== undefined) {
      await releaseLock(redis, keys.lock, owner).catch(() => undefined);
      redis.disconnect();
    }
  }
}

/** redisChunk sorts a chunk's rows by bucket · rows + row, which must stay an exact double. */
export function checkBuckets(buckets: number, space: { total: number; chunkRows: number }): void {
  if (buckets * space.chunkRows > Number.MAX_SAFE_INTEGER) throw new ConfigError(`the space has ${space.total} rows: too many for chunks of ${space.chunkRows} rows (buckets × chunkRows must stay under 2^53); use smaller chunks`);
}
