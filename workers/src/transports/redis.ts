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
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Worker, UnrecoverableError } from 'bullmq';
import type { Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { ChainableCommander, RedisOptions } from 'ioredis';
import {
  DEFAULT_PREFIX,
  InferqError,
  InvalidInputError,
  REPLY_FIELDS,
  checkJobData,
  decodeEnvelope,
  encodeEnvelope,
  jobSuffix,
  redisKeys,
  sliceRows,
  unpackJobs,
} from '@inferq/shared';
import type { Envelope, JobData, NonFinitePolicy, RedisKeys } from '@inferq/shared';
import type { Logger } from '../logging.js';
import type { ModelPool } from '../models/model-pool.js';
import { ParquetSink } from '../sinks/parquet-sink.js';
import { SinkSet } from '../sinks/sink-set.js';
import { inferEnvelope } from './infer.js';
import type { Inference } from './infer.js';

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
  /**
   * Parquet sinks every result is written to. A job is completed only after the roll
   * holding its rows is published; before a roll is written, the files it will write are
   * recorded under each of its jobs (`<prefix>:<queue>:sunk:<job id>`), so a job run
   * again after a crash finds its rows already written (and is not written twice), or
   * finds a roll the crash left half-written (whose files are deleted and written again).
   */
  readonly sinks?: readonly ParquetSink[];
  /**
   * Folders under which a job may name sinks of its own (`enqueue(…, { sinks })`); its rows
   * then go to those too. A job naming any other folder is dead-lettered. Default: none.
   */
  readonly allowJobSinksUnder?: readonly string[];
  /** Opens a job's sink folder (the CLI passes its roll settings). Default: a ParquetSink with default rolls. */
  readonly openSink?: (uri: string) => ParquetSink;
}

export interface RedisWorkerStats {
  readonly completed: number;
  readonly deadLettered: number;
  readonly retried: number;
  /** Jobs run again whose rows a published roll already held. */
  readonly alreadySunk: number;
  readonly rolls: number;
  /** Packed envelopes whose jobs were run one by one (one of them was bad or late). */
  readonly packsSplit: number;
}

export class RedisWorker {
  private readonly opts: RedisWorkerOptions;
  private readonly keys: RedisKeys;
  private readonly redis: Redis;
  private readonly workerConnection: Redis;
  private worker: Worker | undefined;
  private closing: Promise<void> | undefined;
  private readonly counters = { completed: 0, deadLettered: 0, retried: 0, alreadySunk: 0, rolls: 0, packsSplit: 0 };
  private readonly sinks: SinkSet;
  /** This process's sink group: roll files are named after it and a sequence number per job. */
  private readonly sinkGroup: string;
  private seq = 0;
  private rollWaiters: { seq: number; resolve: () => void }[] = [];
  private rolling: Promise<void> | undefined;
  private rollTimer: NodeJS.Timeout | undefined;
  private draining = false;
  private readonly log: Logger;

  constructor(options: RedisWorkerOptions) {
    this.opts = options;
    this.keys = redisKeys(options.prefix ?? DEFAULT_PREFIX, options.queue);
    this.redis = new Redis(options.redis, { maxRetriesPerRequest: null, ...options.client });
    this.workerConnection = this.redis.duplicate({ maxRetriesPerRequest: null });
    this.log = options.logger.child({ transport: 'redis', queue: options.queue });
    this.sinks = new SinkSet({
      defaults: options.sinks ?? [],
      allowJobSinksUnder: options.allowJobSinksUnder ?? [],
      open: options.openSink ?? ((uri) => new ParquetSink({ location: uri, logger: options.logger })),
    });
    this.sinkGroup = `redis-${options.queue}-${randomBytes(4).toString('hex')}`;
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
    if (this.sinks.active) {
      this.rollTimer = setInterval(() => this.maybeRoll(), 100);
      this.rollTimer.unref();
    }
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
    // In-flight jobs wait for their roll: from now on every buffered row rolls at once.
    this.draining = true;
    this.maybeRoll();
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
    clearInterval(this.rollTimer);
    await this.rolling;
    for (const c of [this.workerConnection, this.redis]) await c.quit().catch(() => c.disconnect());
  }

  private async process(job: Job): Promise<{ rows: number }> {
    const id = job.id ?? '';
    let envelope: Envelope | undefined;
    try {
      const data = checkJobData(job.data);
      if (typeof data === 'string') throw new InvalidInputError(`${data}${jobSuffix(id)}`, { jobId: id });
      const limit = this.opts.maxPayloadBytes ?? 256 * 1024 * 1024;
      if (data.bytes > limit) {
        throw new InvalidInputError(`payload of ${data.bytes} bytes exceeds the ${limit}-byte limit${jobSuffix(id)}`, { jobId: id, model: data.model });
      }
      const bytes = await this.payload(id, data);
      envelope = decodeEnvelope(bytes);
      if (envelope.id !== id) throw new InvalidInputError(`envelope id "${envelope.id}" does not match job id "${id}"`, { jobId: id });
      // A job sink this worker may not write to fails the job before it runs (not after its reply).
      for (const spec of envelope.sinks ?? []) this.sinks.check(spec, id);
      if (data.bundle !== undefined || envelope.jobs !== undefined) {
        if (envelope.jobs?.length !== data.bundle) {
          throw new InvalidInputError(`job data says ${String(data.bundle)} packed jobs, the envelope holds ${envelope.jobs?.length ?? 'none'}${jobSuffix(id)}`, { jobId: id });
        }
        return await this.processPacked(job, envelope);
      }
      const result = await this.infer(envelope);
      if (envelope.replyTo !== undefined) {
        const pipeline = this.redis.pipeline();
        this.addReply(pipeline, envelope, result);
        await execAll(pipeline);
      }
      await this.sink(envelope, result);
      return { rows: result.rows };
    } catch (err) {
      if (this.shouldRetry(job, err)) {
        this.counters.retried++;
        this.log.warn({ err, jobId: job.id, attempt: job.attemptsMade + 1 }, 'job failed; it will be retried');
        throw err;
      }
      const pipeline = this.redis.pipeline();
      // A pack that fails as a whole: each of its jobs gets its dead letter (and error reply).
      if (envelope?.jobs !== undefined) for (const part of unpackJobs(envelope)) this.addDeadLetter(pipeline, job, part.id, part, err);
      else this.addDeadLetter(pipeline, job, id, envelope, err);
      await execAll(pipeline);
      throw new UnrecoverableError((err as Error).message);
    }
  }

  /**
   * A packed envelope (the producer's linger): many small jobs whose rows travel as one
   * tensor. When every job is in time and the pack passes validation, it runs as one batcher
   * entry and its replies go out as one stream entry (`jobs` lists them; the SDK splits it).
   * Otherwise — a job past its deadline, or bad input such as a NaN in one job's row — its
   * jobs run one by one, so only the bad ones are dead-lettered. A retriable failure retries
   * the whole pack (its good replies may then be written twice: at least once, correlated
   * by job id).
   */
  private async processPacked(job: Job, envelope: Envelope): Promise<{ rows: number }> {
    const jobs = envelope.jobs!;
    const now = Date.now();
    if (jobs.every((j) => j.deadline === undefined || j.deadline > now)) {
      let result: Inference | undefined;
      try {
        result = await this.infer({ ...envelope, deadline: undefined });
      } catch (err) {
        if (this.shouldRetry(job, err)) throw err;
      }
      if (result !== undefined) {
        if (envelope.replyTo !== undefined) {
          const pipeline = this.redis.pipeline();
          this.addReply(pipeline, envelope, result);
          await execAll(pipeline);
        }
        if (this.sinks.active) {
          const parts = unpackJobs(envelope);
          let start = 0;
          await Promise.all(
            parts.map((part) => {
              const outputs = sliceRows(result.outputs, start, start + part.rows);
              start += part.rows;
              return this.sink(part, { ...result, outputs, rows: part.rows });
            }),
          );
        }
        return { rows: result.rows };
      }
    }
    this.counters.packsSplit++;
    return this.processEach(job, unpackJobs(envelope));
  }

  /** Runs a pack's jobs one by one: bad ones are dead-lettered alone; replies and dead letters go out in one pipeline before the pack is acknowledged. */
  private async processEach(job: Job, parts: readonly Envelope[]): Promise<{ rows: number }> {
    const settled = await Promise.allSettled(parts.map((env) => this.infer(env)));
    const retriable = settled.find((s) => s.status === 'rejected' && this.shouldRetry(job, s.reason));
    if (retriable !== undefined) throw (retriable as PromiseRejectedResult).reason;
    const pipeline = this.redis.pipeline();
    let rows = 0;
    settled.forEach((s, i) => {
      const env = parts[i]!;
      if (s.status === 'fulfilled') {
        rows += s.value.rows;
        if (env.replyTo !== undefined) this.addReply(pipeline, env, s.value);
      } else {
        this.addDeadLetter(pipeline, job, env.id, env, s.reason);
      }
    });
    await execAll(pipeline);
    await Promise.all(settled.map((s, i) => (s.status === 'fulfilled' ? this.sink(parts[i]!, s.value) : undefined)));
    return { rows };
  }

  /** Puts a job's rows into its sinks (the worker's and its own) and waits until the roll holding them is published. */
  private async sink(envelope: Envelope, result: Inference): Promise<void> {
    if (!this.sinks.active) return;
    const targets = this.sinks.forJob(envelope.sinks, envelope.id);
    if (targets.length === 0) return;
    const recorded = await this.redis.get(this.keys.sunk(envelope.id));
    if (recorded !== null) {
      // The roll files of an earlier run, by sink: all in place means this job's rows are written.
      const paths = Object.entries(JSON.parse(recorded) as Record<string, string[]>).map(([key, files]) => ({ sink: this.sinks.recorded(key, envelope.id), files }));
      const states = await Promise.all(paths.map((p) => p.sink.rollState(p.files)));
      if (states.every((st) => st === 'complete')) {
        this.counters.alreadySunk++;
        return;
      }
      // A roll a crash left half-written: remove it; its jobs (this one among them) are written anew.
      await Promise.all(paths.map((p) => p.sink.deleteFiles(p.files)));
    }
    const seq = this.seq++;
    const written = new Promise<void>((resolve) => this.rollWaiters.push({ seq, resolve }));
    for (const sink of targets) {
      sink.add(this.sinkGroup, { seq, jobId: envelope.id, rowIds: envelope.rowIds, outputs: result.outputs, rows: result.rows, model: result.model.name, version: result.model.version, ts: Date.now() });
    }
    this.maybeRoll();
    await written;
  }

  /**
   * Rolls when a sink is due (rows, bytes, age) or the worker drains: records the roll's
   * files under each of its jobs, writes them, then releases the jobs (which are then
   * completed). A failed write is retried with the same plan (the same file names).
   */
  private maybeRoll(): void {
    if (this.rolling !== undefined || this.rollWaiters.length === 0) return;
    // Due by rows, bytes or age, or when every job slot waits for this roll (no more jobs can come in).
    const full = this.rollWaiters.length >= (this.opts.concurrency ?? 256);
    const sinks = this.sinks.all();
    if (!this.draining && !full && !sinks.some((sink) => sink.due(this.sinkGroup))) return;
    const first = Math.min(...this.rollWaiters.map((w) => w.seq));
    const last = this.seq - 1;
    this.rolling = (async () => {
      const plans = sinks.filter((sink) => sink.has(this.sinkGroup, first, last)).map((sink) => ({ sink, plan: sink.planRoll(this.sinkGroup, first, last) }));
      // Every job of the roll records all of its files, by sink: a rerun checks them all.
      const paths = JSON.stringify(Object.fromEntries(plans.map(({ sink, plan }) => [this.sinks.keyOf(sink), plan.paths])));
      for (let attempt = 1; ; attempt++) {
        try {
          const pipeline = this.redis.pipeline();
          for (const id of new Set(plans.flatMap((p) => p.plan.jobIds))) pipeline.set(this.keys.sunk(id), paths, 'EX', 7 * 86_400);
          await execAll(pipeline);
          for (const { sink, plan } of plans) await sink.writeRoll(plan);
          break;
        } catch (err) {
          this.log.warn({ err, attempt, first, last }, 'sink roll failed; retrying (its jobs wait)');
          await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** Math.min(attempt, 5))));
        }
      }
      this.counters.rolls++;
      const done = this.rollWaiters.filter((w) => w.seq <= last);
      this.rollWaiters = this.rollWaiters.filter((w) => w.seq > last);
      for (const w of done) w.resolve();
    })().finally(() => {
      this.rolling = undefined;
      this.maybeRoll();
    });
  }

  private infer(envelope: Envelope): Promise<Inference> {
    return inferEnvelope(this.opts.models, envelope, this.opts.nonFinite ?? 'reject');
  }

  /** Whether BullMQ should run the job again (a retriable error, attempts left); process() counts and logs it. */
  private shouldRetry(job: Job, err: unknown): boolean {
    const retriable = !(err instanceof InferqError) || err.retriable;
    const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    return retriable && !lastAttempt;
  }

  private async payload(id: string, data: JobData): Promise<Uint8Array> {
    if (data.b64 !== undefined) return new Uint8Array(Buffer.from(data.b64, 'base64'));
    const buf = await this.redis.getBuffer(data.key!);
    if (buf === null) throw new InvalidInputError(`payload key "${data.key}" is missing (expired, or never written)${jobSuffix(id)}`, { jobId: id, model: data.model });
    if (buf.byteLength !== data.bytes) throw new InvalidInputError(`payload of job has ${buf.byteLength} bytes, job says ${data.bytes}${jobSuffix(id)}`, { jobId: id, model: data.model });
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  /** One reply entry; for a pack, one entry for all its jobs (the result envelope lists them, `jobs` counts them). */
  private addReply(pipeline: ChainableCommander, envelope: Envelope, result: Inference): void {
    const jobs = envelope.jobs?.map((j) => ({ id: j.id, rows: j.rows }));
    const bytes = encodeEnvelope({ id: envelope.id, model: result.model.name, version: result.model.version, rowIds: envelope.rowIds, jobs }, result.outputs);
    const fields: (string | Buffer)[] = [REPLY_FIELDS.status, 'ok', REPLY_FIELDS.env, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)];
    if (jobs !== undefined) fields.push(REPLY_FIELDS.jobs, String(jobs.length));
    this.addReplyFields(pipeline, envelope.replyTo!, envelope.id, fields);
  }

  private addReplyFields(pipeline: ChainableCommander, stream: string, id: string, fields: (string | Buffer)[]): void {
    pipeline.xadd(stream, 'MAXLEN', '~', String(this.opts.replyMaxLen ?? 100_000), '*', REPLY_FIELDS.id, id, ...fields);
  }

  /** Queues the dead letter (and an error reply when the caller waits for one); written before the job is failed. */
  private addDeadLetter(pipeline: ChainableCommander, job: Job, id: string, envelope: Envelope | undefined, err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    const kind = err instanceof Error ? err.constructor.name : 'Error';
    const data = (typeof job.data === 'object' && job.data !== null ? job.data : {}) as Partial<JobData>;
    this.counters.deadLettered++;
    this.log.warn({ jobId: id, kind, reason: message }, 'job dead-lettered');
    pipeline.xadd(
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
      this.addReplyFields(pipeline, envelope.replyTo, id, ['status', 'error', 'error', message, 'kind', kind, 'model', envelope.model]);
    }
  }
}

/** Runs a pipeline and throws the first command error (so a failed write is never taken for an ack). */
async function execAll(pipeline: ChainableCommander): Promise<void> {
  const results = await pipeline.exec();
  const failed = results?.find(([err]) => err !== null);
  if (results === null || failed !== undefined) {
    throw new InferqError(`redis write failed: ${failed?.[0]?.message ?? 'pipeline aborted'}`, { retriable: true });
  }
}
