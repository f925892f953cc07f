/**
 * Starting (or resuming) a distributed precompute run: `inferq precompute --distributed` puts
 * its tasks on the offline queue; `inferq precompute --shard i/N` computes one share itself.
 *
 * ```
 *  spec (checked as a worker will see it) ─► model version pinned ─► space counted
 *  ─► the unfinished run of the same spec, model version and target, or a new run id
 *  ─► table lock "run:<runId>" (refused while another run, or this one, holds it)
 *  ─► table meta + running (new) ─► run record ─► tasks whose chunks are not all done
 *     (all done: finalised here)
 * ```
 */
import { hostname } from 'node:os';
import type { Redis, RedisOptions } from 'ioredis';
import { ConfigError, DEFAULT_PREFIX, tableKeys } from '@inferq/shared';
import type { TableKeys } from '@inferq/shared';
import { parseLocation } from '../io/store.js';
import type { Logger } from '../logging.js';
import { ModelRepository } from '../models/repository.js';
import { acquireLock, claimLock, releaseLock, runLockValue } from '../offline/lock.js';
import { enqueueTasks } from '../offline/queue.js';
import type { EnqueueResult } from '../offline/queue.js';
import { OFFLINE_QUEUE, completeRun, launchRecord, newRunId, offlineKeys, readRunRecord, taskUnits } from '../offline/record.js';
import type { OfflineKeys } from '../offline/record.js';
import { bucketsOf } from './chunks.js';
import { finalizeRun } from './distributed.js';
import type { PrecomputeParams } from './distributed.js';
import { specPayload } from './schedules.js';
import { openSpace } from './space.js';
import type { LoadedSpec } from './spec.js';
import { busy, connectRedis, findResumable, recordRun } from './table-run.js';
import type { PrecomputeTarget, RunMeta } from './table-run.js';

/** Default lifetime of a distributed run's table lock, renewed by every process working on the run. */
export const DEFAULT_RUN_LOCK_TTL_MS = 60_000;

export interface LaunchPrecomputeOptions {
  readonly redis: string;
  readonly redisOptions?: RedisOptions | undefined;
  /** Key prefix of the offline queue and run records. Default "inferq". */
  readonly prefix?: string | undefined;
  /** The offline queue. Default {@link OFFLINE_QUEUE}. */
  readonly queue?: string | undefined;
  readonly specPath: string;
  /** The folder the workers' --allow-specs is a copy of. Default: the spec's own folder. */
  readonly specsRoot?: string | undefined;
  readonly to: PrecomputeTarget;
  /** Where the model's version is pinned from (the newest, unless the spec names one). */
  readonly modelRepo: string;
  /** Chunks per queue task. Default 1. */
  readonly chunksPerTask?: number | undefined;
  /** Default {@link DEFAULT_RUN_LOCK_TTL_MS}. */
  readonly lockTtlMs?: number | undefined;
  readonly logger: Logger;
}

export interface LaunchedRun {
  readonly runId: string;
  readonly table: string;
  readonly resumed: boolean;
  readonly chunks: number;
  readonly chunksDone: number;
  readonly tasks: number;
  readonly totalRows: number;
  /** Undefined when nothing was enqueued (every chunk was done, or shard mode). */
  readonly enqueued: EnqueueResult | undefined;
  /** Every chunk was done already: the launcher published the run. */
  readonly finalized: boolean;
}

interface Planned {
  readonly spec: LoadedSpec;
  readonly params: PrecomputeParams;
  readonly keys: TableKeys;
  readonly meta: RunMeta;
}

/** The spec as workers will see it, the pinned version, and the space's size. */
async function plan(o: Pick<LaunchPrecomputeOptions, 'specPath' | 'specsRoot' | 'to' | 'modelRepo'>): Promise<Planned> {
  const { payload, spec } = await specPayload(o.specPath, o.specsRoot, o.to);
  const version = (await new ModelRepository(o.modelRepo).resolve(spec.spec.model, spec.spec.version)).version;
  const { space, close } = await openSpace(spec);
  await close();
  const keys = tableKeys(spec.spec.redis.prefix, spec.spec.table);
  const meta: RunMeta = { specHash: spec.hash, model: spec.spec.model, version, to: o.to, buckets: bucketsOf(space.total), totalRows: space.total, chunks: space.chunkCount };
  return { spec, keys, meta, params: { spec: payload, to: o.to, model: { name: spec.spec.model, version }, totalRows: space.total, chunks: space.chunkCount } };
}

/**
 * The run to work on and its lock: the unfinished run of the same spec, or a new one. `join`:
 * a run whose lock is held under its own name is joined (shards of one Indexed Job), instead of
 * refused; a failed run is taken over either way (a relaunch retries it).
 */
async function takeRun(redis: Redis, okeys: OfflineKeys, p: Planned, ttlMs: number, join: boolean): Promise<{ runId: string; resumed: boolean }> {
  const table = p.spec.spec.table;
  for (let attempt = 0; ; attempt++) {
    const resumable = await findResumable(redis, p.keys, undefined, p.meta);
    const runId = resumable ?? newRunId();
    const holder = await acquireLock(redis, p.keys.lock, runLockValue(runId), ttlMs);
    if (holder === undefined) return { runId, resumed: resumable !== undefined };
    if (resumable !== undefined && holder === runLockValue(resumable)) {
      const failed = (await redis.hget(okeys.run(resumable), 'state')) === 'failed';
      if ((join || failed) && (await claimLock(redis, p.keys.lock, holder, ttlMs)) === undefined) return { runId: resumable, resumed: true };
    }
    // Shards start together: the first one's run may not be recorded yet.
    if (join && holder.startsWith('run:') && resumable === undefined && attempt < 40) {
      await new Promise((r) => setTimeout(r, 250));
      continue;
    }
    throw busy(table, holder);
  }
}

/** Records a new run's table meta (and Parquet `_running.json`) and its run record; returns the chunks done. */
async function record(redis: Redis, okeys: OfflineKeys, p: Planned, run: { runId: string; resumed: boolean }, rec: { mode: 'queue' | 'shard'; queue?: string; tasks: number; lockTtlMs: number }): Promise<Set<number>> {
  const parquet = p.params.to === 'redis' ? undefined : parseLocation(p.spec.spec.parquet!.path);
  if (!run.resumed) await recordRun(redis, p.keys, parquet, run.runId, p.meta);
  const done = new Set((await redis.smembers(p.keys.done(run.runId))).map(Number));
  await launchRecord(redis, okeys, { runId: run.runId, kind: 'precompute', ...rec, params: p.params, units: p.meta.chunks, totalRows: p.meta.totalRows, holds: `table "${p.spec.spec.table}"` }, done.size);
  return done;
}

/** Publishes a run every chunk of which is written, from the launcher (a run resumed after its last task died while finalising). */
async function finalizeHere(o: { redis: string; redisOptions?: RedisOptions | undefined }, redis: Redis, okeys: OfflineKeys, p: Planned, runId: string): Promise<boolean> {
  const own = await connectRedis(o.redis, o.redisOptions);
  let published: boolean;
  try {
    const parquet = p.params.to === 'redis' ? undefined : parseLocation(p.spec.spec.parquet!.path);
    published = await finalizeRun({ runId, keys: p.keys, buckets: p.meta.buckets, parquet, to: p.params.to, spec: p.spec }, own);
  } finally {
    own.disconnect();
  }
  await completeRun(redis, okeys, runId);
  await releaseLock(redis, p.keys.lock, runLockValue(runId));
  return published;
}

/** A resumed queue run keeps its task layout: jobs of the old one may still be queued or running under the same ids. */
async function sameLayout(redis: Redis, okeys: OfflineKeys, runId: string, tasks: number): Promise<void> {
  if ((await redis.exists(okeys.run(runId))) === 0) return; // a run of one process has no offline record
  const prev = await readRunRecord(redis, okeys, runId);
  if (prev.mode === 'queue' && prev.tasks !== tasks) {
    throw new ConfigError(`run ${runId} was launched as ${prev.tasks} tasks, this launch makes ${tasks}: relaunch with the same --chunks-per-task to resume it`);
  }
}

/** Launches (or resumes) a distributed precompute run on the offline queue. */
export async function launchDistributedPrecompute(o: LaunchPrecomputeOptions): Promise<LaunchedRun> {
  const p = await plan(o);
  const prefix = o.prefix ?? DEFAULT_PREFIX;
  const okeys = offlineKeys(prefix);
  const queue = o.queue ?? OFFLINE_QUEUE;
  const ttl = o.lockTtlMs ?? DEFAULT_RUN_LOCK_TTL_MS;
  const chunks = p.meta.chunks;
  const tasks = Math.max(1, Math.ceil(chunks / (o.chunksPerTask ?? 1)));
  const redis = await connectRedis(o.redis, o.redisOptions);
  try {
    const run = await takeRun(redis, okeys, p, ttl, false);
    if (run.resumed) {
      await sameLayout(redis, okeys, run.runId, tasks).catch(async (err: unknown) => {
        await releaseLock(redis, p.keys.lock, runLockValue(run.runId)); // refused: the run stays resumable
        throw err;
      });
    }
    const done = await record(redis, okeys, p, run, { mode: 'queue', queue, tasks, lockTtlMs: ttl });
    const base = { runId: run.runId, table: p.spec.spec.table, resumed: run.resumed, chunks, chunksDone: done.size, tasks, totalRows: p.meta.totalRows };
    if (done.size >= chunks) {
      await finalizeHere(o, redis, okeys, p, run.runId);
      return { ...base, enqueued: undefined, finalized: true };
    }
    const missing: number[] = [];
    for (let t = 0; t < tasks; t++) {
      const [from, to] = taskUnits(chunks, tasks, t);
      for (let c = from; c < to; c++) {
        if (!done.has(c)) {
          missing.push(t);
          break;
        }
      }
    }
    const enqueued = await enqueueTasks(redis, queue, prefix, { kind: 'precompute', run: run.runId }, missing, !run.resumed);
    o.logger.info({ runId: run.runId, table: base.table, tasks, missing: missing.length, ...enqueued }, 'distributed precompute run launched');
    return { ...base, enqueued, finalized: false };
  } finally {
    redis.disconnect();
  }
}

export interface ShardOptions extends Omit<LaunchPrecomputeOptions, 'queue' | 'chunksPerTask' | 'specsRoot'> {
  readonly shard: number;
  readonly shards: number;
}

/**
 * Joins (or starts) the run of the spec as shard `shard` of `shards`: the run record says how
 * many shards share it, and `compute` is handed this shard's chunks [from, to). Returns once
 * they are written; the shard that finds every chunk done publishes the run.
 */
export async function runShard(
  o: ShardOptions,
  compute: (run: { runId: string; spec: LoadedSpec; version: string; expect: { totalRows: number; chunks: number }; range: [number, number]; redis: Redis; renew: () => Promise<void> }) => Promise<number>,
): Promise<LaunchedRun & { rows: number; range: [number, number] }> {
  if (!Number.isInteger(o.shard) || !Number.isInteger(o.shards) || o.shards < 1 || o.shard < 0 || o.shard >= o.shards) throw new ConfigError(`--shard ${o.shard}/${o.shards}: expected i/N with 0 ≤ i < N`);
  // The spec is the caller's own file, as in a single-process run: its files may lie anywhere.
  const p = await plan({ ...o, specsRoot: '/' });
  const prefix = o.prefix ?? DEFAULT_PREFIX;
  const okeys = offlineKeys(prefix);
  const ttl = o.lockTtlMs ?? DEFAULT_RUN_LOCK_TTL_MS;
  const chunks = p.meta.chunks;
  const redis = await connectRedis(o.redis, o.redisOptions);
  try {
    const run = await takeRun(redis, okeys, p, ttl, true);
    // No record (a new run, or one a single process left), or one that does not validate: this shard writes it.
    const existing = await readRunRecord(redis, okeys, run.runId).catch(() => undefined);
    if (existing?.state === 'running' && existing.mode !== 'shard') throw busy(p.spec.spec.table, `${runLockValue(run.runId)}, a queue run (inferq precompute --distributed)`);
    if (existing?.mode === 'shard' && existing.tasks !== o.shards) throw new ConfigError(`run ${run.runId} of table "${p.spec.spec.table}" is shared by ${existing.tasks} shards, not ${o.shards}`);
    // The first shard records the run; the others join it as it is (progress counts from its launch).
    if (!(existing?.mode === 'shard' && existing.state === 'running')) await record(redis, okeys, p, run, { mode: 'shard', tasks: o.shards, lockTtlMs: ttl });
    const range = taskUnits(chunks, o.shards, o.shard);
    const owner = runLockValue(run.runId);
    const renew = async (): Promise<void> => {
      const holder = await claimLock(redis, p.keys.lock, owner, ttl);
      if (holder !== undefined) throw busy(p.spec.spec.table, holder);
    };
    o.logger.info({ runId: run.runId, shard: o.shard, shards: o.shards, range, host: hostname() }, 'precompute shard started');
    const rows = await compute({ runId: run.runId, spec: p.spec, version: p.meta.version, expect: { totalRows: p.meta.totalRows, chunks }, range, redis, renew });
    const [status, doneNow] = await Promise.all([redis.hget(p.keys.meta(run.runId), 'status'), redis.scard(p.keys.done(run.runId))]);
    const finalized = status !== 'complete' && doneNow >= chunks && (await finalizeHere(o, redis, okeys, p, run.runId));
    const base = { runId: run.runId, table: p.spec.spec.table, resumed: run.resumed, chunks, chunksDone: status === 'complete' ? chunks : doneNow, tasks: o.shards, totalRows: p.meta.totalRows };
    return { ...base, enqueued: undefined, finalized, rows, range };
  } finally {
    redis.disconnect();
  }
}
