/**
 * Jobs from a Redis queue (BullMQ).
 *
 * ```
 *  BullMQ Worker (concurrency N jobs in flight) ─► Delivery (payload: GET key / inline) ─► pipeline
 *        ▲                                                                                   │
 *        └── outcome: done → completed (then DEL payload and run record)    retry → BullMQ backoff
 *                     failed → UnrecoverableError (its dead letter is written)  handBack → moveToWait
 * ```
 *
 * A killed worker's jobs are moved back to the queue by BullMQ's stalled-job check
 * (lockDuration) and run by another worker. Each run of a job (its id and creation time)
 * has a record in Redis (runs.ts): a job run again finds whether its reply went out and
 * which files hold its rows. On close, jobs that cannot finish by the deadline are handed
 * back to the wait list (with Redis gone, their lock expires instead).
 */
import { hostname } from 'node:os';
import { UnrecoverableError, WaitingError, Worker } from 'bullmq';
import type { Job } from 'bullmq';
import { Redis } from 'ioredis';
import { ClosedError, InvalidInputError, jobSuffix, printable, redisKeys } from '@inferq/shared';
import type { Envelope, RedisKeys } from '@inferq/shared';
import { deadlineRace } from '../../deadline.js';
import type { Logger } from '../../logging.js';
import type { Delivery, Handler, Outcome, Source, SourceDepth, SourceHealth } from '../source.js';
import { connectionFailure, describeRedis, rateLimitedErrorLog } from './connection.js';
import { queueCounts } from './counts.js';
import { controlChannel, decodeControl, resolveRedisSourceOptions } from './options.js';
import type { ControlCommand, RedisSourceOptions, ResolvedRedisSourceOptions } from './options.js';
import { jobData, loadPayload } from './payload.js';
import { PayloadReader } from './payload-reader.js';
import { RedisReplies } from './replies.js';
import { RedisRuns, runOf } from './runs.js';

export class RedisSource implements Source {
  readonly name = 'redis';
  readonly replies: RedisReplies;
  readonly journal: RedisRuns;
  readonly concurrency: number;
  private readonly opts: ResolvedRedisSourceOptions;
  private readonly keys: RedisKeys;
  private readonly redis: Redis;
  private readonly payloads: PayloadReader;
  private readonly workerConnection: Redis;
  private readonly log: Logger;
  private worker: Worker | undefined;
  private control: Redis | undefined;
  private handler: Handler | undefined;
  private lastError: Error | undefined;
  private running = false;
  private readonly counters = { returned: 0 };
  /** Settles when in-flight jobs must stop and be handed back (the close deadline). */
  private handBack!: (reason: Error) => void;
  private readonly handingBack: Promise<Outcome>;

  constructor(options: RedisSourceOptions) {
    this.opts = resolveRedisSourceOptions(options);
    this.keys = redisKeys(this.opts.prefix, this.opts.queue);
    this.concurrency = this.opts.concurrency;
    this.redis =
      typeof options.redis === 'string'
        ? new Redis(options.redis, { maxRetriesPerRequest: null, ...options.client })
        : options.redis.duplicate({ maxRetriesPerRequest: null, ...options.client });
    this.workerConnection = this.redis.duplicate({ maxRetriesPerRequest: null });
    this.payloads = new PayloadReader(this.redis.options, { maxBytes: this.opts.maxPayloadBytes, connectTimeoutMs: this.opts.connectTimeoutMs });
    this.log = options.logger.child({ transport: 'redis', queue: this.opts.queue });
    const onError = rateLimitedErrorLog(this.log, `redis ${describeRedis(this.redis)}`);
    for (const c of [this.redis, this.workerConnection]) {
      c.on('error', (err: Error) => {
        this.lastError = err;
        onError(err);
      });
    }
    this.journal = new RedisRuns(this.redis, this.keys, this.log);
    this.replies = new RedisReplies(this.redis, this.keys, this.journal, this.opts.replyMaxLen, { ttlSeconds: this.opts.deadLetterTtlSeconds });
    this.handingBack = new Promise<Outcome>((resolve) => (this.handBack = (err) => resolve({ kind: 'handBack', err })));
  }

  stats(): Record<string, number> {
    return { ...this.counters };
  }

  /** Connected while both connections are ready (ioredis reconnects by itself; meanwhile the worker takes nothing). */
  health(): SourceHealth {
    const down = [this.redis, this.workerConnection].find((c) => c.status !== 'ready');
    if (down === undefined) return { connected: true };
    const why = this.lastError === undefined ? '' : `: ${this.lastError.message}`;
    return { connected: false, reason: `redis ${describeRedis(down)} is ${down.status}${why}` };
  }

  /** The queue's jobs by state and its dead letters (BullMQ's counts). */
  async depth(): Promise<SourceDepth | undefined> {
    if (!this.running) return undefined;
    const counts = await queueCounts(this.redis, this.opts.prefix, this.opts.queue);
    return { kind: 'queue', transport: this.name, queue: this.opts.queue, jobs: counts.jobs, deadLetters: counts.deadLetters };
  }

  /** Connects and starts pulling jobs; rejects with ConnectionError when Redis does not answer within `connectTimeoutMs`. */
  async start(handler: Handler): Promise<void> {
    this.handler = handler;
    const worker = new Worker(this.opts.queue, (job: Job, token?: string) => this.process(job, token), {
      // BullMQ leaves a connection it was given open on close(); closed in close().
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
      const data = job.data as { key?: unknown };
      const cleanup = this.redis.pipeline().del(this.keys.run(runOf(job)));
      if (typeof data.key === 'string' && data.key.startsWith(this.keys.payloadPrefix)) cleanup.del(data.key);
      cleanup.exec().catch((err: unknown) => this.log.warn({ err, jobId: printable(job.id ?? '') }, 'could not delete a payload key or run record (they expire by themselves)'));
    });
    worker.on('error', (err) => (this.lastError = err));
    const ready = worker.waitUntilReady();
    ready.catch(() => undefined);
    if ((await deadlineRace(ready, Date.now() + this.opts.connectTimeoutMs)) === 'deadline') throw connectionFailure(this.redis, this.lastError, this.opts.connectTimeoutMs);
    if (this.opts.onControl !== undefined) await this.subscribeControl(this.opts.onControl);
    void worker.run().catch((err: unknown) => this.log.error({ err }, 'worker stopped'));
    this.running = true;
    this.log.info({ concurrency: this.opts.concurrency }, 'redis source started');
  }

  /**
   * Stops pulling and lets in-flight jobs finish; at the deadline hands the rest back to the
   * queue (or, with Redis unreachable, leaves them to their lock's expiry). Never acknowledges
   * what is not done. Resolves by `deadline` whatever is down.
   */
  async close(deadline: number): Promise<void> {
    this.running = false;
    // Keep the last part of the time for handing jobs back and closing connections.
    const soft = deadline - Math.min(2000, Math.max(0, deadline - Date.now()) / 4);
    const worker = this.worker;
    const closed = worker?.close() ?? Promise.resolve();
    closed.catch((err: unknown) => this.log.warn({ err }, 'worker close failed'));
    if ((await deadlineRace(closed, soft)) === 'deadline') {
      this.log.warn('in-flight jobs did not finish before the shutdown deadline; handing them back to the queue');
      this.handBack(new ClosedError('the shutdown deadline passed'));
      await deadlineRace(closed, deadline - 200);
      if (worker !== undefined) void worker.close(true).catch(() => undefined);
    }
    this.payloads.close();
    for (const c of [...(this.control === undefined ? [] : [this.control]), this.workerConnection, this.redis]) {
      if ((await deadlineRace(c.quit(), Math.min(deadline, Date.now() + 500))) === 'deadline') c.disconnect();
    }
  }

  /** Listens for control messages (a subscriber connection of its own: one in subscribe mode takes no other command). */
  private async subscribeControl(onControl: (command: ControlCommand) => void): Promise<void> {
    const channel = controlChannel(this.opts.prefix, this.opts.queue);
    const sub = this.redis.duplicate();
    this.control = sub;
    sub.on('error', (err: Error) => (this.lastError = err));
    sub.on('message', (ch: string, message: string) => {
      if (ch !== channel) return;
      const command = decodeControl(message);
      if (command === undefined) {
        this.log.warn({ channel, message: printable(message.slice(0, 100)) }, 'ignored a control message that is not {"command":"reload"}');
        return;
      }
      this.log.info({ channel, command }, 'control message');
      onControl(command);
    });
    await sub.subscribe(channel);
  }

  /** BullMQ's processor: a delivery to the pipeline, its outcome to BullMQ. */
  private async process(job: Job, token?: string): Promise<{ rows: number }> {
    const outcome = await Promise.race([this.handler!(this.delivery(job)), this.handingBack]);
    switch (outcome.kind) {
      case 'done':
        return { rows: outcome.rows };
      case 'retry':
        throw outcome.err; // BullMQ waits the job's own backoff
      case 'failed':
        throw new UnrecoverableError(outcome.err instanceof Error ? outcome.err.message : String(outcome.err));
      case 'handBack':
        // Back to the wait list at once (not an attempt); with Redis gone, the lock expires and the stalled check does it.
        if ((await deadlineRace(job.moveToWait(token), Date.now() + 1000).catch(() => 'deadline' as const)) === 'deadline') return new Promise(() => undefined);
        this.counters.returned++;
        throw new WaitingError();
    }
  }

  private delivery(job: Job): Delivery {
    const id = job.id ?? '';
    const run = runOf(job);
    // A first run has nothing recorded: attemptsStarted counts retries, stalls and hand-backs.
    const rerun = job.attemptsStarted > 1;
    const data = (typeof job.data === 'object' && job.data !== null ? job.data : {}) as { model?: unknown; version?: unknown };
    return {
      id,
      expectedId: id,
      run,
      rerun,
      attempt: job.attemptsMade + 1,
      maxAttempts: job.opts.attempts ?? 1,
      position: undefined,
      enqueuedAt: job.timestamp,
      hints: { model: typeof data.model === 'string' ? data.model : undefined, version: typeof data.version === 'string' ? data.version : undefined },
      payload: () => loadPayload(this.payloads, this.keys, job, this.opts.maxPayloadBytes),
      answered: async () => (rerun && (await this.journal.replied(run)) ? 'yes' : 'no'),
      deadLetter: (letters) => this.replies.deadLetter(job, letters),
      check: (envelope) => checkBundle(job, envelope),
    };
  }
}

/** A pack's job data counts its jobs: it must agree with the envelope. */
function checkBundle(job: Job, envelope: Envelope): void {
  const bundle = jobData(job).bundle;
  if (bundle === undefined && envelope.jobs === undefined) return;
  if (envelope.jobs?.length !== bundle) {
    throw new InvalidInputError(`job data says ${String(bundle)} packed jobs, the envelope holds ${envelope.jobs?.length ?? 'none'}${jobSuffix(job.id ?? '')}`, { jobId: job.id, code: 'BAD_JOB_DATA' });
  }
}
