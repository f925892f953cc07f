/**
 * A table's run state in Redis, shared by every way of running a precompute (one process,
 * queue tasks, Indexed Job shards), so that each can resume what another left:
 *
 * ```
 *  <prefix>:table:<t>:lock            at most one run at a time: an owner, with an expiry renewed while it works
 *  <prefix>:table:<t>:running         the unfinished run's id (resume)
 *  <prefix>:table:<t>:<runId>:meta    spec hash, model, version, target, buckets, rows, chunks, status
 *  <prefix>:table:<t>:<runId>:done    chunks written (the checkpoint)
 *  <prefix>:table:<t>:current         "<runId>:<buckets>", swapped when a run completes
 * ```
 *
 * The commit (the swap) is guarded: it happens only while the run's status is `running`, so
 * two finishers of one run (the last two queue tasks, two shards) publish it once, and a run
 * that finishes late never replaces a newer one.
 */
import { posix } from 'node:path';
import { Redis, ReplyError } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import { ConnectionError, DataIOError, InferqError, parseTablePointer } from '@inferq/shared';
import type { TableKeys } from '@inferq/shared';
import type { Location } from '../io/store.js';
import { acquireLock } from '../offline/lock.js';

export type PrecomputeTarget = 'redis' | 'parquet' | 'both';

/**
 * An ioredis client whose first answer came within `timeoutMs`: an unreachable server is a
 * ConnectionError naming it and the cause, not endless reconnects. The client's error events are
 * kept for that message (unheard, ioredis prints each one as an "Unhandled error event").
 */
export async function connectRedis(url: string, options: RedisOptions = {}, timeoutMs = 10_000): Promise<Redis> {
  const redis = new Redis(url, { maxRetriesPerRequest: 3, connectTimeout: 5000, ...options, lazyConnect: true });
  let last: Error | undefined;
  redis.on('error', (err: Error) => (last = err));
  const { host, port, path } = redis.options;
  const where = path ?? `${host ?? '127.0.0.1'}:${port ?? 6379}`;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      redis.ping(),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs))),
    ]);
    return redis;
  } catch (err) {
    redis.disconnect();
    // A server's own refusal (WRONGPASS, NOAUTH) says more than the socket's last error.
    const cause: Error = err instanceof ReplyError ? (err as Error) : (last ?? (err as Error));
    const code = (cause as NodeJS.ErrnoException).code ?? /^[A-Z]{3,}/.exec(cause.message)?.[0];
    throw new ConnectionError(`redis ${where}: cannot connect: ${cause.message}`, { address: where, causeCode: code, cause });
  } finally {
    clearTimeout(timer);
  }
}

/** Takes the table lock for `owner`, or fails naming the holder. */
export async function lockTable(redis: Redis, keys: TableKeys, owner: string, table: string, ttlMs: number): Promise<void> {
  const holder = await acquireLock(redis, keys.lock, owner, ttlMs);
  if (holder !== undefined) throw busy(table, holder);
}

export const busy = (table: string, holder: string): InferqError =>
  new InferqError(`table "${table}": a run is already in progress (held by ${holder}); at most one run per table at a time`, { retriable: true, code: 'BUSY' });

/** The fields of a run's meta hash. */
export interface RunMeta {
  readonly specHash: string;
  readonly model: string;
  readonly version: string;
  readonly to: PrecomputeTarget;
  readonly buckets: number;
  readonly totalRows: number;
  readonly chunks: number;
}

/** A field recorded with the run equals the one wanted; runs recorded before the field was resume as they always did. */
const same = (recorded: string | undefined, wanted: string | number): boolean => recorded === undefined || recorded === String(wanted);

const matches = (m: Record<string, string | undefined>, want: RunMeta): boolean =>
  m['specHash'] === want.specHash &&
  m['model'] === want.model &&
  m['version'] === want.version &&
  m['status'] === 'running' &&
  same(m['to'], want.to) &&
  // The same spec over a rewritten input (a Parquet space) is another run: its chunks and buckets differ.
  same(m['totalRows'], want.totalRows) &&
  same(m['chunks'], want.chunks) &&
  same(m['buckets'], want.buckets);

/** The unfinished run of the same spec, model version and target, if one was left (crash, kill). */
export async function findResumable(redis: Redis | undefined, keys: TableKeys, parquet: Location | undefined, want: RunMeta): Promise<string | undefined> {
  if (redis !== undefined) {
    const runId = await redis.get(keys.running);
    if (runId === null) return undefined;
    return matches(await redis.hgetall(keys.meta(runId)), want) ? runId : undefined;
  }
  const path = posix.join(parquet!.path, '_running.json');
  if (!(await parquet!.store.exists(path))) return undefined;
  const m = JSON.parse((await parquet!.store.readFile(path)).toString('utf8')) as Record<string, string>;
  return matches(m, want) ? m['runId'] : undefined;
}

/** Records a new run: its meta and `running` in Redis, `_running.json` beside a Parquet table. */
export async function recordRun(redis: Redis | undefined, keys: TableKeys, parquet: Location | undefined, runId: string, meta: RunMeta): Promise<void> {
  const fields = { specHash: meta.specHash, model: meta.model, version: meta.version, to: meta.to, buckets: String(meta.buckets), totalRows: String(meta.totalRows), chunks: String(meta.chunks), status: 'running', startedAt: new Date().toISOString() };
  if (redis !== undefined) await redis.multi().hset(keys.meta(runId), fields).set(keys.running, runId).exec();
  if (parquet !== undefined) await parquet.store.putBytes(posix.join(parquet.path, '_running.json'), new TextEncoder().encode(JSON.stringify({ runId, ...fields })));
}

/** Chunks a run has written, from its Redis checkpoint or (Parquet-only runs) its part files. */
export async function doneChunks(redis: Redis | undefined, keys: TableKeys, parquet: Location | undefined, runId: string): Promise<Set<number>> {
  const done = new Set<number>();
  if (redis !== undefined) for (const i of await redis.smembers(keys.done(runId))) done.add(Number(i));
  else
    for (const e of await parquet!.store.list(posix.join(parquet!.path, runId))) {
      const m = /^part-(\d+)\.parquet$/.exec(e.name);
      if (m !== null) done.add(Number(m[1]));
    }
  return done;
}

/** The Parquet side of a finished run: `_SUCCESS` in its folder, `_running.json` gone (both idempotent). */
export async function finishParquet(parquet: Location, runId: string): Promise<void> {
  await parquet.store.putBytes(posix.join(parquet.path, runId, '_SUCCESS'), new Uint8Array(0));
  await parquet.store.delete(posix.join(parquet.path, '_running.json'));
}

/**
 * Completes a run in Redis, once: while its status is `running`, in one transaction, marks it
 * complete, clears `running` and the checkpoint and, when `swap` is given, points `current` at it
 * and sets the previous version to expire after the grace period. Returns false when the run was
 * not running (already completed by another finisher, or unknown). `redis` must not be shared
 * with concurrent commands of other work while this runs (it WATCHes).
 */
export async function commitRun(redis: Redis, keys: TableKeys, runId: string, swap: { buckets: number; graceSeconds: number } | undefined): Promise<boolean> {
  for (let attempt = 0; attempt < 10; attempt++) {
    await redis.watch(keys.meta(runId), keys.current, keys.running);
    const [status, pointer, running] = await Promise.all([redis.hget(keys.meta(runId), 'status'), redis.get(keys.current), redis.get(keys.running)]);
    if (status !== 'running') {
      await redis.unwatch();
      return false;
    }
    const multi = redis.multi().hset(keys.meta(runId), 'status', 'complete', 'finishedAt', new Date().toISOString()).del(keys.done(runId));
    if (running === runId) multi.del(keys.running);
    const old = parseTablePointer(pointer);
    if (swap !== undefined) {
      multi.set(keys.current, `${runId}:${swap.buckets}`);
      if (old !== undefined && old.runId !== runId) {
        for (let b = 0; b < old.buckets; b++) multi.expire(keys.bucket(old.runId, b), Math.max(1, swap.graceSeconds));
        multi.expire(keys.meta(old.runId), Math.max(1, swap.graceSeconds));
      }
    }
    const results = await multi.exec();
    if (results === null) continue; // a watched key changed: look again
    if (results.some(([err]) => err !== null)) throw new DataIOError(`redis: publishing run ${runId} failed`, { retriable: true });
    return true;
  }
  throw new DataIOError(`redis: publishing run ${runId}: its keys kept changing`, { retriable: true });
}
