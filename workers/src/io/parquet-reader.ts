/**
 * Streaming Parquet reader producing apache-arrow RecordBatches.
 *
 *   open ─► footer (JS, validated) ─► plan per field
 *            ├─ every selected field decodable in JS ─► per row group: read column chunks
 *            │                                           ─► decode.ts ─► compact batch slices
 *            └─ otherwise ─► parquet-wasm in a worker (wasm-reader.ts)
 *
 * Memory is bounded by about one row group (its compressed chunks + decoded
 * columns). Every failure — missing file, bad magic, truncation, corrupt
 * footer or pages, a wasm panic — surfaces as a DataIOError naming the path.
 */
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { Data , Field} from 'apache-arrow';
import { RecordBatch, Schema, Struct, makeData } from 'apache-arrow';
import { DataIOError } from '@inferq/shared';
import { Scratch, decodeColumnChunk } from './decode.js';
import type { FileMeta } from './parquet-format.js';
import { readExactly, readFileMeta } from './parquet-format.js';
import type { FilePlan } from './plan.js';
import { planFile } from './plan.js';
import { sliceCompact } from './slice.js';
import { CorruptDataError } from './thrift.js';
import { wasmBatches, wasmSchema } from './wasm-reader.js';

export interface ReadOptions {
  /** Most rows per batch. Default: 65,536. */
  readonly batchSize?: number;
  /** Columns to read (top-level names); batches keep the file's column order. Default: all. */
  readonly columns?: readonly string[];
  /** Row groups to read, [first, end) (a task's share of the file). Default: all. */
  readonly rowGroups?: readonly [number, number];
}

export interface ParquetReader {
  readonly path: string;
  /** Arrow schema of the whole file. */
  readonly schema: Schema;
  readonly numRows: number;
  readonly numRowGroups: number;
  /** Rows of each row group, from the footer. */
  readonly rowGroupRows: readonly number[];
  /**
   * Record batches of at most `batchSize` rows, in file order. Streaming:
   * memory is bounded by about one row group. May be called more than once.
   */
  batches(options?: ReadOptions): AsyncIterable<RecordBatch>;
  close(): Promise<void>;
}

export const DEFAULT_BATCH_SIZE = 65_536;

/** Human reason for a failed open/read of `path`. */
export function describeFsError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
      return 'no such file';
    case 'EISDIR':
      return 'is a directory';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    default:
      return err instanceof Error ? err.message : String(err);
  }
}

function inputError(path: string, what: string, cause?: unknown): DataIOError {
  return new DataIOError(`input "${path}": ${what}`, { cause });
}

/** Opens a Parquet file and reads its footer. Fails with a DataIOError naming the path. */
export async function openParquet(path: string): Promise<ParquetReader> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    throw inputError(path, describeFsError(err), err);
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw inputError(path, 'not a regular file');
    const meta = await readFileMeta(handle, stat.size);
    const plan = planFile(meta);
    const allFast = plan.fast.size === plan.names.length;
    let schema: Schema;
    if (allFast && plan.schema !== undefined) schema = plan.schema;
    else {
      try {
        schema = await wasmSchema(path);
      } catch (err) {
        throw inputError(path, `cannot read the schema (${err instanceof Error ? err.message : String(err)})`, err);
      }
    }
    return new Reader(path, handle, meta, plan, schema);
  } catch (err) {
    await handle.close();
    if (err instanceof CorruptDataError) throw inputError(path, err.message, err);
    if (err instanceof DataIOError) throw err;
    throw inputError(path, describeFsError(err), err);
  }
}

class Reader implements ParquetReader {
  readonly numRows: number;
  readonly numRowGroups: number;
  readonly rowGroupRows: readonly number[];
  private closed = false;

  constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private readonly meta: FileMeta,
    private readonly plan: FilePlan,
    readonly schema: Schema,
  ) {
    this.numRows = meta.numRows;
    this.numRowGroups = meta.rowGroups.length;
    this.rowGroupRows = meta.rowGroups.map((rg) => rg.numRows);
  }

  batches(options: ReadOptions = {}): AsyncIterable<RecordBatch> {
    const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new DataIOError(`input "${this.path}": batchSize must be a positive integer, got ${batchSize}`);
    }
    const names = this.plan.names;
    let selected: string[];
    if (options.columns === undefined) selected = [...names];
    else {
      const wanted = new Set(options.columns);
      for (const c of wanted) {
        if (!names.includes(c)) throw inputError(this.path, `no column "${c}" (columns: ${names.join(', ')})`);
      }
      selected = names.filter((n) => wanted.has(n));
    }
    const range = this.rowGroupRange(options.rowGroups);
    const fast = selected.every((n) => this.plan.fast.has(n));
    return fast ? this.fastBatches(selected, batchSize, range) : this.wasmBatches(selected, batchSize, options.columns !== undefined, range);
  }

  private rowGroupRange(range: readonly [number, number] | undefined): readonly [number, number] {
    if (range === undefined) return [0, this.numRowGroups];
    const [first, end] = range;
    if (!Number.isInteger(first) || !Number.isInteger(end) || first < 0 || end < first || end > this.numRowGroups) {
      throw inputError(this.path, `row groups [${first}, ${end}) are not a range of its ${this.numRowGroups} row groups`);
    }
    return [first, end];
  }

  private async *fastBatches(selected: readonly string[], batchSize: number, [first, end]: readonly [number, number]): AsyncGenerator<RecordBatch> {
    const plans = selected.map((n) => this.plan.fast.get(n)).filter((p) => p !== undefined);
    const schema = new Schema(
      plans.map((p) => p.field),
      this.schema.metadata,
    );
    const struct = new Struct(schema.fields as Field[]);
    // Column chunks are read one ahead of decoding (I/O overlaps CPU) into two reused buffers.
    const jobs = this.meta.rowGroups.flatMap((rg, g) => (rg.numRows === 0 || g < first || g >= end ? [] : plans.map((plan) => ({ g, rg, plan }))));
    const buffers = [new Uint8Array(0), new Uint8Array(0)];
    const scratch = new Scratch();
    const read = async (k: number): Promise<Uint8Array> => {
      const job = jobs[k];
      if (job === undefined) return new Uint8Array(0);
      const chunk = job.rg.columns[job.plan.leafIndex];
      if (chunk === undefined) throw new CorruptDataError(`row group ${job.g} lacks column "${job.plan.field.name}"`);
      const slot = k % 2;
      if ((buffers[slot] as Uint8Array).length < chunk.totalCompressedSize) buffers[slot] = new Uint8Array(chunk.totalCompressedSize);
      const bytes = (buffers[slot] as Uint8Array).subarray(0, chunk.totalCompressedSize);
      await readExactly(this.handle, bytes, chunk.start);
      return bytes;
    };
    let pending = jobs.length > 0 ? read(0) : undefined;
    pending?.catch(() => undefined); // awaited below; avoid an unhandled rejection meanwhile
    let columns: Data[] = [];
    for (let k = 0; k < jobs.length; k++) {
      const { g, rg, plan } = jobs[k] as (typeof jobs)[number];
      this.checkOpen();
      try {
        const bytes = await (pending as Promise<Uint8Array>);
        pending = k + 1 < jobs.length ? read(k + 1) : undefined;
        pending?.catch(() => undefined);
        const chunk = rg.columns[plan.leafIndex];
        if (chunk === undefined) throw new CorruptDataError(`row group ${g} lacks column "${plan.field.name}"`);
        columns.push(decodeColumnChunk(bytes, chunk, plan, rg.numRows, scratch));
      } catch (err) {
        if (err instanceof DataIOError) throw err;
        const what = err instanceof CorruptDataError ? err.message : describeFsError(err);
        throw inputError(this.path, `row group ${g}, column "${plan.field.name}": ${what}`, err);
      }
      if (columns.length < plans.length) continue;
      for (let start = 0; start < rg.numRows; start += batchSize) {
        const length = Math.min(batchSize, rg.numRows - start);
        const children = columns.map((c) => sliceCompact(c, start, length));
        yield new RecordBatch(schema, makeData({ type: struct, length, nullCount: 0, children }));
      }
      columns = [];
    }
  }

  private async *wasmBatches(selected: readonly string[], batchSize: number, projected: boolean, [first, end]: readonly [number, number]): AsyncGenerator<RecordBatch> {
    this.checkOpen();
    if (first === end) return;
    const all = first === 0 && end === this.numRowGroups;
    const rowGroups = all ? undefined : Array.from({ length: end - first }, (_, i) => first + i);
    try {
      for await (const batch of wasmBatches(this.path, { batchSize, columns: projected ? selected : undefined, ...(rowGroups === undefined ? {} : { rowGroups }) })) {
        this.checkOpen();
        yield batch;
      }
    } catch (err) {
      if (err instanceof DataIOError) throw err;
      throw inputError(this.path, `cannot decode (${err instanceof Error ? err.message : String(err)})`, err);
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new DataIOError(`input "${this.path}": reader is closed`);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}
