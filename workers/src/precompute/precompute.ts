/**
 * A precompute run: every row of a feature space → the model at full batch → a lookup table.
 *
 * ```
 *  lock the table ─► resume the unfinished run of the same spec, or start one (runId)
 *  space chunks (lazy, finished chunks skipped) ─► encode ─► throughput batcher ─► model
 *     │   (before the model: the chunk's keys, and its columns for Parquet, become UTF-8 bytes)
 *     └► per chunk: Parquet part-<chunk>.parquet (temp + rename)  and/or  Redis: HSET into the
 *        run's hash buckets + SADD the chunk to the run's checkpoint, in one pipeline of
 *        protocol bytes (resp.ts)
 *  all chunks done ─► Parquet _SUCCESS; Redis: MULTI { SET current "<runId>:<buckets>";
 *     EXPIRE the previous version after the grace period } ─► unlock
 * ```
 *
 * Readers follow `current`, so they see the previous complete table until the swap and the
 * new one after it; never a partial or mixed one. A crashed run leaves its checkpoint: the
 * next run of the same spec resumes it and only computes the chunks not yet done.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { Field, RecordBatch, Schema, Struct, Utf8, makeData } from 'apache-arrow';
import type { Data } from 'apache-arrow';
import { Redis, ReplyError } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import { ConfigError, ConnectionError, DataIOError, InferqError, allocate, parseTablePointer, tableBucketOfBytes, tableKeys } from '@inferq/shared';
import type { TableKeys, Tensor, TensorMap } from '@inferq/shared';
import { DynamicBatcher } from '../batching/batcher.js';
import { createParquetWriter } from '../io/parquet.js';
import { utf8Bytes, utf8Data, utf8DataOf } from '../io/utf8.js';
import type { Utf8Bytes } from '../io/utf8.js';
import { parseLocation } from '../io/store.js';
import type { Location } from '../io/store.js';
import type { Logger } from '../logging.js';
import type { LoadedModel } from '../models/loaded-model.js';
import { tensorToColumn } from '../predict/columns.js';
import { RespBuilder, RespConnection } from './resp.js';
import { makeEncoder, openSpace, renderKeys } from './space.js';
import type { LoadedSpec } from './spec.js';

export type PrecomputeTarget = 'redis' | 'parquet' | 'both';

export interface PrecomputeOptions {
  readonly spec: LoadedSpec;
  readonly model: LoadedModel;
  readonly to: PrecomputeTarget;
  /** Redis URL (targets redis/both). */
  readonly redis?: string;
  /** ioredis options beside the URL: TLS files, user, password (the CLI's connection flags). */
  readonly redisOptions?: RedisOptions;
  readonly logger: Logger;
  /** rows: done so far, including `startRows` that a resumed run found done. */
  readonly onProgress?: (p: { rows: number; totalRows: number; startRows: number }) => void;
  readonly signal?: AbortSignal;
  /** Chunks in the model at once. Default 4. */
  readonly window?: number;
  /** The table lock's lifetime (renewed every third of it while the run lives): how long a crashed run blocks the next. Default 30 s. */
  readonly lockTtlMs?: number;
}

export interface PrecomputeSummary {
  readonly table: string;
  readonly runId: string;
  readonly totalRows: number;
  /** Rows computed by this invocation (a resumed run skips the finished chunks). */
  readonly rows: number;
  readonly chunks: number;
  readonly resumedChunks: number;
  readonly seconds: number;
  readonly rowsPerSecond: number;
  readonly buckets: number | undefined;
  readonly parquet: string | undefined;
}

/** Rows per Redis hash bucket: small hashes stay in Redis's compact listpack encoding. */
const ROWS_PER_BUCKET = 100;

export async function precompute(options: PrecomputeOptions): Promise<PrecomputeSummary> {
  const started = performance.now();
  const { spec, model } = options;
  const table = spec.spec.table;
  const useRedis = options.to !== 'parquet';
  const useParquet = options.to !== 'redis';
  if (useParquet && spec.spec.parquet === undefined) throw new ConfigError(`--to ${options.to}: the spec has no parquet.path`);
  if (useRedis && options.redis === undefined) throw new ConfigError(`--to ${options.to}: no Redis URL (--redis or REDIS_URL)`);
  const log = options.logger.child({ table });
  const keys = tableKeys(spec.spec.redis.prefix, table);
  const parquetBase = useParquet ? parseLocation(spec.spec.parquet!.path) : undefined;
  const owner = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
  let renew: NodeJS.Timeout | undefined;
  let bulk: RespConnection | undefined;
  // Everything that can fail before the try below opens nothing: a client left open kept the process alive.
  const { space, close: closeSpace } = await openSpace(spec);
  const redis = useRedis
    ? await connectRedis(options.redis!, options.redisOptions).catch(async (err: unknown) => {
        await closeSpace();
        throw err;
      })
    : undefined;
  try {
    if (redis !== undefined) {
      const ttl = options.lockTtlMs ?? 30_000;
      await lock(redis, keys, owner, table, ttl);
      renew = setInterval(() => void renewLock(redis, keys, owner, ttl).catch((err: unknown) => log.warn({ err }, 'could not renew the table lock')), ttl / 3);
      // The rows' connection, to the server and database ioredis parsed from the same URL.
      bulk = await RespConnection.open(redis.options);
    }
    const buckets = Math.max(1, Math.ceil(space.total / ROWS_PER_BUCKET));
    // redisChunk sorts a chunk's rows by bucket · rows + row, which must stay an exact double.
    if (buckets * space.chunkRows > Number.MAX_SAFE_INTEGER) throw new ConfigError(`the space has ${space.total} rows: too many for chunks of ${space.chunkRows} rows (buckets × chunkRows must stay under 2^53); use smaller chunks`);
    const resumed = await findResumable(redis, keys, parquetBase, spec.hash, model);
    const runId = resumed ?? `${new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${randomBytes(3).toString('hex')}`;
    const done = new Set<number>();
    if (resumed !== undefined) {
      if (redis !== undefined) for (const i of await redis.smembers(keys.done(runId))) done.add(Number(i));
      else for (const e of await parquetBase!.store.list(posix.join(parquetBase!.path, runId))) {
        const m = /^part-(\d+)\.parquet$/.exec(e.name);
        if (m !== null) done.add(Number(m[1]));
      }
      log.info({ runId, done: done.size, chunks: space.chunkCount }, 'resuming an unfinished run');
    } else {
      const meta = { specHash: spec.hash, model: model.name, version: model.version, buckets: String(buckets), totalRows: String(space.total), chunks: String(space.chunkCount), status: 'running', startedAt: new Date().toISOString() };
      if (redis !== undefined) await redis.multi().hset(keys.meta(runId), meta).set(keys.running, runId).exec();
      if (parquetBase !== undefined) await parquetBase.store.putBytes(posix.join(parquetBase.path, '_running.json'), new TextEncoder().encode(JSON.stringify({ runId, ...meta })));
    }

    const encode = await makeEncoder(spec, space, model.inputs);
    const batcher = new DynamicBatcher(model.runner, {
      ...model.batching,
      inputs: model.inputs,
      model: model.name,
      version: model.version,
      maxPendingRows: (options.window ?? 4) * space.chunkRows,
      maxInFlightBatches: 32,
    });
    let rows = 0;
    const startRows = [...done].reduce((s, i) => s + Math.min(space.chunkRows, space.total - i * space.chunkRows), 0);
    let progressRows = startRows;
    try {
      const queue: Promise<void>[] = [];
      const recycled: TensorMap[] = [];
      for await (const chunk of space.chunks((i) => done.has(i))) {
        options.signal?.throwIfAborted();
        const tensors = await encode(chunk, recycled.pop());
        // What the chunk's writes need, as bytes, before it waits for the model: no string per
        // row lives past this turn (surviving strings made every young-generation GC copy them).
        const { index, rows: n } = chunk;
        const rowKeys = utf8Bytes(renderKeys(spec, chunk));
        const columns = parquetBase === undefined ? [] : Object.entries(chunk.columns).map(([name, col]) => ({ name, data: utf8Data(col.map(String)) }));
        const work = batcher.submit({ id: `${table}#${index}`, tensors, rows: n }).then(async (outputs) => {
          const redisWrite = bulk === undefined ? undefined : redisChunk(keys, runId, buckets, index, rowKeys, outputs);
          if (parquetBase !== undefined) await writeParquetChunk(parquetBase, runId, index, n, rowKeys, columns, outputs);
          // The chunk counts as done only together with its rows (one pipeline; a crash before it re-runs the chunk).
          if (redisWrite !== undefined) await bulk!.send(redisWrite.payload, redisWrite.replies, `writing chunk ${index}`);
          recycled.push(tensors);
          rows += n;
          progressRows += n;
          options.onProgress?.({ rows: progressRows, totalRows: space.total, startRows });
        });
        work.catch(() => undefined); // awaited below, in order
        queue.push(work);
        if (queue.length >= (options.window ?? 4)) await queue.shift();
      }
      while (queue.length > 0) await queue.shift();
    } finally {
      await batcher.close(0);
    }

    if (parquetBase !== undefined) {
      await parquetBase.store.putBytes(posix.join(parquetBase.path, runId, '_SUCCESS'), new Uint8Array(0));
      await parquetBase.store.delete(posix.join(parquetBase.path, '_running.json'));
    }
    if (redis !== undefined) await publish(redis, keys, runId, buckets, spec.spec.redis.graceSeconds);
    const seconds = (performance.now() - started) / 1000;
    log.info({ runId, rows, seconds }, 'precompute run complete');
    return {
      table,
      runId,
      totalRows: space.total,
      rows,
      chunks: space.chunkCount,
      resumedChunks: done.size,
      seconds,
      rowsPerSecond: rows / seconds,
      buckets: redis === undefined ? undefined : buckets,
      parquet: parquetBase === undefined ? undefined : `${spec.spec.parquet!.path.replace(/\/+$/, '')}/${runId}/`,
    };
  } finally {
    clearInterval(renew);
    bulk?.close();
    await closeSpace();
    if (redis !== undefined) {
      await unlock(redis, keys, owner).catch(() => undefined);
      redis.disconnect();
    }
  }
}

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

async function lock(redis: Redis, keys: TableKeys, owner: string, table: string, ttlMs: number): Promise<void> {
  const ok = await redis.set(keys.lock, owner, 'PX', ttlMs, 'NX');
  if (ok !== 'OK') {
    const holder = await redis.get(keys.lock);
    throw new InferqError(`table "${table}": a run is already in progress (held by ${holder ?? 'another process'}); at most one run per table at a time`, { retriable: true, code: 'BUSY' });
  }
}

const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`;
const UNLOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;

async function renewLock(redis: Redis, keys: TableKeys, owner: string, ttlMs: number): Promise<void> {
  await redis.eval(RENEW, 1, keys.lock, owner, String(ttlMs));
}

async function unlock(redis: Redis, keys: TableKeys, owner: string): Promise<void> {
  await redis.eval(UNLOCK, 1, keys.lock, owner);
}

/** The unfinished run of the same spec and model version, if one was left (crash, kill). */
async function findResumable(redis: Redis | undefined, keys: TableKeys, parquet: Location | undefined, specHash: string, model: LoadedModel): Promise<string | undefined> {
  const same = (m: Record<string, string>): boolean => m['specHash'] === specHash && m['model'] === model.name && m['version'] === model.version && m['status'] === 'running';
  if (redis !== undefined) {
    const runId = await redis.get(keys.running);
    if (runId === null) return undefined;
    return same(await redis.hgetall(keys.meta(runId))) ? runId : undefined;
  }
  const path = posix.join(parquet!.path, '_running.json');
  if (!(await parquet!.store.exists(path))) return undefined;
  const m = JSON.parse((await parquet!.store.readFile(path)).toString('utf8')) as Record<string, string>;
  return same(m) ? m['runId'] : undefined;
}

/**
 * The table value of each row as JSON text, `{"<output>": number | number[], …}` (NaN and ±Inf
 * as null, as JSON.stringify writes them), built without an object per row (names escaped once).
 */
export function rowJson(outputs: TensorMap): (row: number) => string {
  const cols = Object.entries(outputs).map(([name, t], i) => ({
    prefix: `${i === 0 ? '{' : ','}${JSON.stringify(name)}:`,
    data: t.data as ArrayLike<number | bigint>,
    width: t.shape.slice(1).reduce((a, b) => a * b, 1),
  }));
  const num = (v: number | bigint): string => {
    const n = Number(v);
    return Number.isFinite(n) ? String(n) : 'null';
  };
  return (row) => {
    let out = '';
    for (const c of cols) {
      out += c.prefix;
      if (c.width === 1) out += num(c.data[row]!);
      else {
        out += '[';
        for (let k = 0; k < c.width; k++) out += (k === 0 ? '' : ',') + num(c.data[row * c.width + k]!);
        out += ']';
      }
    }
    return cols.length === 0 ? '{}' : out + '}';
  };
}

/**
 * A chunk's Redis writes as protocol bytes: one HSET per bucket its rows fall in (fields in row
 * order), then SADD of the chunk to the run's checkpoint. The JSON values exist as strings only
 * inside this call.
 */
export function redisChunk(keys: TableKeys, runId: string, buckets: number, index: number, rowKeys: Utf8Bytes, outputs: TensorMap): { payload: Buffer; replies: number } {
  const n = rowKeys.offsets.length - 1;
  const json = rowJson(outputs);
  const values = utf8Bytes(Array.from({ length: n }, (_, r) => json(r)));
  const { offsets: ko, bytes: kb } = rowKeys;
  const { offsets: vo, bytes: vb } = values;
  // bucket · n + row, sorted natively: rows grouped by bucket, in row order within one.
  const order = new Float64Array(n);
  for (let r = 0; r < n; r++) order[r] = tableBucketOfBytes(kb, ko[r]!, ko[r + 1]!, buckets) * n + r;
  order.sort();
  const out = new RespBuilder(kb.length + vb.length + 24 * n + 4096);
  let replies = 0;
  for (let i = 0; i < n; ) {
    const bucket = Math.floor(order[i]! / n);
    let j = i + 1;
    while (j < n && Math.floor(order[j]! / n) === bucket) j++;
    out.array(2 + 2 * (j - i)).bulkString('HSET').bulkString(keys.bucket(runId, bucket));
    for (; i < j; i++) {
      const r = order[i]! - bucket * n;
      out.bulk(kb, ko[r]!, ko[r + 1]!).bulk(vb, vo[r]!, vo[r + 1]!);
    }
    replies++;
  }
  out.command('SADD', keys.done(runId), String(index));
  return { payload: out.finish(), replies: replies + 1 };
}

/** The swap: `current` moves to the new run in one MULTI with the old version's expiry. */
async function publish(redis: Redis, keys: TableKeys, runId: string, buckets: number, graceSeconds: number): Promise<void> {
  const old = parseTablePointer(await redis.get(keys.current));
  const multi = redis.multi().set(keys.current, `${runId}:${buckets}`).hset(keys.meta(runId), 'status', 'complete', 'finishedAt', new Date().toISOString()).del(keys.running).del(keys.done(runId));
  if (old !== undefined && old.runId !== runId) {
    for (let b = 0; b < old.buckets; b++) multi.expire(keys.bucket(old.runId, b), Math.max(1, graceSeconds));
    multi.expire(keys.meta(old.runId), Math.max(1, graceSeconds));
  }
  const results = await multi.exec();
  if (results === null || results.some(([err]) => err !== null)) throw new DataIOError(`redis: publishing run ${runId} failed`, { retriable: true });
}

async function writeParquetChunk(
  base: Location,
  runId: string,
  index: number,
  rows: number,
  rowKeys: Utf8Bytes,
  columns: readonly { name: string; data: Data }[],
  outputs: TensorMap,
): Promise<void> {
  const fields: Field[] = [new Field('key', new Utf8(), false)];
  const children: Data[] = [utf8DataOf(rowKeys)];
  for (const { name, data } of columns) {
    fields.push(new Field(name, new Utf8(), false));
    children.push(data);
  }
  for (const [name, t] of Object.entries(outputs)) {
    const { field, data } = tensorToColumn(name, dense(t));
    fields.push(field);
    children.push(data);
  }
  const batch = new RecordBatch(new Schema(fields), makeData({ type: new Struct(fields), length: rows, children, nullCount: 0 }));
  const dir = await mkdtemp(join(tmpdir(), 'inferq-precompute-'));
  try {
    const tmp = join(dir, 'part.parquet');
    const writer = await createParquetWriter(tmp);
    await writer.write(batch);
    await writer.close();
    await base.store.putFile(tmp, posix.join(base.path, runId, `part-${String(index).padStart(5, '0')}.parquet`));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Model outputs may be views into a larger buffer; Arrow wants its own. */
function dense(t: Tensor): Tensor {
  const data = allocate(t.dtype, t.data.length);
  (data as Float32Array).set(t.data as Float32Array);
  return { dtype: t.dtype, shape: t.shape, data };
}
