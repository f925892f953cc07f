/**
 * The Redis (BullMQ) worker loop.
 *
 * ```
 *  BullMQ Worker (concurrency N jobs in flight) ─► GET payload ─► decode envelope ─► model pool ─► validate
 *        ▲                                                                                        │
 *        │ job completed (= ack) only after ◄── XADD reply (MAXLEN ~) ◄── outputs ◄── batcher.submit ◄┘
 *        │ the reply is written; then DEL payload
 *        └─ bad input / unknown model / expired deadline: XADD dead letters + error reply, then
 *           UnrecoverableError (no retry); other errors are retried with the job's backoff and
 *           dead-lettered on the last attempt
 * ```
 *
 * A killed worker's jobs are moved back to the queue by BullMQ's stalled-job check
 * (lockDuration) and run by another worker; replies are keyed by job id, so a replay
 * writes the same reply again instead of losing one.
 */
import { hostname } from 'node:os';
import { Worker, UnrecoverableError } from 'bullmq';
import type { Job } from 'bullmq';
import { Redis } from 'ioredis';
import {
  DEFAULT_PREFIX,
  DeadlineExceededError,
  InferqError,
  InvalidInputError,
  REPLY_FIELDS,
  checkJobData,
  decodeEnvelope,
  encodeEnvelope,
  jobSuffix,
  redisKeys,
  validateInputs,
} from '@inferq/shared';
import type { Envelope, JobData, NonFinitePolicy, RedisKeys } from '@inferq/shared';
import type { Logger } from '../logging.js';
import type { ModelPool } from '../models/model-pool.js';

export interface RedisWorkerOptions {
  /** Redis URL. */
  readonly redis: string;
  readonly queue: string;
  /** Key prefix. Default "inferq". */
  readonly prefix?: string;
  readonly models: ModelPool;
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
}

export interface RedisWorkerStats {
  readonly completed: number;
  readonly deadLettered: number;
  readonly retried: number;
}

export class RedisWorker {
  private readonly opts: RedisWorkerOptions;
  private readonly keys: RedisKeys;
  private readonly redis: Redis;
  private readonly workerConnection: Redis;
  private worker: Worker | undefined;
  private closing: Promise<void> | undefined;
  private readonly counters = { completed: 0, deadLettered: 0, retried: 0 };
  private readonly log: Logger;

  constructor(options: RedisWorkerOptions) {
    this.opts = options;
    this.keys = redisKeys(options.prefix ?? DEFAULT_PREFIX, options.queue);
    this.redis = new Redis(options.redis, { maxRetriesPerRequest: null });
    this.workerConnection = this.redis.duplicate({ maxRetriesPerRequest: null });
    this.log = options.logger.child({ transport: 'redis', queue: options.queue });
  }

  get stats(): RedisWorkerStats {
    return { ...this.counters };
  }

  /** Starts pulling jobs. Resolves once the worker is connected and running. */
  async start(): Promise<void> {
    const lockDuration = this.opts.lockDurationMs ?? 30_000;
    const worker = new Worker(this.opts.queue, (job: Job) => this.process(job), {
      // BullMQ leaves a connection it was given open on close(); closed in doClose().
      connection: this.workerConnection,
      prefix: this.opts.prefix ?? DEFAULT_PREFIX,
      concurrency: this.opts.concurrency ?? 256,
      lockDuration,
      stalledInterval: this.opts.stalledIntervalMs ?? Math.max(1000, Math.floor(lockDuration / 2)),
      maxStalledCount: 10,
      name: `${hostname()}:${process.pid}`,
      autorun: false,
    });
    this.worker = worker;
    worker.on('completed', (job: Job) => {
      this.counters.completed++;
      const data = job.data as Partial<JobData>;
      if (typeof data.key === 'string') {
        this.redis.del(data.key).catch((err: unknown) => this.log.warn({ err, jobId: job.id }, 'could not delete a payload key (it expires by itself)'));
      }
    });
    worker.on('error', (err) => this.log.error({ err }, 'worker error'));
    void worker.run().catch((err: unknown) => this.log.error({ err }, 'worker stopped'));
    await worker.waitUntilReady();
    this.log.info({ concurrency: this.opts.concurrency ?? 256 }, 'redis worker started');
  }

  /** Stops pulling, lets in-flight jobs finish (acked), then closes; after `timeoutMs` it stops waiting. */
  close(timeoutMs = 30_000): Promise<void> {
    this.closing ??= this.doClose(timeoutMs);
    return this.closing;
  }

  private async doClose(timeoutMs: number): Promise<void> {
    const worker = this.worker;
    if (worker !== undefined) {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), timeoutMs);
      });
      const outcome = await Promise.race([worker.close().then(() => 'closed' as const), deadline]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        this.log.warn({ timeoutMs }, 'in-flight jobs did not finish in time; their locks expire and another worker runs them');
        await worker.close(true).catch((err: unknown) => this.log.error({ err }, 'forced close failed'));
      }
    }
    for (const c of [this.workerConnection, this.redis]) await c.quit().catch(() => c.disconnect());
  }

  private async process(job: Job): Promise<{ rows: number }> {
    const id = job.id ?? '';
    let envelope: Envelope | undefined;
    try {
      const data = checkJobData(job.data);
      if (typeof data === 'string') throw new InvalidInputError(`${data}${jobSuffix(id)}`, { jobId: id });
      if (data.bytes > (this.opts.maxPayloadBytes ?? 256 * 1024 * 1024)) {
        throw new InvalidInputError(`payload of ${data.bytes} bytes exceeds the ${this.opts.maxPayloadBytes ?? 256 * 1024 * 1024}-byte limit${jobSuffix(id)}`, { jobId: id, model: data.model });
      }
      const bytes = await this.payload(id, data);
      envelope = decodeEnvelope(bytes);
      if (envelope.id !== id) throw new InvalidInputError(`envelope id "${envelope.id}" does not match job id "${id}"`, { jobId: id });
      const model = await this.opts.models.get(envelope.model, envelope.version);
      const rows = validateInputs(envelope.tensors, model.inputs, { jobId: id, model: model.name, version: model.version, nonFinite: this.opts.nonFinite ?? 'reject' });
      if (envelope.deadline !== undefined && envelope.deadline <= Date.now()) {
        throw new DeadlineExceededError(`job deadline passed ${Date.now() - envelope.deadline} ms before it started${jobSuffix(id)}`, { jobId: id, model: model.name });
      }
      const outputs = await model.batcher.submit({ id, tensors: envelope.tensors, rows, deadline: envelope.deadline });
      if (envelope.replyTo !== undefined) {
        const result = encodeEnvelope({ id, model: model.name, version: model.version, rowIds: envelope.rowIds }, outputs);
        await this.reply(envelope.replyTo, id, ['status', 'ok', 'env', Buffer.from(result.buffer, result.byteOffset, result.byteLength)]);
      }
      return { rows };
    } catch (err) {
      const retriable = !(err instanceof InferqError) || err.retriable;
      const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      if (retriable && !lastAttempt) {
        this.counters.retried++;
        this.log.warn({ err, jobId: id, attempt: job.attemptsMade + 1 }, 'job failed; it will be retried');
        throw err;
      }
      await this.deadLetter(job, envelope, err);
      throw new UnrecoverableError((err as Error).message);
    }
  }

  private async payload(id: string, data: JobData): Promise<Uint8Array> {
    if (data.b64 !== undefined) return new Uint8Array(Buffer.from(data.b64, 'base64'));
    const buf = await this.redis.getBuffer(data.key!);
    if (buf === null) throw new InvalidInputError(`payload key "${data.key}" is missing (expired, or never written)${jobSuffix(id)}`, { jobId: id, model: data.model });
    if (buf.byteLength !== data.bytes) throw new InvalidInputError(`payload of job has ${buf.byteLength} bytes, job says ${data.bytes}${jobSuffix(id)}`, { jobId: id, model: data.model });
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  private async reply(stream: string, id: string, fields: (string | Buffer)[]): Promise<void> {
    await this.redis.xadd(stream, 'MAXLEN', '~', String(this.opts.replyMaxLen ?? 100_000), '*', REPLY_FIELDS.id, id, ...fields);
  }

  /** Writes the dead letter (and an error reply when the caller waits for one) before the job is failed. */
  private async deadLetter(job: Job, envelope: Envelope | undefined, err: unknown): Promise<void> {
    const id = job.id ?? '';
    const message = err instanceof Error ? err.message : String(err);
    const kind = err instanceof Error ? err.constructor.name : 'Error';
    const data = (typeof job.data === 'object' && job.data !== null ? job.data : {}) as Partial<JobData>;
    this.counters.deadLettered++;
    this.log.warn({ jobId: id, kind, reason: message }, 'job dead-lettered');
    await this.redis.xadd(
      this.keys.deadLetters,
      'MAXLEN', '~', '1000000',
      '*',
      'id', id,
      'reason', message,
      'kind', kind,
      'model', String(envelope?.model ?? data.model ?? ''),
      'version', String(envelope?.version ?? data.version ?? ''),
      'attempts', String(job.attemptsMade + 1),
      'payloadKey', String(data.key ?? ''),
      'ts', String(Date.now()),
    );
    if (envelope?.replyTo !== undefined) {
      await this.reply(envelope.replyTo, id, ['status', 'error', 'error', message, 'kind', kind, 'model', envelope.model]);
    }
  }
}
