import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Field, Float32, Float64, Int32, RecordBatch, Schema, Struct, makeData } from 'apache-arrow';
import type { DataType } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataIOError, InvalidInputError } from '@inferq/shared';
import { createParquetWriter } from '../io/parquet.js';
import { isGlob, segmentPattern } from './inputs.js';
import { parsePredictTask, planPredict, splitRowGroups } from './plan.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'inferq-plan-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A file of `rows` rows (id, x) in row groups of `groupRows`; `xType` changes the second column's type. */
async function parquet(path: string, rows: number, groupRows: number, xType: DataType = new Float32()): Promise<string> {
  await mkdir(join(path, '..'), { recursive: true });
  const fields = [new Field('id', new Int32(), false), new Field('x', xType, false)];
  const schema = new Schema(fields);
  const w = await createParquetWriter(path, { rowGroupRows: groupRows, schema });
  if (rows > 0) {
    const x = xType instanceof Float64 ? new Float64Array(rows) : new Float32Array(rows);
    const children = [makeData({ type: new Int32(), length: rows, data: new Int32Array(rows) }), makeData({ type: xType as Float32, length: rows, data: x as Float32Array })];
    await w.write(new RecordBatch(schema, makeData({ type: new Struct(fields), length: rows, nullCount: 0, children })));
  }
  await w.close();
  return path;
}

describe('planPredict', () => {
  it('lists a folder recursively in sorted order, skipping _/. names and saying which other files it ignored', async () => {
    const root = join(dir, 'folder');
    // Written out of order: the plan sorts.
    await parquet(join(root, 'date=2', 'b.parquet'), 10, 10);
    await parquet(join(root, 'a.parquet'), 10, 10);
    await parquet(join(root, 'date=1', 'c.parquet'), 10, 10);
    await parquet(join(root, '_temporary', 'd.parquet'), 10, 10);
    await parquet(join(root, '.hidden.parquet'), 10, 10);
    await parquet(join(root, '_partial.parquet'), 10, 10);
    await writeFile(join(root, '_SUCCESS'), '');
    await writeFile(join(root, 'notes.txt'), 'not data');
    const plan = await planPredict(root);
    expect(plan.inputs).toEqual([join(root, 'a.parquet'), join(root, 'date=1', 'c.parquet'), join(root, 'date=2', 'b.parquet')]);
    expect(plan.ignored).toEqual([join(root, 'notes.txt')]);
    expect(plan.tasks.map((t) => [t.index, t.file])).toEqual(plan.inputs.map((f, i) => [i, f]));
    expect(plan.totalRows).toBe(30);
    // A trailing slash names the same folder.
    expect(await planPredict(`${root}/`)).toEqual(plan);
  });

  it('splits files into whole row groups of about targetRows, numbering tasks densely across files', async () => {
    const root = join(dir, 'split');
    await parquet(join(root, 'a.parquet'), 1000, 300); // 300 300 300 100
    await parquet(join(root, 'b.parquet'), 50, 100); // 50
    await parquet(join(root, 'c.parquet'), 0, 100); // no row group
    await parquet(join(root, 'd.parquet'), 250, 100); // 100 100 50
    const plan = await planPredict(root, { targetRows: 600 });
    const f = (n: string): string => join(root, n);
    expect(plan.tasks).toEqual([
      { index: 0, file: f('a.parquet'), rowGroups: [0, 2], rows: 600 },
      { index: 1, file: f('a.parquet'), rowGroups: [2, 4], rows: 400 },
      { index: 2, file: f('b.parquet'), rowGroups: [0, 1], rows: 50 },
      { index: 3, file: f('c.parquet'), rowGroups: [0, 0], rows: 0 },
      { index: 4, file: f('d.parquet'), rowGroups: [0, 3], rows: 250 },
    ]);
    expect(plan.totalRows).toBe(1300);
    // The same input plans the same tasks; the default target keeps each file whole here.
    expect(await planPredict(root, { targetRows: 600 })).toEqual(plan);
    expect((await planPredict(root)).tasks.map((t) => t.rowGroups)).toEqual([[0, 4], [0, 1], [0, 0], [0, 3]]);
  });

  it('takes a glob, with wildcards in folder segments too', async () => {
    const root = join(dir, 'glob');
    await parquet(join(root, 'day=01', 'part-0.parquet'), 5, 5);
    await parquet(join(root, 'day=01', 'part-1.parquet'), 5, 5);
    await parquet(join(root, 'day=02', 'part-0.parquet'), 5, 5);
    await parquet(join(root, 'day=10', 'part-0.parquet'), 5, 5);
    await parquet(join(root, '_day=03', 'part-0.parquet'), 5, 5);
    expect((await planPredict(join(root, 'day=0?', 'part-0.parquet'))).inputs).toEqual([join(root, 'day=01', 'part-0.parquet'), join(root, 'day=02', 'part-0.parquet')]);
    // A matched folder is walked; a wildcard does not match hidden names.
    expect((await planPredict(join(root, '*'))).inputs).toEqual(['day=01/part-0', 'day=01/part-1', 'day=02/part-0', 'day=10/part-0'].map((p) => join(root, `${p}.parquet`)));
    await expect(planPredict(join(root, 'day=9*'))).rejects.toThrow(new DataIOError(`input "${join(root, 'day=9*')}": no Parquet files found`));
  });

  it('refuses a file whose columns differ, naming it and the column', async () => {
    const root = join(dir, 'mismatch');
    await parquet(join(root, 'a.parquet'), 5, 5);
    await parquet(join(root, 'b.parquet'), 5, 5, new Float64());
    const err = await planPredict(root).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidInputError);
    expect((err as Error).message).toBe(
      `input "${join(root, 'b.parquet')}": its columns differ from those of "${join(root, 'a.parquet')}" (column 2 is "x" Float64, expected "x" Float32); every file of a predict input needs the same columns`,
    );
  });

  it('says what is missing: no such input, or a folder without Parquet files', async () => {
    await expect(planPredict(join(dir, 'nope'))).rejects.toThrow(/input ".*nope": no such file or folder \(local disk\)/);
    const root = join(dir, 'empty');
    await mkdir(root, { recursive: true });
    await writeFile(join(root, 'data.csv'), 'a,b');
    await expect(planPredict(root)).rejects.toThrow(`input "${root}": no Parquet files found (not Parquet by name: ${join(root, 'data.csv')})`);
    await expect(planPredict(root, { targetRows: 0 })).rejects.toThrow('targetRows must be a positive integer, got 0');
  });
});

describe('splitRowGroups', () => {
  it('adds groups while within the target; a group above it stands alone', () => {
    expect(splitRowGroups([10, 10, 10, 10, 10], 25)).toEqual([[[0, 2], 20], [[2, 4], 20], [[4, 5], 10]]);
    expect(splitRowGroups([100, 5, 5, 100], 20)).toEqual([[[0, 1], 100], [[1, 3], 10], [[3, 4], 100]]);
    expect(splitRowGroups([7], 1)).toEqual([[[0, 1], 7]]);
    expect(splitRowGroups([], 10)).toEqual([[[0, 0], 0]]);
    expect(splitRowGroups([0, 0, 5], 5)).toEqual([[[0, 3], 5]]);
  });
});

describe('globs', () => {
  it('matches * and ? within one segment, everything else literally', () => {
    expect(isGlob('/a/b*.parquet')).toBe(true);
    expect(isGlob('/a/b.parquet')).toBe(false);
    const p = segmentPattern('part-?.p*t');
    expect(['part-1.parquet', 'part-x.pt'].map((s) => p.test(s))).toEqual([true, true]);
    expect(['part-12.parquet', 'part-1.parquex', 'part-1/parquet'].map((s) => p.test(s))).toEqual([false, false, false]);
    expect(segmentPattern('a.b+(c)').test('a.b+(c)')).toBe(true);
    expect(segmentPattern('a.b').test('axb')).toBe(false);
  });
});

describe('parsePredictTask', () => {
  const good = { index: 3, file: 'webhdfs://nn:9870/data/a.parquet', rowGroups: [2, 5], rows: 1234 };

  it('returns a valid task, without unknown keys', () => {
    expect(parsePredictTask({ ...good, extra: 'ignored' })).toEqual(good);
  });

  const bad: [string, unknown, string][] = [
    ['not an object', 'task', 'predict task: the task: '],
    ['a negative index', { ...good, index: -1 }, 'predict task: field "index": '],
    ['a fractional index', { ...good, index: 1.5 }, 'predict task: field "index": '],
    ['an index past the part names', { ...good, index: 100_000 }, 'predict task: field "index": '],
    ['an empty file', { ...good, file: '' }, 'predict task: field "file": '],
    ['a file with a control character', { ...good, file: 'a\nb' }, 'predict task: field "file": must not hold control characters (got "a\\nb")'],
    ['a file that is not a string', { ...good, file: 7 }, 'predict task: field "file": '],
    ['a range of one number', { ...good, rowGroups: [1] }, 'predict task: field "rowGroups'],
    ['a reversed range', { ...good, rowGroups: [5, 2] }, 'predict task: field "rowGroups": first must not be past end (got an array of 2)'],
    ['a negative row group', { ...good, rowGroups: [-1, 2] }, 'predict task: field "rowGroups.0": '],
    ['a huge row group', { ...good, rowGroups: [0, 2 ** 40] }, 'predict task: field "rowGroups.1": '],
    ['rows as a string', { ...good, rows: '12' }, 'predict task: field "rows": '],
    ['missing rows', { index: 0, file: 'a', rowGroups: [0, 1] }, 'predict task: field "rows": '],
  ];
  it.each(bad)('rejects %s with an InvalidInputError naming the field', (_what, data, message) => {
    expect(() => parsePredictTask(data)).toThrow(InvalidInputError);
    expect(() => parsePredictTask(data)).toThrow(message);
  });
});
