import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Field, Float32, Int32, RecordBatch, Schema, Struct, makeData } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataIOError } from '@inferq/shared';
import { createParquetWriter, openParquet } from './parquet.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'inferq-rowgroups-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const fields = [new Field('id', new Int32(), false), new Field('x', new Float32(), false)];

function batch(from: number, n: number): RecordBatch {
  const id = Int32Array.from({ length: n }, (_, i) => from + i);
  const x = Float32Array.from({ length: n }, (_, i) => (from + i) / 2);
  return new RecordBatch(
    new Schema(fields),
    makeData({ type: new Struct(fields), length: n, nullCount: 0, children: [makeData({ type: new Int32(), length: n, data: id }), makeData({ type: new Float32(), length: n, data: x })] }),
  );
}

/** 1,000 rows in row groups of 300 (300, 300, 300, 100). */
async function fileOf(compression: 'snappy' | 'zstd'): Promise<string> {
  const path = join(dir, `${compression}.parquet`);
  const w = await createParquetWriter(path, { rowGroupRows: 300, compression });
  await w.write(batch(0, 1000));
  await w.close();
  return path;
}

async function ids(path: string, rowGroups?: readonly [number, number]): Promise<number[]> {
  const r = await openParquet(path);
  try {
    const out: number[] = [];
    for await (const b of r.batches({ batchSize: 128, ...(rowGroups === undefined ? {} : { rowGroups }) })) out.push(...(b.getChild('id')!.toArray() as Int32Array));
    return out;
  } finally {
    await r.close();
  }
}

const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);

describe('ParquetReader row-group ranges', () => {
  // snappy is decoded in JavaScript, zstd by parquet-wasm: both honour the range.
  it.each(['snappy', 'zstd'] as const)('reads only the rows of [first, end) (%s)', async (compression) => {
    const path = await fileOf(compression);
    const r = await openParquet(path);
    expect(r.rowGroupRows).toEqual([300, 300, 300, 100]);
    await r.close();
    expect(await ids(path)).toEqual(range(0, 1000));
    expect(await ids(path, [1, 3])).toEqual(range(300, 900));
    expect(await ids(path, [3, 4])).toEqual(range(900, 1000));
    expect(await ids(path, [0, 1])).toEqual(range(0, 300));
    expect(await ids(path, [2, 2])).toEqual([]);
  });

  it('refuses a range that is not inside the file, naming it', async () => {
    const path = await fileOf('snappy');
    const r = await openParquet(path);
    try {
      for (const bad of [[0, 5], [3, 2], [-1, 1], [0.5, 2]] as [number, number][]) {
        expect(() => r.batches({ rowGroups: bad })).toThrow(DataIOError);
        expect(() => r.batches({ rowGroups: bad })).toThrow(`row groups [${bad[0]}, ${bad[1]}) are not a range of its 4 row groups`);
      }
    } finally {
      await r.close();
    }
  });
});
