/**
 * The inferq producer SDK over Redis (BullMQ).
 *
 * ```
 *  enqueue(model, batch) ── toTensors ─► encodeEnvelope ─► MULTI { SET payload-key <envelope> NX EX ttl
 *                                                                 BullMQ add job { model, key } }  ─► job id
 *     with linger: calls of one window that share model, version, replyTo, sinks and input
 *     signature are packed into one envelope (their rows concatenated, `jobs` lists each
 *     job's id, rows and deadline) and sent as one BullMQ job
 *  predict(...)  = enqueue(replyTo = this producer's inbox stream) + wait for the reply with that job id
 *  subscribe(stream, handler, { group }) = XREADGROUP loop: own pending entries first, then claims
 *                                          entries idle in dead consumers (XAUTOCLAIM), then new ones
 * ```
 */
import { randomUUID } from 'node:crypto';
import { Job, Queue } from 'bullmq';
import type { JobsOptions } from 'bullmq';
import { Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import { ClosedError, DEFAULT_PREFIX, DEFAULT_QUEUE, DTYPE_BYTES, EnvelopeError, InferqError, MAX_PACKED_JOBS, checkTensors, encodeEnvelope, jobSuffix, parseTablePointer, viewOf, redisKeys, tableBucket, tableKeys } from '@inferq/shared';
import type { DType, JobData, PackedJob, RedisKeys, Tensor, TensorMap } from '@inferq/shared';
import { toTensors } from './features.js';
import type { FeatureBatch } from './features.js';
import { PredictTimeoutError } from './errors.js';
import { parseReplies, settleWaiter } from './replies.js';
import type { Reply, ReplyWaiter } from './replies.js';
import { Subscription } from './subscription.js';
import type { SubscribeOptions } from './subscription.js';

export interface ProducerOptions {
  /** A Redis URL (`redis://host:port/db`), ioredis options, or a client to duplicate. */
  readonly redis: string | RedisOptions | Redis;
  /** Queue name (the workers' `--queue`). Default "inferq". */
  readonly queue?: string;
  /** Key prefix of every key. Default "inferq". */
  readonly prefix?: string;
  /**
   * Where the envelope travels: "key" (a binary Redis key written in the same MULTI as the
   * job; for 256 KB jobs 3.2× faster to enqueue and 1.6× end to end, as measured by
   * bench/redis.ts), "inline" (base64 in the BullMQ job data: ~1.2× faster for tiny jobs,
   * it saves the key's SET/GET/DEL), or "auto" (the default): inline below
   * `inlineMaxBytes`, a key above.
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
  readonly linger?: { readonly ms: number; readonly maxJobs?: number; readonly maxBytes?: number };
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

/** A job waiting in a pack. */
interface PackedItem {
  readonly job: PackedJob;
  /** Settles the job's enqueue() with its id. */
  readonly resolve: (id: string) => void;
  readonly reject: (err: Error) => void;
}

/** One input of a pack: the bytes of its jobs' rows so far, appended into one growing buffer (a copy: callers may reuse theirs). */
interface PackColumn {
  readonly dtype: DType;
  readonly rowShape: readonly number[];
  bytes: Uint8Array;
  used: number;
}

/** Jobs that will travel as one envelope. */
interface Pack {
  readonly model: string;
  readonly version: string | undefined;
  readonly replyTo: string | undefined;
  readonly sinks: readonly string[] | undefined;
  readonly items: PackedItem[];
  readonly columns: Map<string, PackColumn>;
  /** Every job's rowIds, concatenated (a pack's jobs either all give rowIds or none does). */
  readonly rowIds: string[] | undefined;
  rows: number;
  bytes: number;
}

export class Producer {
  readonly queueName: string;
  readonly keys: RedisKeys;
  /** This instance's inbox stream (predict() replies). */
  readonly inbox: string;
  private readonly options: ProducerOptions;
  private readonly connection: Redis;
  private readonly queue: Queue;
  private readonly waiters = new Map<string, ReplyWaiter>();
  private inboxReader: Redis | undefined;
  private inboxLoop: Promise<void> | undefined;
  private readonly subscriptions = new Set<Subscription>();
  private closing: Promise<void> | undefined;
  /** The last connection-level error (for diagnostics). */
  lastConnectionError: Error | undefined;
  /** Packs filling during the current linger window, by pack key. */
  private readonly packs = new Map<string, Pack>();
  private lingerTimer: NodeJS.Timeout | undefined;
  private readonly flushing = new Set<Promise<void>>();
  private readonly pointers = new Map<string, { pointer: { runId: string; buckets: number } | undefined; at: number }>();

  constructor(options: ProducerOptions) {
    this.options = options;
    this.queueName = options.queue ?? DEFAULT_QUEUE;
    const prefix = options.prefix ?? DEFAULT_PREFIX;
    this.keys = redisKeys(prefix, this.queueName);
    this.inbox = this.keys.inbox(randomUUID());
    this.connection = connect(options.redis);
    // ioredis reconnects by itself and fails the commands in flight (callers see those errors);
    // without a listener each reconnect attempt would also print an "Unhandled error event".
    this.connection.on('error', (err: Error) => (this.lastConnectionError = err));
    this.queue = new Queue(this.queueName, { connection: this.connection, prefix });
  }

  /** Enqueues a feature batch for `model`; resolves with the job id once it is stored in Redis. */
  enqueue(model: string, batch: FeatureBatch, options: EnqueueOptions = {}): Promise<string> {
    try {
      return this.send(model, batch, options, options.jobId ?? randomUUID(), options.jobId !== undefined);
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  /** Packs or sends one job. Not async: with linger it runs once per small job, and each await costs. Throws bad input synchronously. */
  private send(model: string, batch: FeatureBatch, options: EnqueueOptions, id: string, explicitId: boolean): Promise<string> {
    this.assertOpen();
    const tensors = toTensors(batch, options.input);
    const linger = this.options.linger;
    const packable =
      linger !== undefined &&
      linger.ms > 0 &&
      !explicitId &&
      options.priority === undefined &&
      options.delay === undefined &&
      options.attempts === undefined &&
      options.backoff === undefined &&
      byteSize(tensors) < (linger.maxBytes ?? 1024 * 1024); // a job that fills a pack alone goes as it is
    if (packable) {
      const rows = checkTensors({ id, model }, tensors);
      // What encodeEnvelope() would refuse for this job alone must not fail its whole pack later.
      if (options.rowIds !== undefined && (options.rowIds.length !== rows || !options.rowIds.every((r) => typeof r === 'string'))) {
        throw new EnvelopeError(`rowIds: expected ${rows} strings (one per row), got ${options.rowIds.length} entries${jobSuffix(id)}`, { jobId: id, model });
      }
      if (options.deadline !== undefined && !(Number.isSafeInteger(options.deadline) && options.deadline >= 0)) {
        throw new EnvelopeError(`deadline: expected epoch milliseconds, got ${String(options.deadline)}${jobSuffix(id)}`, { jobId: id, model });
      }
      return new Promise<string>((resolve, reject) => this.addToPack(model, options, tensors, { job: { id, rows, deadline: options.deadline }, resolve, reject }));
    }
    const envelope = encodeEnvelope(
      { id, model, version: options.version, rowIds: options.rowIds, replyTo: options.replyTo, sinks: options.sinks, deadline: options.deadline },
      tensors,
    );
    const rows = Object.values(tensors)[0]?.shape[0] ?? 0;
    return this.addJob(id, { v: 1, model, version: options.version, rows, bytes: envelope.byteLength }, envelope, options).then(() => id);
  }

  /** One BullMQ job and its payload in one MULTI/EXEC. */
  private async addJob(id: string, meta: Omit<JobData, 'key' | 'b64'>, payload: Uint8Array, options: EnqueueOptions): Promise<void> {
    const mode = this.options.payload ?? 'auto';
    const inline = mode === 'inline' || (mode === 'auto' && payload.byteLength <= (this.options.inlineMaxBytes ?? 8192));
    const data: JobData = inline ? { ...meta, b64: Buffer.from(payload).toString('base64') } : { ...meta, key: this.keys.payload(id) };
    const opts: JobsOptions = {
      jobId: id,
      attempts: options.attempts ?? 3,
      backoff: options.backoff ?? { type: 'exponential', delay: 200 },
      removeOnComplete: true,
      removeOnFail: { count: 10_000 },
      ...(options.priority === undefined ? {} : { priority: options.priority }),
      ...(options.delay === undefined ? {} : { delay: options.delay }),
    };
    const job = new Job(this.queue, meta.model, data, opts, id);
    // BullMQ's client wrapper hands out ioredis transactions it can add jobs to.
    const multi = ((await this.queue.backend.client) as unknown as Redis).multi();
    if (!inline) {
      const ttl = Math.max(this.options.payloadTtlSeconds ?? 7 * 86_400, Math.ceil((options.delay ?? 0) / 1000) + 86_400);
      multi.set(this.keys.payload(id), Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), 'EX', ttl, 'NX');
    }
    // The job and its payload are written in one MULTI/EXEC: a worker never sees one without the other.
    void job.addJob(multi as unknown as Parameters<Job['addJob']>[0]);
    const results = await multi.exec();
    const failed = results?.find(([err]) => err !== null);
    if (results === null || failed !== undefined) {
      throw new InferqError(`enqueue of job ${id} to queue "${this.queueName}" failed: ${failed?.[0]?.message ?? 'transaction aborted'}`, { jobId: id, model: meta.model, retriable: true });
    }
  }

  private addToPack(model: string, options: EnqueueOptions, tensors: TensorMap, item: PackedItem): void {
    const linger = this.options.linger!;
    // Jobs share a pack only when their rows can be concatenated and their metadata is one.
    let key = `${model}\u0000${options.version ?? ''}\u0000${options.replyTo ?? ''}\u0000${options.sinks === undefined ? '' : JSON.stringify(options.sinks)}\u0000${options.rowIds === undefined ? 0 : 1}`;
    for (const name in tensors) {
      const t = tensors[name]!;
      key += `\u0000${name}:${t.dtype}`;
      for (let d = 1; d < t.shape.length; d++) key += `,${t.shape[d]!}`;
    }
    let pack = this.packs.get(key);
    if (pack === undefined) {
      const columns = new Map<string, PackColumn>();
      for (const name in tensors) {
        const t = tensors[name]!;
        columns.set(name, { dtype: t.dtype, rowShape: t.shape.slice(1), bytes: new Uint8Array(Math.max(t.data.byteLength, Math.min(t.data.byteLength * 16, 256 * 1024))), used: 0 });
      }
      pack = { model, version: options.version, replyTo: options.replyTo, sinks: options.sinks, items: [], columns, rowIds: options.rowIds === undefined ? undefined : [], rows: 0, bytes: 0 };
      this.packs.set(key, pack);
    }
    for (const name in tensors) {
      // Bytes as they are, as encodeEnvelope() copies them for a job sent alone.
      const data = tensors[name]!.data;
      const src = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      const col = pack.columns.get(name)!;
      if (col.used + src.length > col.bytes.length) {
        const grown = new Uint8Array(Math.max(2 * col.bytes.length, col.used + src.length));
        grown.set(col.bytes.subarray(0, col.used));
        col.bytes = grown;
      }
      col.bytes.set(src, col.used);
      col.used += src.length;
      pack.bytes += src.length;
    }
    if (pack.rowIds !== undefined) for (const r of options.rowIds!) pack.rowIds.push(r);
    pack.items.push(item);
    pack.rows += item.job.rows;
    if (pack.items.length >= Math.min(linger.maxJobs ?? 1000, MAX_PACKED_JOBS) || pack.bytes >= (linger.maxBytes ?? 1024 * 1024)) {
      this.packs.delete(key);
      this.sendPack(pack);
    } else {
      this.lingerTimer ??= setTimeout(() => this.flushPacks(), linger.ms);
    }
  }

  /** Sends every pack of the window. */
  private flushPacks(): void {
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    const packs = [...this.packs.values()];
    this.packs.clear();
    for (const pack of packs) this.sendPack(pack);
  }

  /** Sends a pack as one BullMQ job (a lone job as an ordinary one); every enqueue() in it resolves (or rejects) with it. */
  private sendPack(pack: Pack): void {
    const items = pack.items;
    let sent: Promise<void>;
    try {
      const meta = { model: pack.model, version: pack.version, replyTo: pack.replyTo, sinks: pack.sinks, rowIds: pack.rowIds };
      const tensors: Record<string, Tensor> = {};
      for (const [name, col] of pack.columns) {
        tensors[name] = { dtype: col.dtype, shape: [pack.rows, ...col.rowShape], data: viewOf(col.dtype, col.bytes.buffer, col.bytes.byteOffset, col.used / DTYPE_BYTES[col.dtype]) };
      }
      if (items.length === 1) {
        const only = items[0]!.job;
        const payload = encodeEnvelope({ ...meta, id: only.id, deadline: only.deadline }, tensors);
        sent = this.addJob(only.id, { v: 1, model: pack.model, version: pack.version, rows: pack.rows, bytes: payload.byteLength }, payload, {});
      } else {
        const id = randomUUID();
        const payload = encodeEnvelope({ ...meta, id, jobs: items.map((i) => i.job) }, tensors);
        sent = this.addJob(id, { v: 1, model: pack.model, version: pack.version, rows: pack.rows, bytes: payload.byteLength, bundle: items.length }, payload, {});
      }
    } catch (err) {
      sent = Promise.reject(err as Error);
    }
    const settled = sent.then(
      () => items.forEach((i) => i.resolve(i.job.id)),
      (err: Error) => {
        // The callers know their own job ids, not the pack's: say which it was and how many it held.
        const failure = items.length === 1 ? err : new InferqError(`enqueue of ${items.length} packed jobs (model ${pack.model}) failed: ${err.message}`, { model: pack.model, retriable: true, cause: err });
        items.forEach((i) => i.reject(failure));
      },
    );
    this.flushing.add(settled);
    void settled.finally(() => this.flushing.delete(settled));
  }

  /** Enqueues and waits for the reply. Rejects with PredictTimeoutError, or RemoteJobError when the job failed. */
  async predict(model: string, batch: FeatureBatch, options: PredictOptions = {}): Promise<Reply> {
    this.assertOpen();
    const timeoutMs = options.timeoutMs ?? 30_000;
    const id = options.jobId ?? randomUUID();
    this.ensureInboxLoop();
    const reply = new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new PredictTimeoutError(`no reply for job ${id} (model ${model}) within ${timeoutMs} ms`, { jobId: id, model }));
      }, timeoutMs);
      this.waiters.set(id, { resolve, reject, timer });
    });
    try {
      await this.send(model, batch, { ...options, replyTo: this.inbox, deadline: options.deadline ?? Date.now() + timeoutMs }, id, options.jobId !== undefined);
    } catch (err) {
      const w = this.waiters.get(id);
      if (w !== undefined) {
        clearTimeout(w.timer);
        this.waiters.delete(id);
      }
      throw err;
    }
    return reply;
  }

  /**
   * Consumes a reply stream through a consumer group: instances with the same group
   * share the stream; a restarted subscriber first gets its own unacknowledged
   * replies, and replies left pending by dead consumers are claimed after `claimIdleMs`.
   */
  subscribe(stream: string, handler: (reply: Reply) => Promise<void> | void, options: SubscribeOptions): Subscription {
    this.assertOpen();
    const conn = this.connection.duplicate();
    conn.on('error', (err: Error) => (this.lastConnectionError = err));
    const sub = new Subscription(conn, stream, handler, options);
    this.subscriptions.add(sub);
    void sub.done.finally(() => this.subscriptions.delete(sub));
    return sub;
  }

  /**
   * Reads a precomputed lookup table (`inferq precompute`): the row of `key` in the table's
   * current version, or undefined when the table has no such key (or no version yet).
   */
  async lookup(table: string, key: string): Promise<TableRow | undefined> {
    return (await this.lookupMany(table, [key]))[0];
  }

  /** Reads many keys of one table in one round trip, all from the same version (never a mix). */
  async lookupMany(table: string, keys: readonly string[]): Promise<(TableRow | undefined)[]> {
    this.assertOpen();
    const pointer = await this.tablePointer(table);
    if (pointer === undefined || keys.length === 0) return keys.map(() => undefined);
    const tk = tableKeys(this.options.tablePrefix ?? DEFAULT_PREFIX, table);
    const pipeline = this.connection.pipeline();
    for (const k of keys) pipeline.hget(tk.bucket(pointer.runId, tableBucket(k, pointer.buckets)), k);
    const results = (await pipeline.exec()) ?? [];
    return results.map(([err, v], i) => {
      if (err !== null) throw new InferqError(`lookup of "${keys[i]}" in table "${table}" failed: ${err.message}`, { retriable: true });
      return typeof v === 'string' ? (JSON.parse(v) as TableRow) : undefined;
    });
  }

  /**
   * The table's row for `key`, or — on a miss — a prediction of `batch` (one row) by `model`,
   * in the same shape. `source` says which answered.
   */
  async lookupOrPredict(table: string, key: string, model: string, batch: FeatureBatch, options: PredictOptions = {}): Promise<{ source: 'table' | 'model'; row: TableRow }> {
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
    const pointer = parseTablePointer(await this.connection.get(tableKeys(this.options.tablePrefix ?? DEFAULT_PREFIX, table).current));
    this.pointers.set(table, { pointer, at: Date.now() });
    return pointer;
  }

  /** Stops subscriptions and the inbox reader, fails pending predict() calls, closes connections. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
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
    this.flushPacks();
    await step(() => Promise.all(this.flushing));
    await step(() => Promise.all([...this.subscriptions].map((s) => s.close())));
    for (const [id, w] of this.waiters) {
      clearTimeout(w.timer);
      w.reject(new ClosedError(`producer closed while waiting for job ${id}`, { jobId: id }));
    }
    this.waiters.clear();
    if (this.inboxReader !== undefined) {
      this.inboxReader.disconnect();
      await step(async () => this.inboxLoop);
      await step(() => this.connection.del(this.inbox));
    }
    await step(() => this.queue.close());
    await step(() => this.connection.quit());
    if (errors.length > 0) throw new InferqError(`producer close: ${errors.map((e) => (e as Error).message).join('; ')}`, { cause: errors[0] });
  }

  private assertOpen(): void {
    if (this.closing !== undefined) throw new ClosedError('producer is closed');
  }

  private ensureInboxLoop(): void {
    if (this.inboxReader !== undefined) return;
    const reader = this.connection.duplicate();
    reader.on('error', (err: Error) => (this.lastConnectionError = err));
    this.inboxReader = reader;
    this.inboxLoop = (async () => {
      // The inbox is this producer's own new stream: read it from the start, so a reply that
      // lands before the first read (or between two reads) is never skipped, as '$' would.
      let last = '0';
      while (this.closing === undefined) {
        let res: [Buffer, [Buffer, Buffer[]][]][] | null;
        try {
          res = (await reader.xreadBuffer('BLOCK', 1000, 'STREAMS', this.inbox, last)) as [Buffer, [Buffer, Buffer[]][]][] | null;
        } catch {
          if (this.closing !== undefined) return;
          await new Promise((r) => setTimeout(r, 100));
          continue;
        }
        for (const [, entries] of res ?? []) {
          for (const [entryId, fields] of entries) {
            last = entryId.toString();
            for (const reply of parseReplies(fields)) settleWaiter(this.waiters, reply);
          }
        }
      }
    })();
  }
}

function connect(redis: ProducerOptions['redis']): Redis {
  if (redis instanceof Redis) return redis.duplicate({ maxRetriesPerRequest: null });
  if (typeof redis === 'string') return new Redis(redis, { maxRetriesPerRequest: null });
  return new Redis({ ...redis, maxRetriesPerRequest: null });
}

/** Bytes of a job's tensors. */
function byteSize(tensors: TensorMap): number {
  let n = 0;
  for (const name in tensors) n += tensors[name]!.data.byteLength;
  return n;
}
