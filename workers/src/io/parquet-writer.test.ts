import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Binary, Field, RecordBatch, Schema, Struct, Utf8, makeData, vectorFromArray } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Encoding, readFileMeta } from './parquet-format.js';
import { createParquetWriter, openParquet } from './parquet.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'inferq-writer-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const n = 3000;
const fields = [new Field('uniq', new Utf8(), false), new Field('rep', new Utf8(), false), new Field('bin', new Binary(), false)];
const uniq = Array.from({ length: n }, (_, i) => `row-${i}`);
const rep = Array.from({ length: n }, (_, i) => `job-${i % 7}`);
const bin = Array.from({ length: n }, (_, i) => Uint8Array.of(i % 3, 9));

async function encodingsByColumn(path: string): Promise<Map<string, readonly number[]>> {
  const handle = await open(path, 'r');
  try {
    const meta = await readFileMeta(handle, (await stat(path)).size);
    return new Map(meta.rowGroups[0]!.columns.map((c) => [c.path.join('.'), c.encodings]));
  } finally {
    await handle.close();
  }
}

describe('createParquetWriter: string dictionaries', () => {
  it('gives a dictionary to string and binary columns whose values repeat, and none to unique ones; every value reads back', async () => {
    const path = join(dir, 'dict.parquet');
    const children = [vectorFromArray(uniq, new Utf8()).data[0]!, vectorFromArray(rep, new Utf8()).data[0]!, vectorFromArray(bin, new Binary()).data[0]!];
    const w = await createParquetWriter(path);
    await w.write(new RecordBatch(new Schema(fields), makeData({ type: new Struct(fields), length: n, nullCount: 0, children })));
    await w.close();

    const encodings = await encodingsByColumn(path);
    expect(encodings.get('uniq')).not.toContain(Encoding.RLE_DICTIONARY);
    expect(encodings.get('rep')).toContain(Encoding.RLE_DICTIONARY);
    expect(encodings.get('bin')).toContain(Encoding.RLE_DICTIONARY);

    const r = await openParquet(path);
    try {
      const got: { uniq: string[]; rep: string[]; bin: number[][] } = { uniq: [], rep: [], bin: [] };
      for await (const b of r.batches({ batchSize: 1000 })) {
        for (let i = 0; i < b.numRows; i++) {
          got.uniq.push(b.getChild('uniq')!.get(i) as string);
          got.rep.push(b.getChild('rep')!.get(i) as string);
          got.bin.push([...(b.getChild('bin')!.get(i) as Uint8Array)]);
        }
      }
      expect(got.uniq).toEqual(uniq);
      expect(got.rep).toEqual(rep);
      expect(got.bin).toEqual(bin.map((v) => [...v]));
    } finally {
      await r.close();
    }
  });
});
