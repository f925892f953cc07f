/**
 * The Redis (BullMQ) worker loop.
 *
 * ```
 *  BullMQ Worker (concurrency N jobs in flight) ─► GET payload ─► decode envelope ─► job sinks allowed and writable?
 *        ▲                                                                                        │
 *        │                                               model pool ─► validate ─► batcher.submit ◄┘
 *        │ job completed (= ack) only after                                         │
 *        │ its reply is written and its rows are ◄── roll coordinator ◄── MULTI { XADD reply, mark "replied" } ◄┘
 *        │ durable; then DEL payload and run record
 *        └─ bad input / unknown model / expired deadline / refused sink: XADD dead letters + error reply,
 *           then UnrecoverableError (no retry); other errors are retried with the job's backoff and
 *           dead-lettered on the last attempt
 * ```
 *
 * A killed worker's jobs are moved back to the queue by BullMQ's stalled-job check
 * (lockDuration) and run by another worker. Each run of a job (its id and creation time)
 * has a record in Redis (redis-runs.ts): a job run again finds whether its reply went out
 * (then it neither replies again nor fails for its deadline) and which files hold its rows.
 * On shutdown, jobs that cannot finish by the deadline are handed back to the queue.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { UnrecoverableError, WaitingError, Worker } from 'bullmq';
import type { Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import { ClosedError, InferqError, InvalidInputError, SinkRefusedError, checkJobData, decodeEnvelope, jobSuffix, printable, redisKeys, sliceRows, unpackJobs } from '@inferq/shared';
import type { Envelope, JobData, RedisKeys } from '@inferq/shared';
import type { Logger } from '../logging.js';
import { ParquetSink } from '../sinks/parquet-sink.js';
import { RollAbandonedError, RollCoordinator } from '../sinks/roll-coordinator.js';
import { SinkSet } from '../sinks/sink-set.js';
import { inferEnvelope } from './infer.js';
import type { Inference } from './infer.js';
import { deadlineRace } from './deadline.js';
import { connectionFailure, describeRedis, rateLimitedErrorLog } from './redis-connection.js';
import { addDeadLetter, addReply } from './redis-replies.js';
import type { DeadLetter } from './redis-replies.js';
import { RedisRuns, execAll, runOf } from './redis-runs.js';
import { resolveRedisWorkerOptions } from './redis-options.js';
import type { RedisWorkerOptions, ResolvedRedisWorkerOptions } from './redis-options.js';

export type { RedisWorkerOptions } from './redis-options.js';

export interface RedisWorkerStats {
  readonly completed: number;
  readonly deadLettered: number;
  readonly retried: number;
  /** Jobs run again whose rows a published roll already held. */
  readonly alreadySunk: number;
  readonly rolls: number;
  /** Packed envelopes whose jobs were run one by one (one of them was bad or late). */
  readonly packsSplit: number;
  /** Jobs handed back to the queue unfinished at shutdown. */
  readonly handedBack: number;
}

export class RedisWorker {
  private readonly opts: ResolvedRedisWorkerOptions;
  private readonly keys: RedisKeys;
  private readonly redis: Redis;
  private readonly workerConnection: Redis;
  private worker: Worker | undefined;
  private closing: Promise<void> | undefined;
  private readonly counters = { completed: 0, deadLettered: 0, retried: 0, packsSplit: 0, handedBack: 0 };
  private readonly sinks: SinkSet;
  private readonly rolls: RollCoordinator | undefined;
  private readonly runs: RedisRuns;
  private readonly log: Logger;
  /** Settles when in-flight jobs must stop and be handed back (shutdown deadline, a fatal sink). */
  private handBack!: (reason: Error) => void;
  private readonly handingBack: Promise<Error>;
  private lastError: Error | undefined;

  constructor(options: RedisWorkerOptions) {
    this.opts = resolveRedisWorkerOptions(options);
    this.keys = redisKeys(this.opts.prefix, options.queue);
    this.redis = new Redis(options.redis, { maxRetriesPerRequest: null, ...options.client });
    this.workerConnection = this.redis.duplicate({ maxRetriesPerRequest: null });
    this.log = options.logger.child({ transport: 'redis', queue: options.queue });
    const onError = rateLimitedErrorLog(this.log, `redis ${describeRedis(this.redis)}`);
    for (const c of [this.redis, this.workerConnection]) {
      c.on('error', (err: Error) => {
        this.lastError = err;
        onError(err);
      });
    }
    this.runs = new RedisRuns(this.redis, this.keys);
    this.sinks = new SinkSet({
      defaults: options.sinks ?? [],
      allowJobSinksUnder: options.allowJobSinksUnder ?? [],
      open: options.openSink ?? ((uri) => new ParquetSink({ location: uri, logger: options.logger })),
    });
    this.rolls = this.sinks.active
      ? new RollCoordinator({
          sinks: this.sinks,
          journal: this.runs,
          group: `redis-${options.queue.replace(/[^A-Za-z0-9_.-]/g, '_')}-${randomBytes(4).toString('hex')}`,
          logger: this.log,
          maxWaiting: this.opts.concurrency,
          onFatal: (err) => options.onFatal?.(err),
        })
      : undefined;
    this.handingBack = new Promise<Error>((resolve) => (this.handBack = resolve));
  }

  get stats(): RedisWorkerStats {
    return { ...this.counters, alreadySunk: this.rolls?.stats.alreadySunk ?? 0, rolls: this.rolls?.stats.rolls ?? 0 };
  }

  /**
   * Checks the worker's sinks, connects and starts pulling jobs. Rejects with ConnectionError
   * when Redis cannot be reached within `connectTimeoutMs`.
   */
  async start(): Promise<void> {
    await this.sinks.probeDefaults();
    const worker = new Worker(this.opts.queue, (job: Job, token?: string) => this.process(job, token), {
      // BullMQ leaves a connection it was given open on close(); closed in doClose().
      connection: this.workerConnection,
      prefix: this.opts.prefix,
      concurrency: this.opts.concurrency,
      lockDuration: this.opts.lockDurationMs,
      stalledInterval: this.opts.stalledIntervalMs ?? Math.max(1000, Math.floor(this.opts.lockDurationMs / 2)),
      maxStalledCount: 10,
      name: `${hostname()}:${process.pid}`,
      autorun: false,
    });
    this.worker = worker;
    worker.on('completed', (job: Job) => {
      this.counters.completed++;
      const data = job.data as Partial<JobData>;
      const cleanup = this.redis.pipeline().del(this.keys.run(runOf(job)));
      if (typeof data.key === 'string') cleanup.del(data.key);
      cleanup.exec().catch((err: unknown) => this.log.warn({ err, jobId: printable(job.id ?? '') }, 'could not delete a payload key or run record (they expire by themselves)'));
    });
    worker.on('error', (err) => (this.lastError = err));
    const ready = worker.waitUntilReady();
    ready.catch(() => undefined);
    const outcome = await deadlineRace(ready, Date.now() + this.opts.connectTimeoutMs);
    if (outcome === 'deadline') throw connectionFailure(this.redis, this.lastError, this.opts.connectTimeoutMs);
    void worker.run().catch((err: unknown) => this.log.error({ err }, 'worker stopped'));
    this.log.info({ concurrency: this.opts.concurrency }, 'redis worker started');
  }

  /**
   * Stops pulling, lets in-flight jobs finish and be acknowledged, then closes. Whatever is
   * down, it returns by `timeoutMs`: jobs not finished by then are handed back to the queue
   * (or, with Redis unreachable, left to their lock's expiry), never acknowledged.
   */
  close(timeoutMs = 30_000): Promise<void> {
    this.closing ??= this.doClose(Date.now() + timeoutMs);
    return this.closing;
  }

  private async doClose(deadline: number): Promise<void> {
    // Keep the last part of the time for handing jobs back and closing connections.
    const soft = deadline - Math.min(2000, Math.max(0, deadline - Date.now()) / 4);
    const worker = this.worker;
    const closed = worker?.close() ?? Promise.resolve();
    closed.catch((err: unknown) => this.log.warn({ err }, 'worker close failed'));
    const drained = this.rolls?.drain(soft);
    drained?.catch(() => undefined);
    if ((await deadlineRace(closed, soft)) === 'deadline') {
      this.log.warn({ pendingRows: this.rolls?.pending ?? 0 }, 'in-flight jobs did not finish before the shutdown deadline; handing them back to the queue');
      this.rolls?.abandon(new ClosedError('the shutdown deadline passed'));
      this.handBack(new ClosedError('the shutdown deadline passed'));
      await deadlineRace(closed, deadline - 200);
      if (worker !== undefined) void worker.close(true).catch(() => undefined);
    }
    await deadlineRace(drained ?? Promise.resolve(), deadline - 200);
    for (const c of [this.workerConnection, this.redis]) {
      if ((await deadlineRace(c.quit(), Math.min(deadline, Date.now() + 500))) === 'deadline') c.disconnect();
    }
  }

  /** Runs a job; when the worker must stop first, hands it back to the queue unfinished. */
  private async process(job: Job, token?: string): Promise<{ rows: number }> {
    const work = this.handle(job);
    const outcome = await Promise.race([work.then((value) => ({ value }), (err: unknown) => ({ err })), this.handingBack.then((reason) => ({ err: reason }))]);
    if ('value' in outcome) return outcome.value;
    if (!(outcome.err instanceof RollAbandonedError) && !(outcome.err instanceof ClosedError && this.closing !== undefined)) throw outcome.err;
    work.catch(() => undefined);
    // Back to the wait list at once (not an attempt); with Redis gone, the lock expires and the stalled check does it.
    if ((await deadlineRace(job.moveToWait(token), Date.now() + 1000).catch(() => 'deadline' as const)) === 'deadline') return new Promise(() => undefined);
    this.counters.handedBack++;
    throw new WaitingError();
  }

  private async handle(job: Job): Promise<{ rows: number }> {
    const id = job.id ?? '';
    const run = runOf(job);
    // A first run has nothing recorded: skip the lookups (attemptsStarted counts retries, stalls and hand-backs).
    const rerun = job.attemptsStarted > 1;
    let envelope: Envelope | undefined;
    let replied = false;
    try {
      const data = checkJobData(job.data);
      if (typeof data === 'string') throw new InvalidInputError(`${data}${jobSuffix(id)}`, { jobId: id });
      if (data.bytes > this.opts.maxPayloadBytes) {
        throw new InvalidInputError(`payload of ${data.bytes} bytes exceeds the ${this.opts.maxPayloadBytes}-byte limit${jobSuffix(id)}`, { jobId: id, model: data.model });
      }
      envelope = decodeEnvelope(await this.payload(id, data));
      if (envelope.id !== id) throw new InvalidInputError(`envelope id "${printable(envelope.id)}" does not match job id "${printable(id)}"`, { jobId: id });
      // A job sink this worker may not (or cannot) write fails the job before it runs, not after its reply.
      await this.sinks.forJob(envelope.sinks, id);
      replied = rerun && (await this.runs.replied(run));
      if (data.bundle !== undefined || envelope.jobs !== undefined) {
        if (envelope.jobs?.length !== data.bundle) {
          throw new InvalidInputError(`job data says ${String(data.bundle)} packed jobs, the envelope holds ${envelope.jobs?.length ?? 'none'}${jobSuffix(id)}`, { jobId: id });
        }
        return await this.processPacked(job, envelope, replied, rerun);
      }
      const result = await this.infer(envelope, replied);
      if (envelope.replyTo !== undefined && !replied) await this.reply(run, [[envelope, result]]);
      replied ||= envelope.replyTo !== undefined;
      await this.sink(job, envelope, result, rerun);
      return { rows: result.rows };
    } catch (err) {
      if (err instanceof RollAbandonedError) throw err;
      if (this.shouldRetry(job, err)) {
        this.counters.retried++;
        this.log.warn({ err, jobId: printable(id), attempt: job.attemptsMade + 1 }, 'job failed; it will be retried');
        throw err;
      }
      // A pack that fails as a whole: each of its jobs gets its dead letter (and error reply).
      const parts = envelope?.jobs !== undefined ? unpackJobs(envelope).map((p) => ({ id: p.id, envelope: p })) : [{ id, envelope }];
      await this.deadLetter(parts.map((p) => ({ job, id: p.id, envelope: p.envelope, err, reply: !replied })));
      throw new UnrecoverableError((err as Error).message);
    }
  }

  /**
   * A packed envelope (the producer's linger): many small jobs whose rows travel as one
   * tensor. When every job is in time and the pack passes validation, it runs as one batcher
   * entry and its replies go out as one stream entry (`jobs` lists them; the SDK splits it).
   * Otherwise — a job past its deadline, or bad input such as a NaN in one job's row — its
   * jobs run one by one, so only the bad ones are dead-lettered.
   */
  private async processPacked(job: Job, envelope: Envelope, replied: boolean, rerun: boolean): Promise<{ rows: number }> {
    const now = Date.now();
    if (replied || envelope.jobs!.every((j) => j.deadline === undefined || j.deadline > now)) {
      let result: Inference | undefined;
      try {
        result = await this.infer({ ...envelope, deadline: undefined }, replied);
      } catch (err) {
        if (this.shouldRetry(job, err)) throw err;
      }
      if (result !== undefined) {
        if (envelope.replyTo !== undefined && !replied) await this.reply(runOf(job), [[envelope, result]]);
        let start = 0;
        await Promise.all(
          unpackJobs(envelope).map((part) => {
            const outputs = sliceRows(result.outputs, start, start + part.rows);
            start += part.rows;
            return this.sink(job, part, { ...result, outputs, rows: part.rows }, rerun);
          }),
        );
        return { rows: result.rows };
      }
    }
    this.counters.packsSplit++;
    return this.processEach(job, unpackJobs(envelope), replied, rerun);
  }

  /**
   * Runs a pack's jobs one by one: bad ones are dead-lettered alone; replies and dead letters
   * go out in one transaction before the pack is acknowledged. A run whose replies already
   * went out (with its dead letters, in that transaction) only completes its sinks.
   */
  private async processEach(job: Job, parts: readonly Envelope[], replied: boolean, rerun: boolean): Promise<{ rows: number }> {
    const settled = await Promise.allSettled(parts.map((env) => this.infer(env, replied)));
    const retriable = settled.find((s) => s.status === 'rejected' && this.shouldRetry(job, s.reason));
    if (retriable !== undefined) throw (retriable as PromiseRejectedResult).reason;
    const ok = settled.flatMap((s, i) => (s.status === 'fulfilled' ? [[parts[i]!, s.value] as [Envelope, Inference]] : []));
    if (!replied) {
      const failed = settled.flatMap((s, i) => (s.status === 'rejected' ? [{ job, id: parts[i]!.id, envelope: parts[i], err: s.reason as unknown }] : []));
      await this.reply(runOf(job), ok.filter(([env]) => env.replyTo !== undefined), failed);
    }
    await Promise.all(ok.map(([env, result]) => this.sink(job, env, result, rerun)));
    return { rows: ok.reduce((n, [, r]) => n + r.rows, 0) };
  }

  /** Writes replies (and dead letters) in one transaction with the run's "replied" mark. */
  private async reply(run: string, replies: readonly (readonly [Envelope, Inference])[], deadLetters: readonly DeadLetter[] = []): Promise<void> {
    if (replies.length === 0 && deadLetters.length === 0) return;
    const tx = this.redis.multi();
    for (const [env, result] of replies) addReply(tx, env, result, this.opts.replyMaxLen);
    for (const d of deadLetters) this.countDeadLetter(tx, d);
    this.runs.markReplied(tx, run);
    await execAll(tx);
  }

  private async deadLetter(letters: readonly DeadLetter[]): Promise<void> {
    const pipeline = this.redis.pipeline();
    for (const d of letters) this.countDeadLetter(pipeline, d);
    await execAll(pipeline);
  }

  private countDeadLetter(tx: Parameters<typeof addDeadLetter>[0], d: DeadLetter): void {
    this.counters.deadLettered++;
    this.log.warn({ jobId: printable(d.id), kind: d.err instanceof Error ? d.err.constructor.name : 'Error', reason: d.err instanceof Error ? d.err.message : String(d.err) }, 'job dead-lettered');
    addDeadLetter(tx, this.keys, d, this.opts.replyMaxLen);
  }

  /**
   * Puts a job's rows into its sinks and waits until they are durable. A job sink that
   * refuses them after the reply went out gets the job a dead letter (no error reply: the
   * caller already has its answer); the job is then done.
   */
  private async sink(job: Job, envelope: Envelope, result: Inference, rerun: boolean): Promise<void> {
    if (this.rolls === undefined) return;
    try {
      await this.rolls.write({ id: envelope.id, run: runOf(job), rerun, rowIds: envelope.rowIds, sinks: envelope.sinks }, { outputs: result.outputs, rows: result.rows, model: result.model.name, version: result.model.version });
    } catch (err) {
      if (!(err instanceof SinkRefusedError)) throw err;
      await this.deadLetter([{ job, id: envelope.id, envelope, err, reply: false }]);
    }
  }

  /** A run whose reply already went out is not failed for its deadline: it only completes its sinks. */
  private infer(envelope: Envelope, replied: boolean): Promise<Inference> {
    return inferEnvelope(this.opts.models, replied ? { ...envelope, deadline: undefined } : envelope, this.opts.nonFinite);
  }

  /** Whether BullMQ should run the job again (a retriable error, attempts left); handle() counts and logs it. */
  private shouldRetry(job: Job, err: unknown): boolean {
    const retriable = !(err instanceof InferqError) || err.retriable;
    const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    return retriable && !lastAttempt;
  }

  private async payload(id: string, data: JobData): Promise<Uint8Array> {
    if (data.b64 !== undefined) return new Uint8Array(Buffer.from(data.b64, 'base64'));
    const buf = await this.redis.getBuffer(data.key!);
    if (buf === null) throw new InvalidInputError(`payload key "${printable(data.key!)}" is missing (expired, or never written)${jobSuffix(id)}`, { jobId: id, model: data.model });
    if (buf.byteLength !== data.bytes) throw new InvalidInputError(`payload of job has ${buf.byteLength} bytes, job says ${data.bytes}${jobSuffix(id)}`, { jobId: id, model: data.model });
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  }
}

export type { RedisOptions };
