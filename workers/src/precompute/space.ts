/**
 * The feature space of a precompute spec, enumerated lazily in fixed chunks.
 *
 * Axes: row r of the cartesian product is r written in the mixed radix of the axis sizes
 * (the last axis varies fastest), so chunk i (rows i·C … (i+1)·C−1) is generated on its
 * own — a space far larger than memory never is, and a resumed run starts at any chunk.
 * Rows: a Parquet file of entities, read batch by batch.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { RecordBatch } from 'apache-arrow';
import { ConfigError, DataIOError } from '@inferq/shared';
import type { TensorMap, TensorSpec } from '@inferq/shared';
import { openParquet } from '../io/parquet.js';
import { parseLocation } from '../io/store.js';
import { MAX_AXIS_VALUES, resolveFeaturizer, resolveInput } from './spec.js';
import type { AxisSpec, LoadedSpec } from './spec.js';

export type Value = string | number;

export interface Chunk {
  readonly index: number;
  readonly rows: number;
  /** One array per axis (or file column), `rows` long. */
  readonly columns: Readonly<Record<string, readonly Value[]>>;
}

export interface Space {
  /** Rows in the whole space. */
  readonly total: number;
  readonly chunkRows: number;
  readonly chunkCount: number;
  /** The axis values (cartesian spaces), for encoders' vocabularies. */
  readonly axisValues: ReadonlyMap<string, readonly Value[]>;
  /**
   * Chunks in order, skipping those `skip` says are done (they are not even generated); only
   * those of `range` ([from, to) chunk indices) when given.
   */
  chunks(skip: (index: number) => boolean, range?: readonly [number, number]): AsyncIterable<Chunk>;
}

/**
 * A Parquet input of the spec as a local file: relative to the spec's folder; URIs (webhdfs://,
 * hdfs://) are fetched to a temp file. A spec from a queue is held to its trust (resolveInput).
 */
async function localFile(spec: LoadedSpec, path: string, field: string, cleanup: string[]): Promise<string> {
  const where = await resolveInput(spec, path, field);
  if ('local' in where) return where.local;
  const loc = parseLocation(where.remote);
  const dir = await mkdtemp(join(tmpdir(), 'inferq-space-'));
  cleanup.push(dir);
  const file = join(dir, 'data.parquet');
  await writeFile(file, await loc.store.readFile(loc.path));
  return file;
}

async function axisValues(spec: LoadedSpec, axis: AxisSpec, field: string, cleanup: string[]): Promise<Value[]> {
  if (axis.values !== undefined) return [...new Set(axis.values)];
  if (axis.range !== undefined) {
    const { from, to, step } = axis.range;
    if (to < from) throw new ConfigError(`axis "${axis.name}": range from ${from} to ${to} is empty`);
    return Array.from({ length: Math.floor((to - from) / step) + 1 }, (_, i) => from + i * step);
  }
  const { path, column } = axis.parquet!;
  const file = await localFile(spec, path, `${field}.parquet.path`, cleanup);
  const reader = await openParquet(file);
  try {
    if (reader.schema.fields.find((f) => f.name === column) === undefined) {
      throw new ConfigError(`axis "${axis.name}": ${path} has no column "${column}" (columns: ${reader.schema.fields.map((f) => f.name).join(', ')})`);
    }
    const seen = new Set<Value>();
    for await (const batch of reader.batches({ columns: [column] })) {
      for (const v of batch.getChild(column)!) if (v !== null && v !== undefined) seen.add(typeof v === 'bigint' ? Number(v) : (v as Value));
      if (seen.size > MAX_AXIS_VALUES) throw new ConfigError(`axis "${axis.name}": column "${column}" of ${path} has more than the ${MAX_AXIS_VALUES} values an axis may have`);
    }
    if (seen.size === 0) throw new ConfigError(`axis "${axis.name}": column "${column}" of ${path} has no values`);
    return [...seen];
  } finally {
    await reader.close();
  }
}

export async function openSpace(spec: LoadedSpec): Promise<{ space: Space; close(): Promise<void> }> {
  const cleanup: string[] = [];
  const close = async (): Promise<void> => {
    for (const d of cleanup) await rm(d, { recursive: true, force: true });
  };
  const chunkRows = spec.spec.chunkRows;
  try {
    if ('axes' in spec.spec.space) {
      const axes = spec.spec.space.axes;
      const values = new Map<string, Value[]>();
      for (const [i, a] of axes.entries()) values.set(a.name, await axisValues(spec, a, `space.axes.${i}`, cleanup));
      const sizes = axes.map((a) => values.get(a.name)!.length);
      const total = sizes.reduce((a, b) => a * b, 1);
      if (!Number.isSafeInteger(total)) throw new ConfigError(`the space has more than 2^53 rows (${sizes.join(' × ')})`);
      checkRows(spec, total, sizes.join(' × '));
      const chunkCount = Math.ceil(total / chunkRows);
      const space: Space = {
        total,
        chunkRows,
        chunkCount,
        axisValues: values,
        async *chunks(skip, range) {
          for (let index = Math.max(0, range?.[0] ?? 0); index < Math.min(chunkCount, range?.[1] ?? chunkCount); index++) {
            if (skip(index)) continue;
            const start = index * chunkRows;
            const rows = Math.min(chunkRows, total - start);
            const columns: Record<string, Value[]> = {};
            for (const a of axes) columns[a.name] = new Array<Value>(rows);
            for (let r = 0; r < rows; r++) {
              let rest = start + r;
              for (let k = axes.length - 1; k >= 0; k--) {
                const size = sizes[k]!;
                columns[axes[k]!.name]![r] = values.get(axes[k]!.name)![rest % size]!;
                rest = Math.floor(rest / size);
              }
            }
            yield { index, rows, columns };
          }
        },
      };
      return { space, close };
    }
    const file = await localFile(spec, spec.spec.space.rows.parquet, 'space.rows.parquet', cleanup);
    const reader = await openParquet(file);
    const total = reader.numRows;
    try {
      checkRows(spec, total, `the rows of ${spec.spec.space.rows.parquet}`);
    } catch (err) {
      await reader.close();
      throw err;
    }
    const chunkCount = Math.ceil(total / chunkRows);
    const names = reader.schema.fields.map((f) => f.name);
    const space: Space = {
      total,
      chunkRows,
      chunkCount,
      axisValues: new Map(),
      async *chunks(skip, range) {
        const [from, to] = [range?.[0] ?? 0, Math.min(chunkCount, range?.[1] ?? chunkCount)];
        let index = 0;
        let pending: Record<string, Value[]> = Object.fromEntries(names.map((n) => [n, []]));
        let have = 0;
        const flush = (): Chunk => {
          const c = { index, rows: have, columns: pending };
          index++;
          pending = Object.fromEntries(names.map((n) => [n, []]));
          have = 0;
          return c;
        };
        const start = from * chunkRows;
        let seen = 0;
        for await (const batch of reader.batches({ batchSize: chunkRows })) {
          // Batches wholly before the range are counted, not read row by row.
          const first = seen;
          seen += batch.numRows;
          if (seen <= start) continue;
          if (first <= start) index = from; // the range's first rows are in this batch
          if (index >= to) return;
          for (let r = Math.max(0, start - first); r < batch.numRows; r++) {
            for (const n of names) pending[n]!.push(cell(batch, n, r));
            if (++have === chunkRows) {
              const c = flush();
              if (!skip(c.index)) yield c;
              if (index >= to) return;
            }
          }
        }
        if (have > 0 && index < to) {
          const c = flush();
          if (!skip(c.index)) yield c;
        }
      },
    };
    return {
      space,
      close: async () => {
        await reader.close();
        await close();
      },
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** A spec from a queue may not ask for more rows than its trust allows. */
function checkRows(spec: LoadedSpec, total: number, what: string): void {
  const max = spec.trust?.maxRows;
  if (max !== undefined && total > max) throw new ConfigError(`the space has ${total} rows (${what}), more than the ${max} this worker runs`);
}

function cell(batch: RecordBatch, column: string, row: number): Value {
  const v: unknown = batch.getChild(column)!.get(row);
  return typeof v === 'bigint' ? Number(v) : typeof v === 'number' || typeof v === 'string' ? v : String(v);
}

/** The lookup key of each row of a chunk, from the spec's template. */
export function renderKeys(spec: LoadedSpec, chunk: Chunk): string[] {
  const parts = spec.spec.key.split(/\{[^}]*\}/);
  const fields = spec.keyFields.map((f) => {
    const col = chunk.columns[f];
    if (col === undefined) throw new ConfigError(`key: "{${f}}" is not a column of the space (columns: ${Object.keys(chunk.columns).join(', ')})`);
    return col;
  });
  const out = new Array<string>(chunk.rows);
  for (let r = 0; r < chunk.rows; r++) {
    let k = parts[0]!;
    for (let i = 0; i < fields.length; i++) k += String(fields[i]![r]) + parts[i + 1]!;
    out[r] = k;
  }
  return out;
}

/**
 * Turns a chunk into model inputs. `recycled`: the tensors of a chunk that is done with; the
 * default encoder writes into its buffer when it fits, instead of allocating one per chunk
 * (large short-lived buffers make V8 run full collections).
 */
export type Encoder = (chunk: Chunk, recycled?: TensorMap) => Promise<TensorMap>;

/** The spec's encoder: the default one (onehot / index / number → one float32 input), or the featurizer module. */
export async function makeEncoder(spec: LoadedSpec, space: Space, inputs: readonly TensorSpec[]): Promise<Encoder> {
  const enc = spec.spec.encode;
  if (enc.featurizer !== undefined) {
    const path = await resolveFeaturizer(spec, enc.featurizer);
    let mod: { default?: unknown };
    try {
      mod = (await import(pathToFileURL(path).href)) as { default?: unknown };
    } catch (err) {
      throw new ConfigError(`encode.featurizer "${enc.featurizer}": cannot load it (${(err as Error).message})`);
    }
    if (typeof mod.default !== 'function') throw new ConfigError(`encode.featurizer "${enc.featurizer}": its default export is not a function (columns, rows) => tensors`);
    const f = mod.default as (columns: Chunk['columns'], rows: number) => TensorMap | Promise<TensorMap>;
    return async (chunk) => f(chunk.columns, chunk.rows);
  }
  const inputName = enc.input ?? (inputs.length === 1 ? inputs[0]!.name : undefined);
  if (inputName === undefined) throw new ConfigError(`encode.input: the model has ${inputs.length} inputs (${inputs.map((i) => i.name).join(', ')}); name the one the features feed`);
  const input = inputs.find((i) => i.name === inputName);
  if (input === undefined) throw new ConfigError(`encode.input: the model has no input "${inputName}" (inputs: ${inputs.map((i) => i.name).join(', ')})`);
  if (input.dtype !== 'float32') throw new ConfigError(`encode: the default encoder makes float32 features, input "${inputName}" is ${input.dtype}; use a featurizer`);
  const plan = enc.features!.map((f) => {
    const vocab = f.vocab ?? space.axisValues.get(f.axis) ?? [];
    const index = new Map<Value, number>(vocab.map((v, i) => [v, i]));
    return { axis: f.axis, as: f.as, index, width: f.as === 'onehot' ? vocab.length : 1 };
  });
  const width = plan.reduce((s, p) => s + p.width, 0);
  const declared = input.shape[1];
  if (input.shape.length !== 2 || (declared !== undefined && declared !== -1 && declared !== width)) {
    throw new ConfigError(`encode.features make ${width} columns (${plan.map((p) => `${p.axis}:${p.as}=${p.width}`).join(', ')}), but input "${inputName}" is [${input.shape.join(', ')}]`);
  }
  return async (chunk, recycled) => {
    const old = recycled?.[inputName]?.data;
    const data = old instanceof Float32Array && old.length === chunk.rows * width ? old.fill(0) : new Float32Array(chunk.rows * width);
    let offset = 0;
    for (const p of plan) {
      const col = chunk.columns[p.axis];
      if (col === undefined) throw new DataIOError(`encode: no column "${p.axis}" in the space`);
      for (let r = 0; r < chunk.rows; r++) {
        const v = col[r]!;
        if (p.as === 'number') {
          const n = typeof v === 'number' ? v : Number(v);
          if (!Number.isFinite(n)) throw new DataIOError(`encode: "${p.axis}" value ${JSON.stringify(v)} is not a number`);
          data[r * width + offset] = n;
        } else {
          const i = p.index.get(v);
          if (i === undefined) throw new DataIOError(`encode: "${p.axis}" value ${JSON.stringify(v)} is not in its vocabulary`);
          if (p.as === 'onehot') data[r * width + offset + i] = 1;
          else data[r * width + offset] = i;
        }
      }
      offset += p.width;
    }
    return { [inputName]: { dtype: 'float32', shape: [chunk.rows, width], data } };
  };
}
