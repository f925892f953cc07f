/**
 * The inferq producer SDK over Redis (BullMQ).
 *
 * ```
 *  enqueue(model, batch) ── toTensors ─► encodeEnvelope ─► SET <prefix>:<queue>:payload:<job id>:<uuid> <envelope> NX EX ttl
 *                                                       ─► Queue.add(job { model, key })  ─► job id
 *     (small envelopes travel inline, base64 in the job, with no key; a key no job names after
 *      the add, as with a duplicate job id, is deleted)
 *     with linger: calls of one window that share model, version, replyTo, sinks and input
 *     signature are packed into one envelope (their rows concatenated, `jobs` lists each
 *     job's id, rows and deadline) and sent as one BullMQ job
 *  predict(...)  = enqueue(replyTo = this producer's inbox stream) + wait for the reply with that job id
 *  subscribe(stream, handler, { group }) = XREADGROUP loop: own pending entries first, then claims
 *                                          entries idle in dead consumers (XAUTOCLAIM), then new ones
 * ```
 *
 * Every call settles: a call made while Redis is unreachable (or refuses us) waits at most
 * `connectTimeoutMs` for it and rejects with ConnectionError (see redis-link.ts); the same
 * Producer serves again once Redis is back. Nothing is printed: the `logger` hears the rest.
 */
import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import type { JobsOptions } from 'bullmq';
import type { Redis, RedisOptions } from 'ioredis';
import { ClosedError, DEFAULT_PREFIX, DEFAULT_QUEUE, InferqError, encodeEnvelope, parseTablePointer, redisKeys, tableBucket, tableKeys } from '@inferq/shared';
import type { JobData, RedisKeys } from '@inferq/shared';
import { connectTimeout, handled, within } from './connection.js';
import type { SdkLogger } from './connection.js';
import { toTensors } from './features.js';
import type { FeatureBatch } from './features.js';
import { PredictTimeoutError } from './errors.js';
import { Inbox, INBOX_BLOCK_MS } from './inbox.js';
import { Packer } from './linger.js';
import type { LingerOptions } from './linger.js';
import { RedisLink, isReplyError, openRedis, sdkRedisOptions } from './redis-link.js';
import type { Reply, ReplyWaiter } from './replies.js';
import { DEFAULT_BLOCK_MS, Subscription } from './subscription.js';
import type { SubscribeOptions } from './subscription.js';

export interface ProducerOptions {
  /**
   * A Redis URL (`redis://host:port/db`), ioredis options, or a client to duplicate. The SDK sets
   * these ioredis options itself: `enableOfflineQueue: false`, `maxRetriesPerRequest: 0`,
   * `autoResendUnfulfilledCommands: false`, `connectTimeout` and `socketTimeout` (from
   * `connectTimeoutMs`), and a `retryStrategy` that reconnects forever, at most 1 s apart.
   */
  readonly redis: string | RedisOptions | Redis;
  /**
   * How long a call waits for Redis when it is not connected (down, restarting, unreachable)
   * before it rejects with ConnectionError; an authentication refusal (WRONGPASS, NOAUTH) fails
   * it at once. Also ioredis's connect timeout, and (plus the longest blocking read) the time a
   * connected server may leave a command unanswered before the connection is dropped. Default 5000 ms.
   */
  readonly connectTimeoutMs?: number;
  /** Where connection problems and unreadable replies are reported, at most once a minute per cause (pino or console fit). Default: nowhere. */
  readonly logger?: SdkLogger;
  /** Queue name (the workers' `--queue`). Default "inferq". */
  readonly queue?: string;
  /** Key prefix of every key. Default "inferq". */
  readonly prefix?: string;
  /**
   * Where the envelope travels: "key" (a binary Redis key of its own, `<prefix>:<queue>:payload:<job id>:<uuid>`,
   * written before the job, which names it: cheaper for large jobs than base64), "inline" (base64
   * in the BullMQ job data: cheaper for tiny jobs, it saves the key's SET/GET/DEL), or "auto" (the
   * default): inline below `inlineMaxBytes`, a key above. bench/README.md has the figures.
   */
  readonly payload?: 'auto' | 'key' | 'inline';
  /** With payload "auto": envelopes up to this size travel inline. Default 8 KiB. */
  readonly inlineMaxBytes?: number;
  /** Expiry of payload keys, so the payload of a job that never runs does not stay forever. Default 7 days. */
  readonly payloadTtlSeconds?: number;
  /**
   * Producer-side batching, like Kafka's linger.ms: enqueue() and predict() calls within
   * `ms` that share model, version, replyTo, sinks and input names/dtypes/row shape are
   * packed into one envelope — their rows concatenated, one BullMQ job, one batcher entry
   * and one reply stream entry (which the SDK splits back into one reply per job). Each job
   * keeps its own id, deadline, reply and dead letter: when a pack fails validation its
   * jobs are run one by one, so a bad job fails alone. A pack is sent when it holds
   * `maxJobs` jobs (default 1000) or `maxBytes` of features (default 1 MiB), or when the
   * window ends. Calls with `jobId`, `priority`, `delay`, `attempts` or `backoff` are never
   * packed. Default: off (`ms: 0`).
   */
  readonly linger?: LingerOptions;
  /** Lookup tables: how long a table's current version is cached. Default 1000 ms (0: read it every call). */
  readonly tableCacheMs?: number;
  /** Key prefix of lookup tables (the spec's redis.prefix). Default "inferq". */
  readonly tablePrefix?: string;
}

/** A row of a lookup table: each model output of that key (a number, or an array for wider outputs). */
export type TableRow = Readonly<Record<string, number | number[]>>;

export interface EnqueueOptions {
  /** Job id. Enqueueing the same id twice makes one job. Default: a random UUID. */
  readonly jobId?: string;
  readonly version?: string;
  /** BullMQ priority: 1 (highest) … 2,097,152. Default: none (FIFO). */
  readonly priority?: number;
  /** Milliseconds before the job may run. */
  readonly delay?: number;
  /** Tries for retriable failures. Default 3. */
  readonly attempts?: number;
  /** Backoff between tries. Default exponential from 200 ms. */
  readonly backoff?: { readonly type: 'fixed' | 'exponential'; readonly delay: number };
  /** Absolute deadline (epoch ms): the job fails with a timeout instead of running after it. */
  readonly deadline?: number;
  /** Reply stream the worker writes the result to. */
  readonly replyTo?: string;
  /**
   * Parquet folders this job's rows are written to as well as the worker's `--sink` ones
   * (`parquet:<uri>` or a URI). The worker takes only folders under its `--allow-job-sinks`;
   * others dead-letter the job.
   */
  readonly sinks?: readonly string[];
  /** Per-row ids carried to the results. */
  readonly rowIds?: readonly string[];
  /** Input name for a `number[][]` batch. Default "features". */
  readonly input?: string;
}

export interface PredictOptions extends Omit<EnqueueOptions, 'replyTo'> {
  /** How long to wait for the reply. Default 30 s. Also the job's deadline unless one is given. */
  readonly timeoutMs?: number;
}

export class Producer {
  readonly queueName: string;
  readonly keys: RedisKeys;
  /** This instance's inbox stream (predict() replies). */
  readonly inbox: string;
  private readonly options: ProducerOptions;
  private readonly connectTimeoutMs: number;
  private readonly link: RedisLink;
  private readonly queue: Queue;
  /** Whether BullMQ's side of the connection was ready once (it stays so). */
  private queueReady = false;
  private readonly waiters = new Map<string, ReplyWaiter>();
  private inboxReader: Inbox | undefined;
  private readonly subscriptions = new Set<Subscription>();
  private closing: Promise<void> | undefined;
  /** Producer-side batching (only with `linger`). */
  private readonly packer: Packer | undefined;
  private readonly pointers = new Map<string, { pointer: { runId: string; buckets: number } | undefined; at: number }>();

  constructor(options: ProducerOptions) {
    this.options = options;
    this.queueName = options.queue ?? DEFAULT_QUEUE;
    const prefix = options.prefix ?? DEFAULT_PREFIX;
    this.keys = redisKeys(prefix, this.queueName);
    this.inbox = this.keys.inbox(randomUUID());
    this.connectTimeoutMs = connectTimeout(options.connectTimeoutMs);
    this.link = new RedisLink(openRedis(options.redis, this.connectTimeoutMs), 'main', this.connectTimeoutMs, options.logger);
    // No version check: it is a command BullMQ sends once, and its failure in an outage would fail this queue for good.
    this.queue = new Queue(this.queueName, { connection: this.link.client, prefix, skipVersionCheck: true });
    // BullMQ re-emits the connection's errors (which the link reports); with no listener it would print them.
    this.queue.on('error', (err: Error) => this.link.report(err, 'BullMQ'));
    const linger = options.linger;
    if (linger !== undefined && linger.ms > 0) this.packer = new Packer(linger, (id, meta, payload) => this.addJob(id, meta, payload, {}));
  }

  /** Enqueues a feature batch for `model`; resolves with the job id once it is stored in Redis. */
  enqueue(model: string, batch: FeatureBatch, options: EnqueueOptions = {}): Promise<string> {
    try {
      return handled(this.send(model, batch, options, options.jobId ?? randomUUID(), options.jobId !== undefined));
    } catch (err) {
      return handled(Promise.reject(err as Error));
    }
  }

  /** Packs or sends one job. Not async: with linger it runs once per small job, and each await costs. Throws bad input synchronously. */
  private send(model: string, batch: FeatureBatch, options: EnqueueOptions, id: string, explicitId: boolean): Promise<string> {
    this.assertOpen();
    const tensors = toTensors(batch, options.input);
    // A caller's job id is never packed: a pack travels under an id of its own.
    const packed = explicitId ? undefined : this.packer?.offer(id, model, options, tensors);
    if (packed !== undefined) return packed;
    const envelope = encodeEnvelope(
      { id, model, version: options.version, rowIds: options.rowIds, replyTo: options.replyTo, sinks: options.sinks, deadline: options.deadline },
      tensors,
    );
    const rows = Object.values(tensors)[0]?.shape[0] ?? 0;
    return this.addJob(id, { v: 1, model, version: options.version, rows, bytes: envelope.byteLength }, envelope, options, explicitId).then(() => id);
  }

  /** One BullMQ job and its payload, once connected (ConnectionError after connectTimeoutMs otherwise). */
  private addJob(id: string, meta: Omit<JobData, 'key' | 'b64'>, payload: Uint8Array, options: EnqueueOptions, explicitId = false): Promise<void> {
    // A Redis error reply (OOM, WRONGTYPE…) fails the enqueue; anything else is run()'s to tell (the connection's doing or not).
    const write = (steady: () => boolean): Promise<void> =>
      this.writeJob(id, meta, payload, options, explicitId, steady).catch((err: unknown) => {
        throw isReplyError(err) ? new InferqError(`enqueue of job ${id} to queue "${this.queueName}" failed: ${(err as Error).message}`, { jobId: id, model: meta.model, retriable: true, cause: err }) : err;
      });
    return this.link.run(write);
  }

  /**
   * The payload under a key of this enqueue's own (never a key an earlier job with the same id
   * left behind), then the job through BullMQ's Queue.add: a worker never sees the job before
   * its payload. A key no job names afterwards (a duplicate id, a job refused) is deleted.
   */
  private async writeJob(id: string, meta: Omit<JobData, 'key' | 'b64'>, payload: Uint8Array, options: EnqueueOptions, explicitId: boolean, steady: () => boolean): Promise<void> {
    const mode = this.options.payload ?? 'auto';
    if (mode === 'inline' || (mode === 'auto' && payload.byteLength <= (this.options.inlineMaxBytes ?? 8192))) {
      return this.addToQueue(id, { ...meta, b64: Buffer.from(payload).toString('base64') }, options);
    }
    const key = this.keys.payload(`${id}:${randomUUID()}`);
    const ttl = Math.max(this.options.payloadTtlSeconds ?? 7 * 86_400, Math.ceil((options.delay ?? 0) / 1000) + 86_400);
    const stored = await this.link.client.set(key, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), 'EX', ttl, 'NX');
    if (stored !== 'OK') throw new InferqError(`enqueue of job ${id} to queue "${this.queueName}" failed: payload key "${key}" exists already`, { jobId: id, model: meta.model, retriable: true });
    try {
      await this.addToQueue(id, { ...meta, key }, options);
    } catch (err) {
      // Refused (by Redis or BullMQ) on a connection that stayed up: no add is on its way, so the key
      // can go unless the job is there. After a drop the add may still arrive: the key is left to expire.
      if (isReplyError(err) || steady()) await this.dropUnlessNamed(id, key);
      throw err;
    }
    // A generated id is new; a caller's may belong to a job already there, which keeps its own payload.
    if (explicitId) await this.dropUnlessNamed(id, key);
  }

  /** Adds the BullMQ job (BullMQ answers a duplicate id with the job that exists, unchanged). */
  private async addToQueue(id: string, data: JobData, options: EnqueueOptions): Promise<void> {
    if (!this.queueReady) {
      // BullMQ readies its side of the connection (its scripts) soon after the connection is ready.
      await within(this.queue.waitUntilReady(), this.connectTimeoutMs, () => this.link.error('BullMQ did not take the connection'));
      this.queueReady = true;
    }
    const opts: JobsOptions = {
      jobId: id,
      attempts: options.attempts ?? 3,
      backoff: options.backoff ?? { type: 'exponential', delay: 200 },
      removeOnComplete: true,
      removeOnFail: { count: 10_000 },
      ...(options.priority === undefined ? {} : { priority: options.priority }),
      ...(options.delay === undefined ? {} : { delay: options.delay }),
    };
    await this.queue.add(data.model, data, opts);
  }

  /**
   * Deletes payload key `key` unless job `id` names it (a job that is gone has no use for it
   * either). Never fails the enqueue: a key it could not delete expires.
   */
  private async dropUnlessNamed(id: string, key: string): Promise<void> {
    try {
      const job: { data?: Partial<JobData> } | undefined = await this.queue.getJob(id);
      if (job?.data?.key !== key) await this.link.client.del(key);
    } catch (err) {
      this.link.report(err as Error, `payload key ${key} of job ${id} was left to expire`);
    }
  }

  /**
   * Enqueues and waits for the reply; settles within `timeoutMs`. Rejects with ConnectionError
   * when the job could not be sent (within connectTimeoutMs), PredictTimeoutError when no reply
   * came in time, RemoteJobError when the job failed.
   */
  predict(model: string, batch: FeatureBatch, options: PredictOptions = {}): Promise<Reply> {
    return handled(this.startPredict(model, batch, options));
  }

  private async startPredict(model: string, batch: FeatureBatch, options: PredictOptions): Promise<Reply> {
    this.assertOpen();
    const timeoutMs = options.timeoutMs ?? 30_000;
    const id = options.jobId ?? randomUUID();
    this.ensureInbox();
    let waiter: ReplyWaiter | undefined;
    const reply = new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.waiters.get(id) === waiter) this.waiters.delete(id);
        reject(new PredictTimeoutError(`no reply for job ${id} (model ${model}) within ${timeoutMs} ms`, { jobId: id, model }));
      }, timeoutMs);
      waiter = { resolve, reject, timer };
      this.waiters.set(id, waiter);
    });
    const w = waiter!;
    let sent: Promise<string>;
    try {
      sent = this.send(model, batch, { ...options, replyTo: this.inbox, deadline: options.deadline ?? Date.now() + timeoutMs }, id, options.jobId !== undefined);
    } catch (err) {
      this.dropWaiter(id, w, undefined);
      throw err;
    }
    // A job that could not be sent fails this call now, with the reason (its timer and waiter go with it).
    sent.catch((err: unknown) => this.dropWaiter(id, w, err as Error));
    return reply;
  }

  /** Forgets a predict() call's waiter and clears its timer; rejects its reply with `err` when given. */
  private dropWaiter(id: string, w: ReplyWaiter, err: Error | undefined): void {
    clearTimeout(w.timer);
    if (this.waiters.get(id) !== w) return; // it was settled (reply, timeout or close) already
    this.waiters.delete(id);
    if (err !== undefined) w.reject(err);
  }

  /**
   * Consumes a reply stream through a consumer group: instances with the same group
   * share the stream; a restarted subscriber first gets its own unacknowledged
   * replies, and replies left pending by dead consumers are claimed after `claimIdleMs`.
   * Its `ready` rejects with ConnectionError when Redis cannot be reached within
   * connectTimeoutMs; once ready it rides out outages (see Subscription).
   */
  subscribe(stream: string, handler: (reply: Reply) => Promise<void> | void, options: SubscribeOptions): Subscription {
    this.assertOpen();
    const client = this.link.client.duplicate(sdkRedisOptions(this.connectTimeoutMs, options.blockMs ?? DEFAULT_BLOCK_MS));
    const link = new RedisLink(client, 'subscription', this.connectTimeoutMs, this.options.logger);
    const sub = new Subscription(link, stream, handler, options);
    this.subscriptions.add(sub);
    const forget = (): void => void this.subscriptions.delete(sub);
    sub.done.then(forget, forget);
    return sub;
  }

  /**
   * Reads a precomputed lookup table (`inferq precompute`): the row of `key` in the table's
   * current version, or undefined when the table has no such key (or no version yet).
   */
  lookup(table: string, key: string): Promise<TableRow | undefined> {
    return handled(this.lookupMany(table, [key]).then((rows) => rows[0]));
  }

  /** Reads many keys of one table in one round trip, all from the same version (never a mix). */
  lookupMany(table: string, keys: readonly string[]): Promise<(TableRow | undefined)[]> {
    return handled(this.readTable(table, keys));
  }

  private async readTable(table: string, keys: readonly string[]): Promise<(TableRow | undefined)[]> {
    this.assertOpen();
    if (keys.length === 0) return [];
    return this.link.run(async () => {
      const pointer = await this.tablePointer(table);
      if (pointer === undefined) return keys.map(() => undefined);
      const tk = tableKeys(this.options.tablePrefix ?? DEFAULT_PREFIX, table);
      const pipeline = this.link.client.pipeline();
      for (const k of keys) pipeline.hget(tk.bucket(pointer.runId, tableBucket(k, pointer.buckets)), k);
      const results = (await pipeline.exec()) ?? [];
      return results.map(([err, v], i) => {
        if (err !== null && !isReplyError(err)) throw err; // the connection's doing: run() says so
        if (err !== null) throw new InferqError(`lookup of "${keys[i]}" in table "${table}" failed: ${err.message}`, { retriable: true });
        return typeof v === 'string' ? (JSON.parse(v) as TableRow) : undefined;
      });
    });
  }

  /**
   * The table's row for `key`, or — on a miss — a prediction of `batch` (one row) by `model`,
   * in the same shape. `source` says which answered.
   */
  lookupOrPredict(table: string, key: string, model: string, batch: FeatureBatch, options: PredictOptions = {}): Promise<{ source: 'table' | 'model'; row: TableRow }> {
    return handled(this.lookupThenPredict(table, key, model, batch, options));
  }

  private async lookupThenPredict(table: string, key: string, model: string, batch: FeatureBatch, options: PredictOptions): Promise<{ source: 'table' | 'model'; row: TableRow }> {
    const hit = await this.lookup(table, key);
    if (hit !== undefined) return { source: 'table', row: hit };
    const reply = await this.predict(model, batch, options);
    const row: Record<string, number | number[]> = {};
    for (const [name, t] of Object.entries(reply.outputs)) {
      const width = t.shape.slice(1).reduce((a, b) => a * b, 1);
      row[name] = width === 1 ? Number(t.data[0]) : Array.from(t.data.subarray(0, width) as ArrayLike<number>, Number);
    }
    return { source: 'model', row };
  }

  /** The table's current version, cached for `tableCacheMs` (one lookup call always uses one version). */
  private async tablePointer(table: string): Promise<{ runId: string; buckets: number } | undefined> {
    const cached = this.pointers.get(table);
    const ttl = this.options.tableCacheMs ?? 1000;
    if (cached !== undefined && Date.now() - cached.at < ttl) return cached.pointer;
    const pointer = parseTablePointer(await this.link.client.get(tableKeys(this.options.tablePrefix ?? DEFAULT_PREFIX, table).current));
    this.pointers.set(table, { pointer, at: Date.now() });
    return pointer;
  }

  /**
   * Sends what lingers, stops subscriptions and the inbox reader, fails pending predict() calls,
   * closes connections. Idempotent. Settles within about connectTimeoutMs even when Redis is down.
   */
  close(): Promise<void> {
    this.closing ??= handled(this.doClose());
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const errors: unknown[] = [];
    const step = async (f: () => Promise<unknown>): Promise<void> => {
      try {
        await f();
      } catch (err) {
        errors.push(err);
      }
    };
    await step(async () => this.packer?.flush()); // each pack's send ends within connectTimeoutMs
    await step(() => Promise.all([...this.subscriptions].map((s) => s.close())));
    for (const [id, w] of this.waiters) {
      clearTimeout(w.timer);
      w.reject(new ClosedError(`producer closed while waiting for job ${id}`, { jobId: id }));
    }
    this.waiters.clear();
    if (this.inboxReader !== undefined) {
      await step(() => this.inboxReader!.close());
      // Only now, if Redis is there: a close does not wait on a server that is gone for a stream it can leave behind.
      if (this.link.client.status === 'ready') await step(() => this.link.client.del(this.inbox));
    }
    await step(() => within(this.queue.close(), this.connectTimeoutMs, () => this.link.error('BullMQ queue close did not finish')));
    await step(() => this.link.close());
    if (errors.length > 0) throw new InferqError(`producer close: ${errors.map((e) => (e as Error).message).join('; ')}`, { cause: errors[0] });
  }

  private assertOpen(): void {
    if (this.closing !== undefined) throw new ClosedError('producer is closed');
  }

  private ensureInbox(): void {
    if (this.inboxReader !== undefined) return;
    const client = this.link.client.duplicate(sdkRedisOptions(this.connectTimeoutMs, INBOX_BLOCK_MS));
    this.inboxReader = new Inbox(new RedisLink(client, 'inbox', this.connectTimeoutMs, this.options.logger), this.inbox, this.waiters);
  }
}
