import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Data, DataType, Vector } from 'apache-arrow';
import {
  Bool,
  Field,
  FixedSizeList,
  Float32,
  Float64,
  Int32,
  Int64,
  List,
  RecordBatch,
  Schema,
  Struct,
  Utf8,
  makeData,
  vectorFromArray,
} from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataIOError } from '@inferq/shared';
import { ensurePython, runPython } from '../../../test/infra/python.js';
import { createParquetWriter, listValues, openParquet } from './parquet.js';
import type { ParquetReader } from './parquet.js';
import { wasmBatches } from './wasm-reader.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'inferq-parquet-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

// ---- data ------------------------------------------------------------------------------------

/** Deterministic pseudo-random numbers (tests must not depend on Math.random). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

const WIDTH = 4;

interface Rows {
  s: (string | null)[];
  i32: (number | null)[];
  i64: (bigint | null)[];
  f32: (number | null)[];
  f64: (number | null)[];
  b: (boolean | null)[];
  list: (number[] | null)[];
  fixed: number[][];
}

/** Rows [from, from + n) of the all-types table; nulls every 7th row, empty list every 11th. */
function rows(from: number, n: number): Rows {
  const out: Rows = { s: [], i32: [], i64: [], f32: [], f64: [], b: [], list: [], fixed: [] };
  for (let r = from; r < from + n; r++) {
    const isNull = r % 7 === 3;
    out.s.push(isNull ? null : `row-${r}-${'é'.repeat(r % 3)}`);
    out.i32.push(isNull ? null : r * 3 - 1000);
    out.i64.push(isNull ? null : BigInt(r) * 10_000_000_000n - 7n);
    out.f32.push(isNull ? null : Math.fround(r / 8 - 0.3));
    out.f64.push(isNull ? null : r / 3);
    out.b.push(isNull ? null : r % 2 === 0);
    out.list.push(isNull ? null : r % 11 === 5 ? [] : Array.from({ length: (r % 5) + 1 }, (_, k) => Math.fround(r + k / 4)));
    out.fixed.push(Array.from({ length: WIDTH }, (_, k) => Math.fround(r * WIDTH + k + 0.5)));
  }
  return out;
}

function validity(flags: boolean[]): Uint8Array {
  const bits = new Uint8Array((flags.length + 7) >> 3);
  flags.forEach((ok, i) => {
    if (ok) bits[i >> 3] = (bits[i >> 3] as number) | (1 << (i & 7));
  });
  return bits;
}

function listData(values: (number[] | null)[]): Data<List<Float32>> {
  const offsets = new Int32Array(values.length + 1);
  const flat: number[] = [];
  values.forEach((v, i) => {
    flat.push(...(v ?? []));
    offsets[i + 1] = flat.length;
  });
  const child = makeData({ type: new Float32(), length: flat.length, data: Float32Array.from(flat) });
  const nulls = values.filter((v) => v === null).length;
  return makeData({
    type: new List(new Field('item', new Float32(), true)),
    length: values.length,
    nullCount: nulls,
    nullBitmap: nulls > 0 ? validity(values.map((v) => v !== null)) : null,
    valueOffsets: offsets,
    child,
  });
}

function fixedData(values: number[][], width: number): Data<FixedSizeList<Float32>> {
  const child = makeData({ type: new Float32(), length: values.length * width, data: Float32Array.from(values.flat()) });
  return makeData({ type: new FixedSizeList(width, new Field('item', new Float32(), true)), length: values.length, child });
}

function allTypesBatch(from: number, n: number): RecordBatch {
  const r = rows(from, n);
  const columns: Record<string, Vector> = {
    s: vectorFromArray(r.s, new Utf8()),
    i32: vectorFromArray(r.i32, new Int32()),
    i64: vectorFromArray(r.i64, new Int64()),
    f32: vectorFromArray(r.f32, new Float32()),
    f64: vectorFromArray(r.f64, new Float64()),
    b: vectorFromArray(r.b, new Bool()),
  };
  const fields = Object.entries(columns).map(([name, v]) => new Field(name, v.type as DataType, true));
  const data = Object.values(columns).map((v) => v.data[0] as Data);
  fields.push(new Field('list', new List(new Field('item', new Float32(), true)), true));
  data.push(listData(r.list));
  fields.push(new Field('fixed', new FixedSizeList(WIDTH, new Field('item', new Float32(), true)), false));
  data.push(fixedData(r.fixed, WIDTH));
  return new RecordBatch(new Schema(fields), makeData({ type: new Struct(fields), length: n, nullCount: 0, children: data }));
}

/** Plain JS values of a batch column (lists as number arrays, int64 as bigint). */
function columnValues(batch: RecordBatch, name: string): unknown[] {
  const v = batch.getChild(name);
  if (v === null) throw new Error(`no column ${name}`);
  const out: unknown[] = [];
  for (let i = 0; i < v.length; i++) {
    const x: unknown = v.get(i);
    // lists come back as Vectors: iterate them so null elements stay null
    out.push(x !== null && typeof x === 'object' && 'toArray' in x ? Array.from(x as unknown as Iterable<unknown>) : x);
  }
  return out;
}

async function readAll(reader: ParquetReader, options?: { batchSize?: number; columns?: string[] }): Promise<RecordBatch[]> {
  const out: RecordBatch[] = [];
  for await (const b of reader.batches(options)) out.push(b);
  return out;
}

function concatColumn(batches: RecordBatch[], name: string): unknown[] {
  return batches.flatMap((b) => columnValues(b, name));
}

async function writeFileOf(path: string, batches: RecordBatch[], options?: Parameters<typeof createParquetWriter>[1]): Promise<void> {
  const w = await createParquetWriter(path, options);
  for (const b of batches) await w.write(b);
  await w.close();
}

// ---- round trip ----------------------------------------------------------------------------

describe('round trip (createParquetWriter → openParquet)', () => {
  it('keeps every supported type, nulls and empty lists exactly', async () => {
    const path = join(dir, 'all-types.parquet');
    const n = 500;
    await writeFileOf(path, [allTypesBatch(0, n)]);
    const reader = await openParquet(path);
    expect(reader.numRows).toBe(n);
    expect(reader.schema.fields.map((f) => `${f.name}: ${String(f.type)}`)).toEqual([
      's: Utf8',
      'i32: Int32',
      'i64: Int64',
      'f32: Float32',
      'f64: Float64',
      'b: Bool',
      'list: List<Float32>',
      'fixed: FixedSizeList[4]<Float32>',
    ]);
    const batches = await readAll(reader);
    await reader.close();
    const expected = rows(0, n);
    for (const name of ['s', 'i32', 'i64', 'f32', 'f64', 'b', 'list', 'fixed'] as const) {
      expect(concatColumn(batches, name), name).toEqual(expected[name]);
    }
  });

  it('decodes the same as parquet-wasm (arrow-rs) does', async () => {
    const path = join(dir, 'all-types.parquet');
    const reader = await openParquet(path);
    const ours = await readAll(reader, { batchSize: 128 });
    await reader.close();
    const theirs: RecordBatch[] = [];
    for await (const b of wasmBatches(path, { batchSize: 128, columns: undefined })) theirs.push(b);
    expect(ours.map((b) => String(b.schema.fields.map((f) => `${f.name}: ${String(f.type)}`)))).toEqual(
      theirs.map((b) => String(b.schema.fields.map((f) => `${f.name}: ${String(f.type)}`))),
    );
    for (const f of reader.schema.fields) expect(concatColumn(ours, f.name), f.name).toEqual(concatColumn(theirs, f.name));
  });

  it('streams many row groups in order, batches of at most batchSize, list values contiguous', async () => {
    const path = join(dir, 'multi.parquet');
    // 10 input batches of 1,000 rows, row groups of 3,000 rows
    const input = Array.from({ length: 10 }, (_, k) => allTypesBatch(k * 1000, 1000));
    await writeFileOf(path, input, { rowGroupRows: 3000, compression: 'snappy' });
    const reader = await openParquet(path);
    expect(reader.numRows).toBe(10_000);
    expect(reader.numRowGroups).toBe(4);
    const batches = await readAll(reader, { batchSize: 1024 });
    await reader.close();
    // row groups of 3,000 / 3,000 / 3,000 / 1,000 rows, each cut into batches of ≤ 1,024
    expect(batches.map((b) => b.numRows)).toEqual([1024, 1024, 952, 1024, 1024, 952, 1024, 1024, 952, 1000]);
    const expected = rows(0, 10_000);
    expect(concatColumn(batches, 'i64')).toEqual(expected.i64);
    expect(concatColumn(batches, 's')).toEqual(expected.s);
    expect(concatColumn(batches, 'list')).toEqual(expected.list);
    expect(concatColumn(batches, 'fixed')).toEqual(expected.fixed);
    let seen = 0;
    for (const b of batches) {
      // one contiguous Float32Array holding exactly this batch's rows, usable zero-copy
      const fixed = b.getChild('fixed')?.data[0];
      const values = fixed?.children[0]?.values as unknown;
      expect(values).toBeInstanceOf(Float32Array);
      expect((values as Float32Array).length).toBe(b.numRows * WIDTH);
      expect((values as Float32Array)[0]).toBe(Math.fround(seen * WIDTH + 0.5));
      const lv = listValues(b, 'fixed');
      expect(lv.values.buffer).toBe((values as Float32Array).buffer);
      expect(lv.width).toBe(WIDTH);
      seen += b.numRows;
    }
  });

  it('reads a column subset, in file order', async () => {
    const reader = await openParquet(join(dir, 'multi.parquet'));
    const batches = await readAll(reader, { columns: ['fixed', 'i32'], batchSize: 4096 });
    await reader.close();
    expect(batches[0]?.schema.fields.map((f) => f.name)).toEqual(['i32', 'fixed']);
    expect(concatColumn(batches, 'i32')).toEqual(rows(0, 10_000).i32);
    await expect(async () => readAll(await openParquet(join(dir, 'multi.parquet')), { columns: ['nope'] })).rejects.toThrow(
      /no column "nope"/,
    );
  });

  it('supports zstd and uncompressed output (zstd goes through parquet-wasm when read)', async () => {
    for (const compression of ['zstd', 'none'] as const) {
      const path = join(dir, `c-${compression}.parquet`);
      await writeFileOf(path, [allTypesBatch(0, 300), allTypesBatch(300, 300)], { compression });
      const reader = await openParquet(path);
      const batches = await readAll(reader, { batchSize: 256 });
      await reader.close();
      const expected = rows(0, 600);
      expect(concatColumn(batches, 'list'), compression).toEqual(expected.list);
      expect(concatColumn(batches, 's'), compression).toEqual(expected.s);
      expect(concatColumn(batches, 'i64'), compression).toEqual(expected.i64);
    }
  });
});

// ---- atomic writes ----------------------------------------------------------------------------

describe('atomic writer', () => {
  it('writes under a hidden temp name and renames on close, leaving no temp file', async () => {
    const sub = await mkdtemp(join(dir, 'atomic-'));
    const path = join(sub, 'out.parquet');
    const w = await createParquetWriter(path, { rowGroupRows: 100 });
    await w.write(allTypesBatch(0, 250));
    const during = await readdir(sub);
    expect(during).toHaveLength(1);
    expect(during[0]).toMatch(/^\.out\.parquet\.inprogress-\d+-[0-9a-f]+$/);
    await expect(stat(path)).rejects.toThrow();
    const result = await w.close();
    expect(result.rows).toBe(250);
    expect(result.bytes).toBe((await stat(path)).size);
    expect(await readdir(sub)).toEqual(['out.parquet']);
    const reader = await openParquet(path);
    expect(reader.numRows).toBe(250);
    await reader.close();
  });

  it('abort removes the temp file and leaves an existing final file untouched', async () => {
    const sub = await mkdtemp(join(dir, 'abort-'));
    const path = join(sub, 'out.parquet');
    await writeFile(path, 'previous result');
    const w = await createParquetWriter(path);
    await w.write(allTypesBatch(0, 100));
    await w.abort();
    await w.abort(); // idempotent
    expect(await readdir(sub)).toEqual(['out.parquet']);
    expect(await readFile(path, 'utf8')).toBe('previous result');
    await expect(w.write(allTypesBatch(0, 1))).rejects.toBeInstanceOf(DataIOError);

    const fresh = join(sub, 'never.parquet');
    const w2 = await createParquetWriter(fresh);
    await w2.abort(); // before any write
    expect(await readdir(sub)).toEqual(['out.parquet']);
  });

  it('fails fast with a DataIOError naming the path when the directory is missing or not a directory', async () => {
    const missing = join(dir, 'no-such-dir', 'out.parquet');
    await expect(createParquetWriter(missing)).rejects.toSatisfy(
      (e: unknown) => e instanceof DataIOError && e.message.includes(missing) && /does not exist/.test(e.message),
    );
    const file = join(dir, 'plain-file');
    await writeFile(file, 'x');
    const under = join(file, 'out.parquet');
    await expect(createParquetWriter(under)).rejects.toSatisfy((e: unknown) => e instanceof DataIOError && e.message.includes(under));
  });

  it('rejects a batch whose schema differs from the first', async () => {
    const sub = await mkdtemp(join(dir, 'schema-'));
    const w = await createParquetWriter(join(sub, 'x.parquet'));
    await w.write(allTypesBatch(0, 10));
    const other = new RecordBatch({ id: vectorFromArray(['a'], new Utf8()).data[0] as Data<Utf8> });
    await expect(w.write(other)).rejects.toThrow(/differs from the first batch/);
    await w.abort();
    expect(await readdir(sub)).toEqual([]);
  });

  it('writes an empty file with the given schema when no batch came', async () => {
    const path = join(dir, 'empty.parquet');
    const schema = allTypesBatch(0, 1).schema;
    const w = await createParquetWriter(path, { schema });
    const result = await w.close();
    expect(result.rows).toBe(0);
    const reader = await openParquet(path);
    expect(reader.numRows).toBe(0);
    expect(reader.schema.fields.map((f) => f.name)).toEqual(schema.fields.map((f) => f.name));
    expect(await readAll(reader)).toEqual([]);
    await reader.close();
  });
});

// ---- bad input -----------------------------------------------------------------------------------

describe('bad input files', () => {
  async function expectIOError(path: string, pattern?: RegExp): Promise<DataIOError> {
    let caught: unknown;
    try {
      const reader = await openParquet(path);
      try {
        await readAll(reader, { batchSize: 333 });
      } finally {
        await reader.close();
      }
    } catch (err) {
      caught = err;
    }
    expect(caught, `expected a DataIOError for ${path}`).toBeInstanceOf(DataIOError);
    const e = caught as DataIOError;
    expect(e.message).toContain(`"${path}"`);
    if (pattern !== undefined) expect(e.message).toMatch(pattern);
    return e;
  }

  /** Reads a file that may be damaged: fine either way, but only a DataIOError may come out. */
  async function readOrIOError(path: string): Promise<'ok' | 'error'> {
    try {
      const reader = await openParquet(path);
      try {
        await readAll(reader, { batchSize: 333 });
      } finally {
        await reader.close();
      }
      return 'ok';
    } catch (err) {
      expect(err, String(err)).toBeInstanceOf(DataIOError);
      expect((err as Error).message).toContain(`"${path}"`);
      return 'error';
    }
  }

  async function expectGoodFileReads(path: string, n: number): Promise<void> {
    const reader = await openParquet(path);
    const batches = await readAll(reader);
    await reader.close();
    expect(concatColumn(batches, 'list')).toEqual(rows(0, n).list);
  }

  it('missing file, directory, empty and non-Parquet files', async () => {
    await expectIOError(join(dir, 'missing.parquet'), /no such file/);
    await expectIOError(dir, /directory|not a regular file/);
    const empty = join(dir, 'empty-bytes.parquet');
    await writeFile(empty, '');
    await expectIOError(empty, /not a Parquet file/);
    const text = join(dir, 'text.parquet');
    await writeFile(text, 'id,score\n1,0.5\n'.repeat(20));
    const e = await expectIOError(text, /not a Parquet file \(bad magic bytes\)/);
    expect(e.message).toBe(`input "${text}": not a Parquet file (bad magic bytes)`);
  });

  it('truncated files (cut at many points) are DataIOErrors, and good files still read after', async () => {
    const good = join(dir, 'good.parquet');
    await writeFileOf(good, [allTypesBatch(0, 2000)], { rowGroupRows: 700 });
    const bytes = await readFile(good);
    const next = rng(42);
    const cuts = [4, 8, 12, bytes.length - 1, bytes.length - 8, bytes.length - 9, ...Array.from({ length: 12 }, () => Math.floor(next() * bytes.length))];
    for (const cut of cuts) {
      const path = join(dir, `cut-${cut}.parquet`);
      await writeFile(path, bytes.subarray(0, cut));
      await expectIOError(path, /Parquet|truncated|footer|ends/);
    }
    // the footer kept but the data before it cut short: chunk offsets now point outside the file
    const path = join(dir, 'hollow.parquet');
    const footerLength = bytes.readUInt32LE(bytes.length - 8);
    const footer = bytes.subarray(bytes.length - 8 - footerLength);
    await writeFile(path, Buffer.concat([bytes.subarray(0, 100), footer]));
    await expectIOError(path, /outside the file|footer|ends/);
    await expectGoodFileReads(good, 2000);
  });

  it('bit flips anywhere never escape as anything but a DataIOError (JS decoder)', async () => {
    const good = join(dir, 'good.parquet');
    const bytes = await readFile(good);
    const next = rng(7);
    let errors = 0;
    for (let k = 0; k < 60; k++) {
      const bad = Buffer.from(bytes);
      // a few flips, half of the cases in the footer where every byte matters
      const footerStart = bytes.length - 8 - bytes.readUInt32LE(bytes.length - 8);
      for (let j = 0; j < 3; j++) {
        const at = k % 2 === 0 ? footerStart + Math.floor(next() * (bytes.length - 8 - footerStart)) : 4 + Math.floor(next() * (footerStart - 4));
        bad[at] = (bad[at] as number) ^ (1 << Math.floor(next() * 8));
      }
      const path = join(dir, `flip-${k}.parquet`);
      await writeFile(path, bad);
      if ((await readOrIOError(path)) === 'error') errors++;
    }
    expect(errors).toBeGreaterThan(10); // most footer flips are caught
    await expectGoodFileReads(good, 2000);
  });

  it('corrupt pages in a file read through parquet-wasm fail cleanly and do not poison later reads', async () => {
    const good = join(dir, 'good-zstd.parquet');
    await writeFileOf(good, [allTypesBatch(0, 2000)], { rowGroupRows: 700, compression: 'zstd' });
    const bytes = await readFile(good);
    const footerStart = bytes.length - 8 - bytes.readUInt32LE(bytes.length - 8);
    const next = rng(99);
    let errors = 0;
    for (let k = 0; k < 12; k++) {
      const bad = Buffer.from(bytes);
      for (let j = 0; j < 40; j++) {
        const at = 4 + Math.floor(next() * (footerStart - 4));
        bad[at] = (bad[at] as number) ^ 0xff;
      }
      const path = join(dir, `zflip-${k}.parquet`);
      await writeFile(path, bad);
      if ((await readOrIOError(path)) === 'error') errors++;
    }
    expect(errors).toBeGreaterThan(0);
    await expectGoodFileReads(good, 2000);
  });
});

// ---- independent checks with pyarrow ------------------------------------------------------------

describe('pyarrow cross-check', () => {
  beforeAll(async () => {
    await ensurePython();
  });

  it('pyarrow reads our file with the same schema and values', async () => {
    const path = join(dir, 'for-pyarrow.parquet');
    const n = 300;
    await writeFileOf(path, [allTypesBatch(0, 100), allTypesBatch(100, 200)]);
    const out = await runPython(
      `
import json, sys
import pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
cols = {}
for name in t.column_names:
    vals = t.column(name).to_pylist()
    if name == 'i64':
        vals = [None if v is None else str(v) for v in vals]
    cols[name] = vals
print(json.dumps({'schema': [f"{f.name}: {f.type}" for f in t.schema], 'rows': t.num_rows, 'cols': cols}))
`,
      [path],
    );
    const got = JSON.parse(out) as { schema: string[]; rows: number; cols: Record<string, unknown[]> };
    expect(got.rows).toBe(n);
    expect(got.schema).toEqual([
      's: string',
      'i32: int32',
      'i64: int64',
      'f32: float',
      'f64: double',
      'b: bool',
      'list: list<item: float>',
      'fixed: fixed_size_list<item: float>[4]',
    ]);
    const expected = rows(0, n);
    expect(got.cols['s']).toEqual(expected.s);
    expect(got.cols['i32']).toEqual(expected.i32);
    expect(got.cols['i64']).toEqual(expected.i64.map((v) => (v === null ? null : String(v))));
    expect(got.cols['f32']).toEqual(expected.f32);
    expect(got.cols['f64']).toEqual(expected.f64);
    expect(got.cols['b']).toEqual(expected.b);
    expect(got.cols['list']).toEqual(expected.list);
    expect(got.cols['fixed']).toEqual(expected.fixed);
  });

  it.each([
    { name: 'v1-dict-snappy', opts: "compression='snappy', use_dictionary=True, data_page_version='1.0'" },
    { name: 'v2-plain-none', opts: "compression='none', use_dictionary=False, data_page_version='2.0'" },
    { name: 'v2-dict-snappy-small-pages', opts: "compression='snappy', use_dictionary=True, data_page_version='2.0', data_page_size=512, row_group_size=1500" },
    { name: 'v1-zstd', opts: "compression='zstd', data_page_version='1.0', row_group_size=1000" },
  ])('reads files pyarrow wrote ($name) with the values pyarrow reads', async ({ name, opts }) => {
    const path = join(dir, `py-${name}.parquet`);
    const out = await runPython(
      `
import json, sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
n = 4000
ids = [None if i % 9 == 4 else f"id-{i % 600}" for i in range(n)]          # repeats: dictionary pages
nums = pa.array([None if i % 5 == 0 else i * 7 - 3 for i in range(n)], pa.int32())
big = pa.array([i * 3_000_000_000 for i in range(n)], pa.int64())
dbl = pa.array([None if i % 13 == 0 else i / 7 for i in range(n)], pa.float64())
flags = pa.array([None if i % 17 == 0 else i % 3 == 0 for i in range(n)], pa.bool_())
lists = pa.array([None if i % 10 == 0 else ([] if i % 10 == 1 else [None if (i + k) % 23 == 0 else float(np.float32(i + k / 8)) for k in range(i % 6)]) for i in range(n)], pa.list_(pa.float32()))
vals = np.arange(n * 8, dtype=np.float32) / 3
fixed = pa.FixedSizeListArray.from_arrays(pa.array(vals), 8)
t = pa.table({'id': ids, 'num': nums, 'big': big, 'dbl': dbl, 'flag': flags, 'feat': lists, 'fixed': fixed})
pq.write_table(t, sys.argv[1], ${opts})
cols = t.to_pydict()
cols['big'] = [str(v) for v in cols['big']]
print(json.dumps(cols))
`,
      [path],
    );
    const expected = JSON.parse(out) as Record<string, unknown[]>;
    const reader = await openParquet(path);
    expect(reader.numRows).toBe(4000);
    const batches = await readAll(reader, { batchSize: 700 });
    await reader.close();
    expect(batches.every((b) => b.numRows <= 700)).toBe(true);
    expect(concatColumn(batches, 'id')).toEqual(expected['id']);
    expect(concatColumn(batches, 'num')).toEqual(expected['num']);
    expect(concatColumn(batches, 'big').map(String)).toEqual(expected['big']);
    expect(concatColumn(batches, 'dbl')).toEqual(expected['dbl']);
    expect(concatColumn(batches, 'flag')).toEqual(expected['flag']);
    expect(concatColumn(batches, 'feat')).toEqual(expected['feat']);
    expect(concatColumn(batches, 'fixed')).toEqual(expected['fixed']);
    // null elements inside lists are nulls, not zeros
    const nullInside = batches.some((b) => (b.getChild('feat')?.data[0]?.children[0]?.nullCount ?? 0) > 0);
    expect(nullInside).toBe(true);
  });
});
