/**
 * Offline prediction: Parquet in → dynamic batcher → model → Parquet out, no queue.
 *
 * ```
 *  openParquet ─► record batches (chunkRows) ─► columns → tensors ─► batcher.submit ─┐  up to `window`
 *                 (streamed, row group by      (zero-copy views,    (same batcher    │  chunks in flight
 *                  row group; all of them       validated)           as the workers) │
 *                  or a task's range)                                                │
 *  writer.close ◄─ write in input order ◄─ passthrough columns + one column per output ◄┘
 *  (temp file → rename: nothing half-written is ever visible)
 * ```
 */
import { RecordBatch, Schema, Struct, makeData } from 'apache-arrow';
import type { Data, Field } from 'apache-arrow';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DataIOError, InvalidInputError, validateInputs } from '@inferq/shared';
import { DTYPE_BYTES, allocate, elementCount } from '@inferq/shared';
import type { NonFinitePolicy, Tensor, TensorMap, TensorSpec } from '@inferq/shared';
import { DynamicBatcher } from '../batching/batcher.js';
import type { LoadedModel } from '../models/loaded-model.js';
import { createParquetWriter, openParquet } from '../io/parquet.js';
import type { ParquetReader } from '../io/parquet.js';
import { bindInputs, columnToTensor, tensorToColumn } from './columns.js';
import type { InputBinding } from './columns.js';

export interface PredictOptions {
  readonly input: string;
  readonly output: string;
  /** Rows read per record batch. Default: about 16 MiB of model inputs, a multiple of maxBatchSize. */
  readonly chunkRows?: number;
  /** Record batches in flight (read ahead of the writer). Default 8. */
  readonly window?: number;
  /** Batches queued at the runner. Default 32: keeps the inference thread busy while this thread decodes. */
  readonly maxInFlightBatches?: number;
  /** Default 'reject'. */
  readonly nonFinite?: NonFinitePolicy;
  /** Aborts the run between chunks; the output is not written. */
  readonly signal?: AbortSignal;
  /** Called after each written chunk. */
  readonly onProgress?: (p: { rows: number; totalRows: number }) => void;
}

export interface PredictSummary {
  readonly rows: number;
  readonly seconds: number;
  readonly rowsPerSecond: number;
  readonly batches: number;
  readonly meanBatchSize: number;
  readonly output: string;
  readonly bytes: number;
}

export async function predictParquet(model: LoadedModel, options: PredictOptions): Promise<PredictSummary> {
  const reader = await openParquet(options.input);
  try {
    return await predictReader(model, reader, options);
  } finally {
    await reader.close();
  }
}

export interface PredictReaderOptions extends Omit<PredictOptions, 'input'> {
  /** Row groups to predict, [first, end). Default: all. */
  readonly rowGroups?: readonly [number, number];
  /** How messages name the input. Default: `input "<reader.path>"`. */
  readonly source?: string;
}

/**
 * Predicts the rows of an open reader (all of them, or a row-group range) into a new Parquet
 * file at `output` (temp + rename); row numbers in messages count from the start of the file.
 */
export async function predictReader(model: LoadedModel, reader: ParquetReader, options: PredictReaderOptions): Promise<PredictSummary> {
  const started = performance.now();
  const source = options.source ?? `input "${reader.path}"`;
  const [firstGroup, endGroup] = options.rowGroups ?? [0, reader.numRowGroups];
  const rowGroupRows = reader.rowGroupRows;
  const sum = (from: number, to: number): number => rowGroupRows.slice(from, to).reduce((a, b) => a + b, 0);
  const totalRows = sum(firstGroup, endGroup);
  const { bindings, passthrough, schema } = outputLayout(reader.schema, model, source);
  await makeParentDir(options.output);
  const writer = await createParquetWriter(options.output, { schema });
  const { maxBatchSize } = model.batching;
  const chunkRows = options.chunkRows ?? defaultChunkRows(model.inputs, maxBatchSize);
  const window = options.window ?? 8;
  // A batcher of its own, tuned for throughput: an offline job has no latency to protect, so
  // it reads far ahead and queues many batches at the runner (the model's online settings
  // keep their maxBatchSize and preferred sizes).
  const batcher = new DynamicBatcher(model.runner, {
    ...model.batching,
    inputs: model.inputs,
    model: model.name,
    version: model.version,
    maxPendingRows: window * chunkRows,
    maxInFlightBatches: options.maxInFlightBatches ?? 32,
  });
  let rows = 0;
  try {
    const queue: Promise<RecordBatch>[] = [];
    let firstRow = sum(0, firstGroup);
    const drainOne = async (): Promise<void> => {
      const out = await queue.shift()!;
      await writer.write(out);
      rows += out.numRows;
      options.onProgress?.({ rows, totalRows });
    };
    for await (const batch of reader.batches({ batchSize: chunkRows, rowGroups: [firstGroup, endGroup] })) {
      options.signal?.throwIfAborted();
      const tensors: Record<string, Tensor> = {};
      for (const b of bindings) tensors[b.spec.name] = columnToTensor(batch, b, firstRow, source);
      try {
        validateInputs(tensors, model.inputs, { model: model.name, version: model.version, nonFinite: options.nonFinite ?? 'reject', rowOffset: firstRow });
      } catch (err) {
        throw err instanceof InvalidInputError ? new InvalidInputError(`${source}: ${err.message}`, { cause: err, model: model.name, version: model.version, code: err.code }) : err;
      }
      const result = batcher
        .submit({ id: `${reader.path}@${firstRow}`, tensors, rows: batch.numRows })
        .then((outputs) => assemble(batch, passthrough, outputs));
      result.catch(() => undefined); // observed below, in order; avoid an unhandled rejection meanwhile
      queue.push(result);
      firstRow += batch.numRows;
      if (queue.length >= window) await drainOne();
    }
    while (queue.length > 0) await drainOne();
    const written = await writer.close();
    const seconds = (performance.now() - started) / 1000;
    const { batches, rows: batchedRows } = batcher.stats;
    return {
      rows,
      seconds,
      rowsPerSecond: rows / seconds,
      batches,
      meanBatchSize: batches === 0 ? 0 : batchedRows / batches,
      output: written.path,
      bytes: written.bytes,
    };
  } catch (err) {
    await writer.abort();
    throw err;
  } finally {
    await batcher.close(0);
  }
}

/** Which columns feed the model, which pass through, and the output's schema (known before any row: an empty input still gives a valid, empty output). */
function outputLayout(input: Schema, model: LoadedModel, source: string): { bindings: InputBinding[]; passthrough: Field[]; schema: Schema } {
  const bindings = bindInputs(input, model.inputs, source);
  const consumed = new Set(bindings.map((b) => b.column));
  const passthrough = input.fields.filter((f) => !consumed.has(f.name));
  const outputNames = new Set(model.outputs.map((o) => o.name));
  const clash = passthrough.find((f) => outputNames.has(f.name));
  if (clash !== undefined) {
    throw new InvalidInputError(`${source}: column "${clash.name}" has the name of a model output; rename the column`);
  }
  const outputFields = model.outputs.map(
    (o) => tensorToColumn(o.name, { dtype: o.dtype, shape: [0, ...o.shape.slice(1).map((d) => Math.max(1, d))], data: allocate(o.dtype, 0) }).field,
  );
  return { bindings, passthrough, schema: new Schema([...passthrough, ...outputFields]) };
}

/** Output record batch: passthrough columns unchanged, then one column per model output. */
function assemble(input: RecordBatch, passthrough: readonly Field[], outputs: TensorMap): RecordBatch {
  const fields: Field[] = [];
  const children: Data[] = [];
  for (const f of passthrough) {
    // A record batch holds exactly one Data per column: carry it unchanged (found by name:
    // the batch's schema object need not be the file's).
    const index = input.schema.fields.findIndex((x) => x.name === f.name);
    fields.push(input.schema.fields[index]!);
    children.push(input.data.children[index]!);
  }
  for (const [name, t] of Object.entries(outputs)) {
    const { field, data } = tensorToColumn(name, t);
    fields.push(field);
    children.push(data);
  }
  const schema = new Schema(fields);
  return new RecordBatch(schema, makeData({ type: new Struct(fields), length: input.numRows, children, nullCount: 0 }));
}

/** Creates the output's folder (like Spark and Ray writers do); a path that cannot be a folder is a DataIOError. */
async function makeParentDir(output: string): Promise<void> {
  try {
    await mkdir(dirname(output), { recursive: true });
  } catch (cause) {
    throw new DataIOError(`output "${output}": cannot create its folder (${(cause as Error).message})`, { cause });
  }
}

/** About 16 MiB of model inputs per record batch, as a multiple of maxBatchSize (at least one batch). */
function defaultChunkRows(inputs: readonly TensorSpec[], maxBatchSize: number): number {
  const rowBytes = inputs.reduce((n, s) => n + elementCount(s.shape.slice(1).map((d) => Math.max(1, d))) * DTYPE_BYTES[s.dtype], 0);
  const rows = Math.floor((16 * 1024 * 1024) / Math.max(1, rowBytes));
  return Math.max(1, Math.min(64, Math.floor(rows / maxBatchSize))) * maxBatchSize;
}
