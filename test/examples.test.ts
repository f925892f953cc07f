/**
 * The example models and data under examples/: the hand-written ONNX encoder against
 * a pure-JS forward pass, the tiny trainer, and the committed models run in
 * onnxruntime-node on the committed Parquet files.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tableFromIPC } from 'apache-arrow';
import type { Table } from 'apache-arrow';
import * as ort from 'onnxruntime-node';
import * as pq from 'parquet-wasm';
import { describe, expect, it } from 'vitest';
import { buildMlp, forwardMlp, randomMlp } from '../examples/build/onnx-builder.js';
import type { MlpSpec } from '../examples/build/onnx-builder.js';
import { createRng } from '../examples/build/rng.js';
import { trainMlp } from '../examples/build/train.js';
import { pearson } from '../examples/build/stats.js';

const examplePath = (rel: string): string => fileURLToPath(new URL(`../examples/${rel}`, import.meta.url));

function readParquet(rel: string): Table {
  const wasmTable = pq.readParquet(readFileSync(examplePath(rel)));
  return tableFromIPC(wasmTable.intoIPCStream());
}

/** A list<float32> column flattened to rows × width, checking every row's length. */
function floatLists(table: Table, name: string, width: number): Float32Array {
  const col = table.getChild(name);
  expect(String(col?.type)).toBe('List<Float32>');
  const out = new Float32Array(table.numRows * width);
  for (let r = 0; r < table.numRows; r++) {
    const row: unknown = col?.get(r);
    const values = (row as { toArray(): Float32Array } | null)?.toArray();
    if (values?.length !== width) throw new Error(`${name}[${r}]: expected ${width} values, got ${values?.length ?? 'null'}`);
    out.set(values, r * width);
  }
  return out;
}

function strings(table: Table, name: string): string[] {
  const col = table.getChild(name);
  expect(String(col?.type)).toBe('Utf8');
  return Array.from({ length: table.numRows }, (_, r) => String(col?.get(r)));
}

type SessionInfo = Pick<ort.InferenceSession, 'inputNames' | 'outputNames' | 'inputMetadata' | 'outputMetadata'>;

async function run(
  model: Uint8Array | string,
  feeds: Record<string, { data: Float32Array; dim: number }>,
  rows: number,
): Promise<{ data: Float32Array; dims: readonly number[]; session: SessionInfo }> {
  const session = typeof model === 'string' ? await ort.InferenceSession.create(model) : await ort.InferenceSession.create(model);
  try {
    const tensors: Record<string, ort.Tensor> = {};
    for (const [name, f] of Object.entries(feeds)) tensors[name] = new ort.Tensor('float32', f.data, [rows, f.dim]);
    const out = await session.run(tensors);
    const first = out[session.outputNames[0] ?? ''];
    if (!(first?.data instanceof Float32Array)) throw new Error('expected a float32 output');
    const { inputNames, outputNames, inputMetadata, outputMetadata } = session;
    return { data: first.data, dims: first.dims, session: { inputNames, outputNames, inputMetadata, outputMetadata } };
  } finally {
    await session.release();
  }
}

const randomRows = (rows: number, dim: number, seed: number): Float32Array => {
  const rng = createRng(seed);
  return Float32Array.from({ length: rows * dim }, () => rng.normal() * 2);
};

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  return a.reduce((m, v, i) => Math.max(m, Math.abs(v - (b[i] as number))), 0);
}


describe('examples/build/onnx-builder', () => {
  it('encodes a random MLP that onnxruntime-node runs exactly like forwardMlp, at any batch size', async () => {
    const spec = randomMlp([12, 24, 16, 3], 42);
    const model = buildMlp(spec);
    for (const rows of [1, 33]) {
      const x = randomRows(rows, 12, rows);
      const { data, dims, session } = await run(model, { features: { data: x, dim: 12 } }, rows);
      expect(dims).toEqual([rows, 3]);
      expect(session.inputNames).toEqual(['features']);
      expect(session.outputNames).toEqual(['score']);
      expect(session.inputMetadata[0]).toMatchObject({ isTensor: true, type: 'float32', shape: ['batch', 12] });
      expect(session.outputMetadata[0]).toMatchObject({ isTensor: true, type: 'float32', shape: ['batch', 3] });
      const expected = forwardMlp(spec, { features: x }, rows);
      expect(maxAbsDiff(data, expected)).toBeLessThan(1e-5);
      // The outputs must depend on the input: a zero-weight or dropped-layer encoding would not.
      expect(new Set(Array.from(data, (v) => v.toFixed(4))).size).toBeGreaterThan(rows);
    }
  });

  it('concatenates several inputs on axis 1 in their declared order', async () => {
    const rng = createRng(5);
    const rand = (n: number): Float32Array => Float32Array.from({ length: n }, () => rng.normal());
    const spec: MlpSpec = {
      inputs: [
        { name: 'a', dim: 3 },
        { name: 'b', dim: 5 },
        { name: 'c', dim: 2 },
      ],
      layers: [
        { weights: rand(10 * 7), bias: rand(7), activation: 'relu' },
        { weights: rand(7 * 4), bias: rand(4), activation: 'none' },
      ],
      outputName: 'out',
    };
    const rows = 9;
    const inputs = { a: randomRows(rows, 3, 1), b: randomRows(rows, 5, 2), c: randomRows(rows, 2, 3) };
    const { data, dims, session } = await run(
      buildMlp(spec),
      { a: { data: inputs.a, dim: 3 }, b: { data: inputs.b, dim: 5 }, c: { data: inputs.c, dim: 2 } },
      rows,
    );
    expect(session.inputNames).toEqual(['a', 'b', 'c']);
    expect(dims).toEqual([rows, 4]);
    const expected = forwardMlp(spec, inputs, rows);
    expect(maxAbsDiff(data, expected)).toBeLessThan(1e-5);
    // What the model would give had it concatenated b before a: clearly different.
    const bFirst = forwardMlp({ ...spec, inputs: [{ name: 'b', dim: 5 }, { name: 'a', dim: 3 }, { name: 'c', dim: 2 }] }, inputs, rows);
    expect(maxAbsDiff(data, bFirst)).toBeGreaterThan(1e-2);
  });

  it('is deterministic per seed and rejects weights that do not fit the layer widths', () => {
    expect(buildMlp(randomMlp([8, 4, 1], 3))).toEqual(buildMlp(randomMlp([8, 4, 1], 3)));
    expect(buildMlp(randomMlp([8, 4, 1], 3))).not.toEqual(buildMlp(randomMlp([8, 4, 1], 4)));
    const bad: MlpSpec = {
      inputs: [{ name: 'x', dim: 3 }],
      layers: [{ weights: new Float32Array(5), bias: new Float32Array(2), activation: 'relu' }],
      outputName: 'y',
    };
    expect(() => buildMlp(bad)).toThrow('mlp layer 0: expected weights of 3x2 = 6 values, got 5');
  });
});

describe('examples/build/train', () => {
  it('learns a small non-linear multi-label problem', () => {
    const rng = createRng(9);
    const [rows, inDim] = [800, 8];
    const x = Float32Array.from({ length: rows * inDim }, () => rng.next() * 2 - 1);
    // Label 0: x0 and x1 share a sign (XOR-like: the hidden layer must learn it among 8
    // inputs); label 1: x2 > 0 (linear).
    const label = (r: number, k: number): number => {
      const [a, b, c] = [x[r * inDim] as number, x[r * inDim + 1] as number, x[r * inDim + 2] as number];
      return k === 0 ? (a * b > 0 ? 1 : 0) : c > 0 ? 1 : 0;
    };
    const y = Float32Array.from({ length: rows * 2 }, (_, i) => label(Math.floor(i / 2), i % 2));
    const train = { x, y, rows, inDim, outDim: 2 };
    const opts = { hidden: [8], epochs: 60, seed: 1, batchSize: 32, learningRate: 0.01 };
    const layers = trainMlp(train, opts);
    expect(trainMlp(train, opts)).toEqual(layers); // deterministic per seed
    const p = forwardMlp({ inputs: [{ name: 'x', dim: inDim }], layers, outputName: 'y' }, { x }, rows);
    for (const k of [0, 1]) {
      let hits = 0;
      for (let r = 0; r < rows; r++) if (((p[r * 2 + k] as number) > 0.5 ? 1 : 0) === label(r, k)) hits++;
      expect(hits / rows, `label ${k}`).toBeGreaterThan(0.9);
    }
  });
});

describe('examples/models/digit-tags (UCI handwritten digits, multi-label)', () => {
  it('ships a bare model.onnx and digits.parquet with 1797 labelled 8x8 images', () => {
    expect(existsSync(examplePath('models/digit-tags/1/model.onnx'))).toBe(true);
    expect(existsSync(examplePath('models/digit-tags/1/config.yaml'))).toBe(false);
    const table = readParquet('data/digits.parquet');
    expect(table.schema.fields.map((f) => `${f.name}:${String(f.type)}`)).toEqual(['id:Utf8', 'label:Int32', 'split:Utf8', 'pixels:List<Float32>']);
    expect(table.numRows).toBe(1797);
    const ids = strings(table, 'id');
    expect(ids[0]).toBe('digit-0001');
    expect(new Set(ids).size).toBe(1797);
    const split = strings(table, 'split');
    expect(split.filter((s) => s === 'test').length).toBe(359);
    expect(split.filter((s) => s === 'train').length).toBe(1438);
    const pixels = floatLists(table, 'pixels', 64);
    expect(pixels.every((v) => Number.isInteger(v) && v >= 0 && v <= 16)).toBe(true);
  });

  it('tags the test split: argmax accuracy >= 0.93 and attribute tags agree with the labels', async () => {
    const table = readParquet('data/digits.parquet');
    const pixels = floatLists(table, 'pixels', 64);
    const labelCol = table.getChild('label');
    const split = strings(table, 'split');
    const test = split.flatMap((s, r) => (s === 'test' ? [r] : []));
    const x = new Float32Array(test.length * 64);
    test.forEach((r, k) => x.set(pixels.subarray(r * 64, (r + 1) * 64), k * 64));
    const { data, dims, session } = await run(examplePath('models/digit-tags/1/model.onnx'), { pixels: { data: x, dim: 64 } }, test.length);
    expect(session.inputNames).toEqual(['pixels']);
    expect(session.outputNames).toEqual(['tags']);
    expect(dims).toEqual([test.length, 14]);

    const attributes: [string, (d: number) => boolean][] = [
      ['is_even', (d) => d % 2 === 0],
      ['is_prime', (d) => [2, 3, 5, 7].includes(d)],
      ['has_loop', (d) => [0, 6, 8, 9].includes(d)],
      ['is_large', (d) => d >= 5],
    ];
    let correct = 0;
    const agree = [0, 0, 0, 0];
    test.forEach((r, k) => {
      const label = Number(labelCol?.get(r));
      const row = data.subarray(k * 14, (k + 1) * 14);
      const digits = Array.from(row.subarray(0, 10));
      if (digits.indexOf(Math.max(...digits)) === label) correct++;
      attributes.forEach(([, truth], a) => {
        if ((row[10 + a] as number) > 0.5 === truth(label)) agree[a] = (agree[a] as number) + 1;
      });
    });
    expect(correct / test.length).toBeGreaterThanOrEqual(0.93);
    attributes.forEach(([name], a) => expect((agree[a] as number) / test.length, name).toBeGreaterThanOrEqual(0.9));
    // Sigmoid in float32: confident tags saturate to exactly 0 or 1.
    expect(data.every((v) => v >= 0 && v <= 1)).toBe(true);
  });
});

describe('examples/models/booking (synthetic tabular recommender)', () => {
  it('has a config.yaml naming the model inputs and outputs in order', async () => {
    const config = readFileSync(examplePath('models/booking/1/config.yaml'), 'utf8');
    const names = [...config.matchAll(/name: (\w+), dtype: float32, shape: \[-1, (\d+)\]/g)].map((m) => `${m[1]}:${m[2]}`);
    expect(names).toEqual(['user:8', 'context:4', 'item:8', 'booking_prob:1']);
    expect(config).toMatch(/maxBatchSize: 1024\n\s+maxDelayMs: 2\n\s+preferredBatchSizes: \[64, 256, 1024\]/);
    const session = await ort.InferenceSession.create(examplePath('models/booking/1/model.onnx'));
    try {
      const meta = [...session.inputMetadata, ...session.outputMetadata].map((m) => `${m.name}:${m.isTensor ? String(m.shape[1]) : '?'}`);
      expect(meta).toEqual(names);
    } finally {
      await session.release();
    }
  });

  it('scores bookings.parquet with probabilities that track the ground truth (Pearson > 0.8)', async () => {
    const table = readParquet('data/bookings.parquet');
    expect(table.numRows).toBe(5000);
    expect(new Set(strings(table, 'request_id')).size).toBe(5000);
    const rows = table.numRows;
    const feeds = {
      user: { data: floatLists(table, 'user', 8), dim: 8 },
      context: { data: floatLists(table, 'context', 4), dim: 4 },
      item: { data: floatLists(table, 'item', 8), dim: 8 },
    };
    const truthCol = table.getChild('truth_prob');
    expect(String(truthCol?.type)).toBe('Float32');
    const truth = truthCol?.toArray() as Float32Array;
    const { data, dims } = await run(examplePath('models/booking/1/model.onnx'), feeds, rows);
    expect(dims).toEqual([rows, 1]);
    expect(data.every((p) => p > 0 && p < 1)).toBe(true);
    expect(pearson(data, truth)).toBeGreaterThan(0.8);
  });
});
