/**
 * Atomic, streaming Parquet writer (parquet-wasm / arrow-rs ArrowWriter).
 *
 *   write(batch) ─► Arrow IPC ─► wasm RecordBatch ─► transformParquetStream ─► bytes ─► .<name>.inprogress-<pid>-<rand>
 *   close()      ─► flush footer ─► fsync file ─► rename onto <name> ─► fsync directory
 *   abort()      ─► stop the stream ─► unlink the temp file (the final path is never touched)
 *
 * The temporary file lives in the destination directory (so the rename is
 * atomic) and is hidden; nothing half-written is ever visible at the final
 * path. Row groups are flushed every `rowGroupRows` rows, so memory stays
 * bounded by about one row group.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, open, rename, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, dirname, join, resolve } from 'node:path';
import type { RecordBatch, Schema } from 'apache-arrow';
import { RecordBatchStreamWriter, Table, tableToIPC } from 'apache-arrow';
import { DataIOError } from '@inferq/shared';
import type * as ParquetWasm from 'parquet-wasm/node';
import { describeFsError } from './parquet-reader.js';

export type ParquetCompression = 'snappy' | 'zstd' | 'none';

export interface WriterOptions {
  /** Codec for every column. Default: 'snappy'. */
  readonly compression?: ParquetCompression;
  /** Most rows per row group. Default: 131,072. */
  readonly rowGroupRows?: number;
  /** Schema used when close() is reached without any batch (writes an empty file). Default: none (then close() fails). */
  readonly schema?: Schema;
}

export interface WriteResult {
  readonly rows: number;
  readonly bytes: number;
  readonly path: string;
}

export interface ParquetWriter {
  readonly path: string;
  /** Appends a batch; all batches must share the first one's schema. */
  write(batch: RecordBatch): Promise<void>;
  /** Flushes, fsyncs and renames the temporary file into place. */
  close(): Promise<WriteResult>;
  /** Removes the temporary file; the final path is left untouched. Safe to call after a failure. */
  abort(): Promise<void>;
}

export const DEFAULT_ROW_GROUP_ROWS = 131_072;

let wasmModule: typeof ParquetWasm | undefined;
/** parquet-wasm, loaded on first use (compiling it takes ~100 ms). */
function wasm(): typeof ParquetWasm {
  wasmModule ??= createRequire(import.meta.url)('parquet-wasm/node') as typeof ParquetWasm;
  return wasmModule;
}

function outputError(path: string, what: string, cause?: unknown): DataIOError {
  return new DataIOError(`output "${path}": ${what}`, { cause });
}

/**
 * Creates the temporary file next to `path` right away, so a missing or
 * read-only directory fails here — before any prediction work — with a
 * DataIOError naming the path.
 */
export async function createParquetWriter(path: string, options: WriterOptions = {}): Promise<ParquetWriter> {
  const rowGroupRows = options.rowGroupRows ?? DEFAULT_ROW_GROUP_ROWS;
  if (!Number.isInteger(rowGroupRows) || rowGroupRows < 1) {
    throw outputError(path, `rowGroupRows must be a positive integer, got ${rowGroupRows}`);
  }
  const compression = options.compression ?? 'snappy';
  if (!['snappy', 'zstd', 'none'].includes(compression)) {
    throw outputError(path, `unknown compression "${String(compression)}" (snappy, zstd or none)`);
  }
  const finalPath = resolve(path);
  const dir = dirname(finalPath);
  try {
    const s = await stat(dir);
    if (!s.isDirectory()) throw outputError(path, `"${dir}" is not a directory`);
    await access(dir, constants.W_OK);
  } catch (err) {
    if (err instanceof DataIOError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' || code === 'EPERM' ? 'is not writable' : describeFsError(err);
    throw outputError(path, `directory "${dir}" ${why}`, err);
  }
  try {
    const s = await stat(finalPath);
    if (s.isDirectory()) throw outputError(path, 'is a directory');
  } catch (err) {
    if (err instanceof DataIOError) throw err;
    // ENOENT: the usual case
  }
  const tmp = join(dir, `.${basename(finalPath)}.inprogress-${process.pid}-${randomBytes(6).toString('hex')}`);
  let handle: FileHandle;
  try {
    handle = await open(tmp, 'wx');
  } catch (err) {
    throw outputError(path, `cannot create a file in "${dir}" (${describeFsError(err)})`, err);
  }
  return new Writer(path, finalPath, tmp, handle, { compression, rowGroupRows, schema: options.schema });
}

type State = 'open' | 'closing' | 'closed' | 'aborted' | 'failed';

class Writer implements ParquetWriter {
  private state: State = 'open';
  private rows = 0;
  private bytes = 0;
  private schema: Schema | undefined;
  private controller: ReadableStreamDefaultController<ParquetWasm.RecordBatch> | undefined;
  private pump: Promise<void> | undefined;
  private pumpError: unknown;
  /** Resolves when the wasm side wants more input (backpressure). */
  private demand: (() => void) | undefined;
  private closing: Promise<WriteResult> | undefined;

  constructor(
    readonly path: string,
    private readonly finalPath: string,
    private readonly tmp: string,
    private readonly handle: FileHandle,
    private readonly options: { compression: ParquetCompression; rowGroupRows: number; schema: Schema | undefined },
  ) {}

  /** `first`: the first batch, from which string columns whose values do not repeat are told apart. */
  private properties(schema: Schema, first?: RecordBatch): ParquetWasm.WriterProperties {
    const pw = wasm();
    const codec =
      this.options.compression === 'snappy'
        ? pw.Compression.SNAPPY
        : this.options.compression === 'zstd'
          ? pw.Compression.ZSTD
          : pw.Compression.UNCOMPRESSED;
    // Dictionaries pay off for repeated strings; for floats (scores, features) and unique strings (row ids) they only cost time.
    let builder = new pw.WriterPropertiesBuilder()
      .setCompression(codec)
      .setMaxRowGroupSize(this.options.rowGroupRows)
      .setDictionaryEnabled(false)
      .setCreatedBy('inferq (parquet-wasm)');
    for (const f of schema.fields) {
      const id = String(f.type);
      if ((id === 'Utf8' || id === 'Binary' || id === 'LargeUtf8') && repeats(first, f.name)) builder = builder.setColumnDictionaryEnabled(f.name, true);
    }
    return builder.build();
  }

  private start(schema: Schema, first: RecordBatch): void {
    const pw = wasm();
    const input = new ReadableStream<ParquetWasm.RecordBatch>(
      {
        start: (c) => {
          this.controller = c;
        },
        pull: () => {
          const d = this.demand;
          this.demand = undefined;
          d?.();
        },
      },
      { highWaterMark: 1 },
    );
    const properties = this.properties(schema, first);
    // transformParquetStream resolves only once it has read the first batch: not awaited here.
    this.pump = (async () => {
      const output = (await pw.transformParquetStream(input, properties)) as unknown as AsyncIterable<Uint8Array>;
      for await (const chunk of output) {
        await this.handle.write(chunk);
        this.bytes += chunk.length;
      }
    })().catch((err: unknown) => {
      this.pumpError = err;
      const d = this.demand;
      this.demand = undefined;
      d?.();
    });
  }

  private checkPump(): void {
    if (this.pumpError !== undefined) {
      this.state = 'failed';
      const e = this.pumpError;
      throw outputError(this.path, `writing failed (${e instanceof Error ? e.message : String(e)})`, e);
    }
  }

  async write(batch: RecordBatch): Promise<void> {
    if (this.state !== 'open') throw outputError(this.path, `write() after ${this.state === 'closing' ? 'close()' : this.state}`);
    if (this.schema === undefined) {
      this.schema = batch.schema;
      this.start(batch.schema, batch);
    } else if (!sameSchema(this.schema, batch.schema)) {
      throw outputError(this.path, `batch schema (${describeSchema(batch.schema)}) differs from the first batch's (${describeSchema(this.schema)})`);
    }
    this.checkPump();
    if (batch.numRows === 0) return;
    const pw = wasm();
    let wasmBatches: ParquetWasm.RecordBatch[];
    try {
      const ipc = RecordBatchStreamWriter.writeAll([batch]).toUint8Array(true);
      wasmBatches = pw.Table.fromIPCStream(ipc).recordBatches();
    } catch (err) {
      throw outputError(this.path, `cannot convert batch (${err instanceof Error ? err.message : String(err)})`, err);
    }
    const controller = this.controller;
    if (controller === undefined) throw outputError(this.path, 'writer not started');
    for (const b of wasmBatches) {
      if ((controller.desiredSize ?? 1) <= 0) {
        await new Promise<void>((r) => {
          this.demand = r;
        });
        this.checkPump();
      }
      controller.enqueue(b);
    }
    this.rows += batch.numRows;
  }

  close(): Promise<WriteResult> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<WriteResult> {
    if (this.state !== 'open') throw outputError(this.path, `close() after ${this.state}`);
    this.state = 'closing';
    try {
      if (this.schema === undefined) {
        const schema = this.options.schema;
        if (schema === undefined) throw outputError(this.path, 'no batch was written and no schema was given');
        const pw = wasm();
        const bytes = pw.writeParquet(pw.Table.fromIPCStream(tableToIPC(new Table(schema), 'stream')), this.properties(schema));
        await this.handle.write(bytes);
        this.bytes = bytes.length;
      } else {
        this.controller?.close();
        await this.pump;
        this.checkPump();
      }
      await this.handle.sync();
      await this.handle.close();
      await rename(this.tmp, this.finalPath);
      await syncDir(dirname(this.finalPath));
      this.state = 'closed';
      return { rows: this.rows, bytes: this.bytes, path: this.path };
    } catch (err) {
      this.state = 'failed';
      await this.discard();
      if (err instanceof DataIOError) throw err;
      throw outputError(this.path, describeFsError(err), err);
    }
  }

  async abort(): Promise<void> {
    if (this.state === 'closed' || this.state === 'aborted') return;
    if (this.state === 'closing') {
      // let close() finish or fail; a failed close already removed the temp file
      await this.closing?.catch(() => undefined);
      if ((this.state as State) === 'closed') return;
    }
    this.state = 'aborted';
    try {
      this.controller?.error(new Error('aborted'));
    } catch {
      // stream already closed or errored: nothing to stop
    }
    await this.pump;
    await this.discard();
  }

  private async discard(): Promise<void> {
    await this.handle.close().catch(() => undefined); // may be closed already
    try {
      await unlink(this.tmp);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw outputError(this.path, `cannot remove "${this.tmp}" (${describeFsError(err)})`, err);
    }
  }
}

/** String values looked at to decide whether a column's dictionary pays. */
const DICTIONARY_SAMPLE = 1024;
/** Fewer values than this in the first batch say nothing: the column keeps its dictionary. */
const DICTIONARY_MIN_SAMPLE = 64;

/**
 * Whether the values of string column `name` repeat in `batch` (at most half of a sample distinct).
 * With no batch, or too few values, to look at, they are taken to repeat.
 */
function repeats(batch: RecordBatch | undefined, name: string): boolean {
  const column = batch?.getChild(name);
  if (column === undefined || column === null || column.length < DICTIONARY_MIN_SAMPLE) return true;
  const n = Math.min(column.length, DICTIONARY_SAMPLE);
  const seen = new Set<unknown>();
  for (let i = 0; i < n; i++) {
    const v: unknown = column.get(i);
    seen.add(v instanceof Uint8Array ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('latin1') : v);
  }
  return seen.size <= n / 2;
}

async function syncDir(dir: string): Promise<void> {
  // Makes the rename durable. Not supported everywhere (e.g. Windows): best effort there.
  let h: FileHandle | undefined;
  try {
    h = await open(dir, 'r');
    await h.sync();
  } catch {
    // directory fsync unsupported on this platform
  } finally {
    await h?.close();
  }
}

function sameSchema(a: Schema, b: Schema): boolean {
  return a.fields.length === b.fields.length && a.fields.every((f, i) => f.name === b.fields[i]?.name && String(f.type) === String(b.fields[i]?.type));
}

function describeSchema(s: Schema): string {
  return s.fields.map((f) => `${f.name}: ${String(f.type)}`).join(', ');
}
