/**
 * Computing and writing chunks of a precompute run: the unit of work of every mode (one
 * process, queue tasks, Indexed Job shards).
 *
 * ```
 *  space chunks [from, to) not skipped ─► encode ─► throughput batcher ─► model
 *     │   (before the model: the chunk's keys, and its columns for Parquet, become UTF-8 bytes)
 *     └► per chunk: Parquet part-<chunk>.parquet (temp + rename)  and/or  Redis: HSET into the
 *        run's hash buckets + SADD the chunk to the run's checkpoint, in one pipeline of
 *        protocol bytes (resp.ts)
 * ```
 *
 * Every write is idempotent: a chunk computed twice (a resumed run, a task redone after a
 * worker died) writes the same fields and the same file again.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { Field, RecordBatch, Schema, Struct, Utf8, makeData } from 'apache-arrow';
import type { Data } from 'apache-arrow';
import type { Redis } from 'ioredis';
import { allocate, tableBucketOfBytes } from '@inferq/shared';
import type { TableKeys, Tensor, TensorMap } from '@inferq/shared';
import { DynamicBatcher } from '../batching/batcher.js';
import { createParquetWriter } from '../io/parquet.js';
import { utf8Bytes, utf8Data, utf8DataOf } from '../io/utf8.js';
import type { Utf8Bytes } from '../io/utf8.js';
import type { Location } from '../io/store.js';
import type { LoadedModel } from '../models/loaded-model.js';
import { tensorToColumn } from '../predict/columns.js';
import { RespBuilder } from './resp.js';
import type { RespConnection } from './resp.js';
import { renderKeys } from './space.js';
import type { Encoder, Space } from './space.js';
import type { LoadedSpec } from './spec.js';

/** Rows per Redis hash bucket: small hashes stay in Redis's compact listpack encoding. */
export const ROWS_PER_BUCKET = 100;

/** The hash buckets of a table version over a space of `total` rows. */
export const bucketsOf = (total: number): number => Math.max(1, Math.ceil(total / ROWS_PER_BUCKET));

/** Rows of chunk `index` of a space. */
export const chunkRowsOf = (space: { total: number; chunkRows: number }, index: number): number => Math.max(0, Math.min(space.chunkRows, space.total - index * space.chunkRows));

/** Where a run's chunks go. */
export interface ChunkTarget {
  readonly keys: TableKeys;
  readonly runId: string;
  readonly buckets: number;
  /** The Parquet table's folder (part files go under `<path>/<runId>/`). */
  readonly parquet: Location | undefined;
  /** The rows' connection: Redis targets; the checkpoint SADD rides in the same pipeline. */
  readonly bulk: RespConnection | undefined;
  /** A Parquet-only run checkpointed in Redis (distributed runs): SADD after the part file is in place. */
  readonly checkpoint?: Redis | undefined;
}

export interface ComputeChunksOptions {
  readonly spec: LoadedSpec;
  readonly space: Space;
  readonly model: LoadedModel;
  readonly encode: Encoder;
  /** Chunks in the model at once. Default 4. */
  readonly window?: number | undefined;
  readonly signal?: AbortSignal | undefined;
  /** Chunks to compute: [from, to) of the space, minus those `skip` says are done. Default: all. */
  readonly range?: readonly [number, number] | undefined;
  /** Called once each chunk is durably written. */
  readonly onChunk?: ((index: number, rows: number) => void) | undefined;
}

/** Computes and writes the chunks asked for, in order, a window of them in the model at once; returns the rows written. */
export async function computeChunks(target: ChunkTarget, options: ComputeChunksOptions, skip: (index: number) => boolean): Promise<number> {
  const { spec, space, model, encode } = options;
  const window = options.window ?? 4;
  const batcher = new DynamicBatcher(model.runner, {
    ...model.batching,
    inputs: model.inputs,
    model: model.name,
    version: model.version,
    maxPendingRows: window * space.chunkRows,
    maxInFlightBatches: 32,
  });
  let rows = 0;
  try {
    const queue: Promise<void>[] = [];
    const recycled: TensorMap[] = [];
    for await (const chunk of space.chunks(skip, options.range)) {
      options.signal?.throwIfAborted();
      const tensors = await encode(chunk, recycled.pop());
      // What the chunk's writes need, as bytes, before it waits for the model: no string per
      // row lives past this turn (surviving strings made every young-generation GC copy them).
      const { index, rows: n } = chunk;
      const rowKeys = utf8Bytes(renderKeys(spec, chunk));
      const columns = target.parquet === undefined ? [] : Object.entries(chunk.columns).map(([name, col]) => ({ name, data: utf8Data(col.map(String)) }));
      const work = batcher.submit({ id: `${spec.spec.table}#${index}`, tensors, rows: n }).then(async (outputs) => {
        const redisWrite = target.bulk === undefined ? undefined : redisChunk(target.keys, target.runId, target.buckets, index, rowKeys, outputs);
        if (target.parquet !== undefined) await writeParquetChunk(target.parquet, target.runId, index, n, rowKeys, columns, outputs);
        // The chunk counts as done only together with its rows (one pipeline; a crash before it re-runs the chunk).
        if (redisWrite !== undefined) await target.bulk!.send(redisWrite.payload, redisWrite.replies, `writing chunk ${index}`);
        else if (target.checkpoint !== undefined) await target.checkpoint.sadd(target.keys.done(target.runId), String(index));
        recycled.push(tensors);
        rows += n;
        options.onChunk?.(index, n);
      });
      work.catch(() => undefined); // awaited below, in order
      queue.push(work);
      if (queue.length >= window) await queue.shift();
    }
    while (queue.length > 0) await queue.shift();
  } finally {
    await batcher.close(0);
  }
  return rows;
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

/** The part file of a chunk, under the run's folder of the Parquet table. */
export const partPath = (base: Location, runId: string, index: number): string => posix.join(base.path, runId, `part-${String(index).padStart(5, '0')}.parquet`);

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
    await base.store.putFile(tmp, partPath(base, runId, index));
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
