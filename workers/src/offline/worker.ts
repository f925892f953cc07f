/**
 * The worker side of distributed offline runs: takes tasks from the offline queue, one at a
 * time, and hands each to its kind (precompute, predict).
 *
 * ```
 *  job ─► parse (zod; id = <run>.<index>) ─► run record (zod) ─► complete? ack
 *     ─► claim the run's lock (renew it, or take it when free; another run holds it → BUSY)
 *     ─► kind.runTask (idempotent writes, units marked done) ─► every unit done?
 *        └► kind.finalize (guarded commit) ─► record complete ─► unlock ─► ack
 *  a failure: retriable → BullMQ retries it (backoff); otherwise, or on its last attempt, the
 *  task fails with its code and reason and so does the run (a relaunch retries it)
 * ```
 *
 * The task that completes a run is acknowledged only after the finalisation: a worker killed
 * during it leaves the job to BullMQ's stalled-job check, and the retry finalises. Jobs and
 * records are untrusted: every field is validated, and each kind checks paths and models
 * against what the worker was started with.
 */
import { hostname } from 'node:os';
import { UnrecoverableError, Worker } from 'bullmq';
import type { Job } from 'bullmq';
import type { Redis, RedisOptions } from 'ioredis';
import { DEFAULT_PREFIX, InferqError, printable } from '@inferq/shared';
import type { Logger } from '../logging.js';
import { connectRedis } from '../precompute/table-run.js';
import { claimLock, releaseLock } from './lock.js';
import type { SourceHealth } from '../sources/source.js';
import type { OfflineKindHandler, TaskContext } from './kind.js';
import { parseTask } from './queue.js';
import { OFFLINE_QUEUE, completeRun, failRun, offlineKeys, readRunRecord, touchRun } from './record.js';
import type { OfflineKeys, OfflineKind, RunRecord } from './record.js';

/** What the worker tells its metrics (ops/metrics.ts implements it); labels are bounded (kind, outcome, code). */
export interface OfflineObserver {
  task(outcome: 'done' | 'skipped' | 'retried' | 'failed', code: string, rows: number, seconds: number): void;
  /** Units done / units of the run this worker last worked on. */
  progress(fraction: number): void;
}

export interface OfflineMetrics {
  offline(kind: OfflineKind): OfflineObserver;
}

export interface OfflineWorkerOptions {
  readonly redis: string;
  readonly redisOptions?: RedisOptions | undefined;
  /** Key prefix of the queue and the run records. Default "inferq". */
  readonly prefix?: string | undefined;
  /** Default {@link OFFLINE_QUEUE}. */
  readonly queue?: string | undefined;
  readonly handlers: readonly OfflineKindHandler[];
  /**
   * How long a task's BullMQ lock lives without renewal (renewed every half of it): a worker
   * killed mid-task has its task given to another after at most this plus the stalled-check
   * interval (half of it). Default 30 s.
   */
  readonly lockDurationMs?: number | undefined;
  readonly logger: Logger;
  readonly metrics?: OfflineMetrics | undefined;
}

/** How often a task may stall (its worker died) before it fails: kills are expected, a task that kills every worker is not. */
const MAX_STALLED = 3;

export class OfflineWorker {
  private connection: Redis | undefined;
  private worker: Worker | undefined;
  private readonly keys: OfflineKeys;
  private readonly handlers: Map<OfflineKind, OfflineKindHandler>;
  private readonly abort = new AbortController();

  constructor(private readonly opts: OfflineWorkerOptions) {
    this.keys = offlineKeys(opts.prefix ?? DEFAULT_PREFIX);
    this.handlers = new Map(opts.handlers.map((h) => [h.kind, h]));
  }

  async start(): Promise<void> {
    this.connection = await connectRedis(this.opts.redis, { ...this.opts.redisOptions, maxRetriesPerRequest: null });
    const lockDuration = this.opts.lockDurationMs ?? 30_000;
    this.worker = new Worker(this.opts.queue ?? OFFLINE_QUEUE, (job: Job) => this.process(job), {
      connection: this.connection,
      prefix: this.opts.prefix ?? DEFAULT_PREFIX,
      // A job's processedBy names the process that took it.
      name: `${hostname()}:${process.pid}`,
      // One task at a time: a task's model already uses every CPU it was given.
      concurrency: 1,
      lockDuration,
      stalledInterval: Math.max(1000, Math.floor(lockDuration / 2)),
      maxStalledCount: MAX_STALLED,
      autorun: false,
    });
    this.worker.on('error', (err) => this.opts.logger.error({ err }, 'offline worker error'));
    this.worker.on('failed', (job) => this.failStalled(job));
    void this.worker.run().catch((err: unknown) => this.opts.logger.error({ err }, 'offline worker stopped'));
    await this.worker.waitUntilReady();
  }

  health(): SourceHealth {
    const status = this.connection?.status;
    return status === 'ready' ? { connected: true } : { connected: false, reason: `redis connection is ${status ?? 'not open'}` };
  }

  private async process(job: Job): Promise<{ rows: number } | { skipped: string }> {
    const started = performance.now();
    const redis = this.connection!;
    let kind: OfflineKind | undefined;
    let record: RunRecord | undefined;
    const log = this.opts.logger.child({ task: printable(job.id ?? '?') });
    try {
      const task = parseTask(job.data, job.id);
      kind = task.kind;
      record = await readRunRecord(redis, this.keys, task.run);
      if (record.kind !== task.kind) throw new InferqError(`task ${job.id}: a ${task.kind} task of a ${record.kind} run`, { code: 'BAD_JOB_DATA' });
      if (task.index >= record.tasks) throw new InferqError(`task ${job.id}: the run has ${record.tasks} tasks`, { code: 'BAD_JOB_DATA' });
      const handler = this.handlers.get(task.kind);
      if (handler === undefined) throw new InferqError(`task ${job.id}: this worker runs no ${task.kind} tasks`, { code: 'UNSUPPORTED' });
      if (record.state === 'complete') {
        this.observe(kind, 'skipped', '', 0, started);
        return { skipped: `run ${record.runId} is complete` };
      }
      // Aborted when the worker stops past its deadline, or when another run takes the lock mid-task.
      const held = new AbortController();
      const ctx: TaskContext = { record, index: task.index, payload: task.payload, redis, signal: AbortSignal.any([this.abort.signal, held.signal]), logger: log.child({ run: record.runId, kind: task.kind }) };
      const rows = await this.runHeld(handler, ctx, held);
      this.observe(kind, 'done', '', rows, started);
      return { rows };
    } catch (err) {
      // Our errors say whether a retry can help; anything else (a dropped connection) gets the job's attempts.
      const final = (err instanceof InferqError && !err.retriable) || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      const code = err instanceof InferqError ? err.code : 'INTERNAL';
      const reason = printable(err instanceof Error ? err.message : String(err), 1000);
      if (kind !== undefined) this.observe(kind, final ? 'failed' : 'retried', code, 0, started);
      if (!final) {
        log.warn({ code, reason, attempt: job.attemptsMade + 1 }, 'offline task failed; it will be retried');
        throw err;
      }
      log.error({ code, reason, run: record?.runId }, 'offline task failed');
      if (record !== undefined) await failRun(redis, this.keys, record.runId, code, `task ${job.id}: ${reason}`).catch((e: unknown) => log.warn({ err: e }, 'could not mark the run failed'));
      throw new UnrecoverableError(`${code}: ${reason}`);
    }
  }

  /**
   * A task that stalled more than MAX_STALLED times is failed by BullMQ without calling process():
   * its run is failed here, so that `--wait` and `status` see it end.
   */
  private failStalled(job: Job | undefined): void {
    if (job === undefined || typeof job.deferredFailure !== 'string' || job.deferredFailure === '') return;
    const log = this.opts.logger.child({ task: printable(job.id ?? '?') });
    let run: string;
    try {
      run = parseTask(job.data, job.id).run;
    } catch (err) {
      log.warn({ err }, 'a stalled offline task with data that is not a task failed: no run to mark');
      return;
    }
    log.error({ run, reason: job.deferredFailure }, 'offline task failed: it stalled too often (its worker stopped while running it)');
    void failRun(this.connection!, this.keys, run, 'INTERNAL', `task ${job.id}: ${job.deferredFailure} (its worker stopped ${MAX_STALLED} times while running it)`).catch((err: unknown) =>
      log.warn({ err }, 'could not mark the run failed'),
    );
  }

  /** Runs a task while holding (and renewing) the run's lock, then finalises the run when it was the last. */
  private async runHeld(handler: OfflineKindHandler, ctx: TaskContext, held: AbortController): Promise<number> {
    const { record, redis } = ctx;
    const lock = await handler.lockOf(record);
    const claim = async (): Promise<void> => {
      const holder = await claimLock(redis, lock.key, lock.value, record.lockTtlMs);
      if (holder !== undefined) throw new InferqError(`run ${record.runId}: ${lock.what} is held by ${printable(holder)} (another run took it: this one was superseded)`, { code: 'BUSY' });
    };
    await claim();
    const renew = setInterval(
      () =>
        void claim().catch((err: unknown) => {
          if (err instanceof InferqError && err.code === 'BUSY') held.abort(err);
          else ctx.logger.warn({ err }, 'could not renew the run lock');
        }),
      Math.max(500, Math.floor(record.lockTtlMs / 3)),
    );
    let rows: number;
    try {
      ({ rows } = await handler.runTask(ctx));
      ctx.signal.throwIfAborted();
      await touchRun(redis, this.keys, record.runId);
      const progress = await handler.progress(ctx);
      const done = await handler.unitsDone(record, redis);
      this.opts.metrics?.offline(record.kind).progress(progress === 'pending' ? (record.units === 0 ? 1 : done / record.units) : 1);
      if (progress === 'pending') return rows;
      if (progress === 'done') {
        await claim(); // still this run's: a run that lost its lock since the last renewal must not publish
        const own = await connectRedis(this.opts.redis, this.opts.redisOptions);
        try {
          await handler.finalize(ctx, own);
        } finally {
          own.disconnect();
        }
      }
    } finally {
      clearInterval(renew);
    }
    await completeRun(redis, this.keys, record.runId);
    await releaseLock(redis, lock.key, lock.value);
    ctx.logger.info({ run: record.runId }, 'offline run complete');
    return rows;
  }

  private observe(kind: OfflineKind, outcome: 'done' | 'skipped' | 'retried' | 'failed', code: string, rows: number, started: number): void {
    this.opts.metrics?.offline(kind).task(outcome, code, rows, (performance.now() - started) / 1000);
  }

  async close(timeoutMs = 30_000): Promise<void> {
    if (this.worker !== undefined) {
      let timer: NodeJS.Timeout | undefined;
      const closing = this.worker.close();
      // Past the deadline the task in flight is abandoned (its job is handed to another worker by the stalled check).
      await Promise.race([closing, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
      clearTimeout(timer);
      this.abort.abort(new InferqError('the worker is stopping', { code: 'CLOSED', retriable: true }));
    }
    for (const h of this.handlers.values()) await h.close().catch((err: unknown) => this.opts.logger.warn({ err, kind: h.kind }, 'closing an offline kind failed'));
    await this.connection?.quit().catch(() => this.connection?.disconnect());
  }
}
