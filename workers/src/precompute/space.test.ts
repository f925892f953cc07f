import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableFromArrays } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createParquetWriter } from '../io/parquet.js';
import { openSpace } from './space.js';
import type { Chunk } from './space.js';
import { parseSpec } from './spec.js';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'inferq-space-'));
  // 25 entity rows in row groups of 7: batches do not line up with chunks of 4.
  const writer = await createParquetWriter(join(dir, 'rows.parquet'), { rowGroupRows: 7 });
  for (const batch of tableFromArrays({ id: Int32Array.from({ length: 25 }, (_, i) => 100 + i) }).batches) await writer.write(batch);
  await writer.close();
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function collect(text: string, skip: (i: number) => boolean, range?: [number, number]): Promise<Chunk[]> {
  const { space, close } = await openSpace(parseSpec(text, 'spec.yaml', dir));
  try {
    const out: Chunk[] = [];
    for await (const c of space.chunks(skip, range)) out.push(c);
    return out;
  } finally {
    await close();
  }
}

const axes = ['table: t', 'model: m', 'space:', '  axes:', '    - { name: a, values: [x, y, z] }', '    - { name: b, range: { from: 1, to: 9 } }', 'key: "{a}:{b}"', 'encode: { features: [{ axis: b, as: number }] }', 'chunkRows: 4'].join('\n');
const rows = ['table: t', 'model: m', 'space:', '  rows: { parquet: rows.parquet }', 'key: "{id}"', 'encode: { features: [{ axis: id, as: number }] }', 'chunkRows: 4'].join('\n');

describe('space chunks by range', () => {
  for (const [name, text, count] of [['axes', axes, 7], ['rows from Parquet', rows, 7]] as const) {
    it(`${name}: a range gives exactly the chunks the whole space has at those indices, minus skipped ones`, async () => {
      const all = await collect(text, () => false);
      expect(all.map((c) => c.index)).toEqual(Array.from({ length: count }, (_, i) => i));
      for (const range of [[0, 1], [2, 5], [3, 4], [5, 7], [6, 99], [4, 4], [0, 7]] as [number, number][]) {
        const part = await collect(text, () => false, range);
        expect(part, `range ${range.join('-')}`).toEqual(all.slice(range[0], Math.min(range[1], count)));
      }
      expect((await collect(text, (i) => i === 3, [2, 5])).map((c) => c.index)).toEqual([2, 4]);
    });
  }
});
