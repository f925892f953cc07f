/**
 * Starting (or resuming) a distributed offline predict: `inferq predict --distributed`.
 *
 * ```
 *  plan (the caller's: planPredict) ─► model version pinned ─► the output's unfinished run of the
 *  same input, model and plan, or a new run id ─► output lock "run:<runId>" (refused while
 *  another run, or this one, holds it) ─► run record ─► one task per PredictTask not done
 *  (every task done: _SUCCESS written here) ─► --wait: follow it to the end
 * ```
 */
import type { Redis, RedisOptions } from 'ioredis';
import { ConfigError, DEFAULT_PREFIX, InferqError, printable } from '@inferq/shared';
import type { NonFinitePolicy } from '@inferq/shared';
import type { Logger } from '../logging.js';
import { ModelRepository } from '../models/repository.js';
import type { PredictPlan } from '../predict/plan.js';
import { finishPredictOutput } from '../predict/task.js';
import { connectRedis } from '../precompute/table-run.js';
import { acquireLock, claimLock, releaseLock, runLockValue } from './lock.js';
import { outputKeys, parsePredictParams, predictUnitsDoneIn } from './predict-run.js';
import type { PredictParams } from './predict-run.js';
import { enqueueTasks } from './queue.js';
import type { EnqueueResult } from './queue.js';
import { OFFLINE_QUEUE, completeRun, launchRecord, newRunId, offlineKeys, readRunRecord } from './record.js';
import type { OfflineKeys } from './record.js';
import { waitForRun } from './status.js';
import type { RunStatus } from './status.js';

/** Default lifetime of a distributed run's output lock, renewed by every worker working on the run. */
export const DEFAULT_PREDICT_LOCK_TTL_MS = 60_000;

export interface LaunchPredictOptions {
  readonly redis: string;
  readonly redisOptions?: RedisOptions | undefined;
  /** Key prefix of the offline queue, run records and output locks (the workers' --prefix). Default "inferq". */
  readonly prefix?: string | undefined;
  /** The offline queue (the workers' --queue). Default {@link OFFLINE_QUEUE}. */
  readonly queue?: string | undefined;
  readonly model: string;
  /** The version every worker runs. Default: the newest in `modelRepo` (one of the two is needed). */
  readonly version?: string | undefined;
  readonly modelRepo?: string | undefined;
  /** The input as given (file, folder or glob), and the output folder: both as workers will read and write them. */
  readonly input: string;
  readonly output: string;
  readonly plan: PredictPlan;
  /** Default 'reject'. */
  readonly nonFinite?: NonFinitePolicy | undefined;
  /** Follow the run until it is complete or failed (a failed run throws). */
  readonly wait: boolean;
  /** With `wait`: give up after this long (a DeadlineExceededError; the run goes on). */
  readonly timeoutMs?: number | undefined;
  readonly onProgress?: ((s: RunStatus) => void) | undefined;
  readonly signal?: AbortSignal | undefined;
  /** Default {@link DEFAULT_PREDICT_LOCK_TTL_MS}. */
  readonly lockTtlMs?: number | undefined;
  readonly logger: Logger;
}

export interface LaunchedPredict {
  readonly runId: string;
  readonly resumed: boolean;
  readonly tasks: number;
  readonly tasksDone: number;
  readonly totalRows: number;
  /** Undefined when every task was done already. */
  readonly enqueued: EnqueueResult | undefined;
  /** Every task was done: `_SUCCESS` was written by the launcher. */
  readonly finalized: boolean;
  /** The final status, when `wait`. */
  readonly status: RunStatus | undefined;
}

const sameRun = (a: PredictParams, b: PredictParams): boolean => JSON.stringify(a) === JSON.stringify(b);

/** The output's unfinished run with the same params, if any. */
async function resumable(redis: Redis, okeys: OfflineKeys, running: string, params: PredictParams, log: Logger): Promise<{ runId: string; failed: boolean } | undefined> {
  const runId = await redis.get(running);
  if (runId === null) return undefined;
  // No record, or one that does not validate: nothing to resume (a new run replaces it).
  const record = await readRunRecord(redis, okeys, runId).catch(() => undefined);
  if (record === undefined || record.kind !== 'predict' || record.state === 'complete') return undefined;
  const theirs = (() => {
    try {
      return parsePredictParams(record.params, runId);
    } catch (err) {
      // A record we cannot read is not resumed: a new run replaces it.
      log.warn({ err, runId }, 'the output names an unfinished run whose params do not parse; starting a new run');
      return undefined;
    }
  })();
  return theirs !== undefined && sameRun(theirs, params) ? { runId, failed: record.state === 'failed' } : undefined;
}

/** Launches (or resumes) a distributed predict run: one BullMQ task per PredictTask of `plan` not done yet. */
export async function launchDistributedPredict(o: LaunchPredictOptions): Promise<LaunchedPredict> {
  const prefix = o.prefix ?? DEFAULT_PREFIX;
  const queue = o.queue ?? OFFLINE_QUEUE;
  const okeys = offlineKeys(prefix);
  const ttl = o.lockTtlMs ?? DEFAULT_PREDICT_LOCK_TTL_MS;
  const tasks = o.plan.tasks.length;
  if (tasks === 0) throw new ConfigError(`input "${printable(o.input)}": no rows to predict, no task to run`);
  o.plan.tasks.forEach((t, i) => {
    if (t.index !== i) throw new ConfigError(`the plan's task ${i} has index ${t.index}: tasks must be numbered 0…${tasks - 1}`);
  });
  let version = o.version;
  if (version === undefined) {
    if (o.modelRepo === undefined) throw new ConfigError(`model "${o.model}": give its version, or the repository to take the newest from (every worker must run the same one)`);
    version = (await new ModelRepository(o.modelRepo).resolve(o.model, undefined)).version;
  }
  const params: PredictParams = { input: o.input, output: o.output, model: { name: o.model, version }, nonFinite: o.nonFinite ?? 'reject', tasks, totalRows: o.plan.totalRows };
  const keys = outputKeys(prefix, o.output);
  const what = `output "${printable(o.output)}"`;
  const redis = await connectRedis(o.redis, o.redisOptions);
  try {
    const found = await resumable(redis, okeys, keys.running, params, o.logger);
    const runId = found?.runId ?? newRunId();
    const holder = await acquireLock(redis, keys.lock, runLockValue(runId), ttl);
    // A failed run is taken over by its relaunch, whoever still holds its lock for it.
    if (holder !== undefined && !(found?.failed === true && holder === runLockValue(runId) && (await claimLock(redis, keys.lock, holder, ttl)) === undefined)) {
      throw new InferqError(`${what}: a run is already in progress (held by ${holder}); at most one run per output folder at a time`, { retriable: true, code: 'BUSY' });
    }
    if (found === undefined) await redis.set(keys.running, runId);
    let done = new Set((await redis.smembers(okeys.done(runId))).map(Number));
    await launchRecord(redis, okeys, { runId, kind: 'predict', mode: 'queue', queue, params, units: tasks, tasks, totalRows: o.plan.totalRows, lockTtlMs: ttl, holds: what }, done.size);
    const base = { runId, resumed: found !== undefined, tasks, totalRows: o.plan.totalRows };
    if (done.size >= tasks) {
      if (await finishPredictOutput(o.output, tasks)) {
        await completeRun(redis, okeys, runId);
        await redis.del(keys.running);
        await releaseLock(redis, keys.lock, runLockValue(runId));
        return { ...base, tasksDone: tasks, enqueued: undefined, finalized: true, status: undefined };
      }
      // Parts counted done are gone: every task goes again (those whose part exists skip at once).
      await redis.del(okeys.done(runId));
      done = new Set();
    }
    const missing = o.plan.tasks.filter((t) => !done.has(t.index)).map((t) => t.index);
    const enqueued = await enqueueTasks(redis, queue, prefix, { kind: 'predict', run: runId, payload: (i) => o.plan.tasks[i] }, missing, found === undefined);
    o.logger.info({ runId, output: o.output, tasks, missing: missing.length, ...enqueued }, 'distributed predict run launched');
    let status: RunStatus | undefined;
    if (o.wait) {
      status = await waitForRun(redis, prefix, runId, predictUnitsDoneIn(prefix), { timeoutMs: o.timeoutMs, onProgress: o.onProgress, signal: o.signal });
      if (status.state === 'failed') throw new InferqError(`run ${runId} failed: ${status.error ?? 'no reason recorded'} (fix it, then launch again to resume)`, { code: 'INTERNAL' });
    }
    return { ...base, tasksDone: done.size, enqueued, finalized: false, status };
  } finally {
    redis.disconnect();
  }
}
