/**
 * Rebuilds the example models and data under examples/ (`npm run build:models`).
 * Deterministic: the same inputs and seeds give byte-identical files.
 *
 *   digits.csv.gz ─► split 80/20 ─► train 64→64→14 ─► models/digit-tags/1/model.onnx
 *                               └─────────────────────► data/digits.parquet
 *   logistic ground truth ─► 60k sampled outcomes ─► train 20→48→1 ─► models/booking/1/
 *                         └─► 5k candidate rows ─────────────────────────► data/bookings.parquet
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Int32, Table, Utf8, makeVector, vectorFromArray } from 'apache-arrow';
import * as ort from 'onnxruntime-node';
import { CONTEXT_DIM, ITEM_DIM, USER_DIM, generateBookings } from './booking.js';
import type { Bookings } from './booking.js';
import { DIGIT_PIXELS, DIGIT_TAGS, digitTags, loadDigits, locateDigitsCsv, venvPython } from './digits.js';
import type { Digits } from './digits.js';
import { buildMlp } from './onnx-builder.js';
import type { MlpLayer, MlpSpec } from './onnx-builder.js';
import { floatListColumn, toParquet } from './parquet.js';
import { trainMlp } from './train.js';
import { pearson } from './stats.js';

const EXAMPLES = dirname(dirname(fileURLToPath(import.meta.url)));
const SPLIT_SEED = 20240917;
const DIGITS_TRAIN_SEED = 7;
const BOOKING_TRAIN_SEED = 11;
const BOOKING_TRAIN_DATA_SEED = 101;
const BOOKING_CANDIDATE_SEED = 202;
const MIN_DIGIT_ACCURACY = 0.93;
const MAX_FILE_BYTES = 1 << 20;

const written: string[] = [];
function write(rel: string, data: Uint8Array | string): void {
  const path = join(EXAMPLES, rel);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, data);
  const size = statSync(path).size;
  if (size >= MAX_FILE_BYTES) throw new Error(`${rel}: ${size} bytes, expected < 1 MiB`);
  written.push(rel);
}

/** Runs one model in onnxruntime-node (the engine the workers use) and returns its single output. */
async function runOnnx(model: Uint8Array, feeds: Record<string, { data: Float32Array; dim: number }>, rows: number): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(model);
  try {
    const tensors: Record<string, ort.Tensor> = {};
    for (const [name, f] of Object.entries(feeds)) tensors[name] = new ort.Tensor('float32', f.data, [rows, f.dim]);
    const out = await session.run(tensors);
    const first = out[session.outputNames[0] ?? ''];
    if (!(first?.data instanceof Float32Array)) throw new Error('onnx: expected a float32 output');
    return first.data;
  } finally {
    await session.release();
  }
}

function select(values: Float32Array, width: number, rows: number[]): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((r, k) => out.set(values.subarray(r * width, (r + 1) * width), k * width));
  return out;
}

async function buildDigitTags(digits: Digits): Promise<number> {
  const train = [...digits.labels.keys()].filter((r) => digits.split[r] === 'train');
  const test = [...digits.labels.keys()].filter((r) => digits.split[r] === 'test');
  const x = select(digits.pixels, DIGIT_PIXELS, train).map((v) => v / 16);
  const y = Float32Array.from(train.flatMap((r) => digitTags(digits.labels[r] as number)));
  const layers = trainMlp(
    { x, y, rows: train.length, inDim: DIGIT_PIXELS, outDim: DIGIT_TAGS.length },
    { hidden: [64], epochs: 60, batchSize: 32, learningRate: 0.003, weightDecay: 1e-4, seed: DIGITS_TRAIN_SEED },
  );
  // Fold the 1/16 input scaling into the first layer so the model takes raw 0..16 pixel counts.
  const first = layers[0] as MlpLayer;
  layers[0] = { ...first, weights: first.weights.map((w) => w / 16) };
  const spec: MlpSpec = { inputs: [{ name: 'pixels', dim: DIGIT_PIXELS }], layers, outputName: 'tags', producer: 'inferq-examples' };
  const model = buildMlp(spec);

  const tags = await runOnnx(model, { pixels: { data: select(digits.pixels, DIGIT_PIXELS, test), dim: DIGIT_PIXELS } }, test.length);
  let correct = 0;
  test.forEach((r, k) => {
    const row = tags.subarray(k * DIGIT_TAGS.length, k * DIGIT_TAGS.length + 10);
    const argmax = row.indexOf(Math.max(...row));
    if (argmax === digits.labels[r]) correct++;
  });
  const accuracy = correct / test.length;
  console.log(`digit-tags: test argmax accuracy ${accuracy.toFixed(4)} (${correct}/${test.length}, train ${train.length})`);
  if (accuracy < MIN_DIGIT_ACCURACY) throw new Error(`digit-tags: accuracy ${accuracy} below ${MIN_DIGIT_ACCURACY}`);

  const dir = 'models/digit-tags/1';
  rmSync(join(EXAMPLES, dir, 'config.yaml'), { force: true }); // this model ships bare on purpose
  write(`${dir}/model.onnx`, model);
  return accuracy;
}

const concatRows = (b: Bookings): Float32Array => {
  const width = USER_DIM + CONTEXT_DIM + ITEM_DIM;
  const x = new Float32Array(b.rows * width);
  for (let r = 0; r < b.rows; r++) {
    x.set(b.user.subarray(r * USER_DIM, (r + 1) * USER_DIM), r * width);
    x.set(b.context.subarray(r * CONTEXT_DIM, (r + 1) * CONTEXT_DIM), r * width + USER_DIM);
    x.set(b.item.subarray(r * ITEM_DIM, (r + 1) * ITEM_DIM), r * width + USER_DIM + CONTEXT_DIM);
  }
  return x;
};


const BOOKING_CONFIG = `inputs:
  - { name: user, dtype: float32, shape: [-1, 8] }
  - { name: context, dtype: float32, shape: [-1, 4] }
  - { name: item, dtype: float32, shape: [-1, 8] }
outputs:
  - { name: booking_prob, dtype: float32, shape: [-1, 1] }
batching:
  maxBatchSize: 1024
  maxDelayMs: 2
  preferredBatchSizes: [64, 256, 1024]
`;

async function buildBooking(candidates: Bookings): Promise<number> {
  const trainSet = generateBookings(60_000, BOOKING_TRAIN_DATA_SEED);
  const layers = trainMlp(
    { x: concatRows(trainSet), y: trainSet.booked, rows: trainSet.rows, inDim: USER_DIM + CONTEXT_DIM + ITEM_DIM, outDim: 1 },
    { hidden: [48], epochs: 8, batchSize: 256, learningRate: 0.003, weightDecay: 1e-3, seed: BOOKING_TRAIN_SEED },
  );
  const spec: MlpSpec = {
    inputs: [
      { name: 'user', dim: USER_DIM },
      { name: 'context', dim: CONTEXT_DIM },
      { name: 'item', dim: ITEM_DIM },
    ],
    layers,
    outputName: 'booking_prob',
    producer: 'inferq-examples',
  };
  const model = buildMlp(spec);
  const feeds = {
    user: { data: candidates.user, dim: USER_DIM },
    context: { data: candidates.context, dim: CONTEXT_DIM },
    item: { data: candidates.item, dim: ITEM_DIM },
  };
  const prob = await runOnnx(model, feeds, candidates.rows);
  const r = pearson(prob, candidates.truthProb);
  const meanTruth = candidates.truthProb.reduce((s, v) => s + v, 0) / candidates.rows;
  const meanPred = prob.reduce((s, v) => s + v, 0) / candidates.rows;
  console.log(
    `booking: Pearson(booking_prob, truth_prob) ${r.toFixed(4)} on ${candidates.rows} candidates ` +
      `(mean prob ${meanPred.toFixed(3)} vs truth ${meanTruth.toFixed(3)}; trained on ${trainSet.rows} sampled outcomes)`,
  );
  if (!(r > 0.8)) throw new Error(`booking: Pearson ${r} not above 0.8`);
  write('models/booking/1/model.onnx', model);
  write('models/booking/1/config.yaml', BOOKING_CONFIG);
  return r;
}

function writeDigitsParquet(d: Digits): void {
  const table = new Table({
    id: vectorFromArray(
      Array.from({ length: d.rows }, (_, r) => `digit-${String(r + 1).padStart(4, '0')}`),
      new Utf8(),
    ),
    label: makeVector(d.labels),
    split: vectorFromArray(d.split, new Utf8()),
    pixels: floatListColumn(d.pixels, DIGIT_PIXELS),
  });
  if (!(table.schema.fields[1]?.type instanceof Int32)) throw new Error('digits.parquet: label column is not int32');
  write('data/digits.parquet', toParquet(table));
}

function writeBookingsParquet(b: Bookings): void {
  const table = new Table({
    request_id: vectorFromArray(
      Array.from({ length: b.rows }, (_, r) => `req-${String(r + 1).padStart(5, '0')}`),
      new Utf8(),
    ),
    user: floatListColumn(b.user, USER_DIM),
    context: floatListColumn(b.context, CONTEXT_DIM),
    item: floatListColumn(b.item, ITEM_DIM),
    truth_prob: makeVector(b.truthProb),
  });
  write('data/bookings.parquet', toParquet(table));
}

/** Independent cross-check: pyarrow (if the build venv has it) reads both files back. */
function checkWithPyarrow(): void {
  const python = venvPython();
  const script =
    'import sys, pyarrow.parquet as p\n' +
    'for f in sys.argv[1:]:\n' +
    '    t = p.read_table(f)\n' +
    "    print(f'  pyarrow {f.split(\"/\")[-1]}: {t.num_rows} rows; ' + ', '.join(f'{x.name}: {x.type}' for x in t.schema))\n";
  const files = ['data/digits.parquet', 'data/bookings.parquet'].map((f) => join(EXAMPLES, f));
  try {
    if (!existsSync(python)) throw new Error(`no venv at ${python}`);
    execFileSync(python, ['-c', 'import pyarrow'], { stdio: 'ignore' });
  } catch {
    console.log('pyarrow cross-check skipped (pip install pyarrow into ~/.cache/inferq/build-venv to enable it)');
    return;
  }
  process.stdout.write(execFileSync(python, ['-c', script, ...files], { encoding: 'utf8' }));
}

async function main(): Promise<void> {
  const started = Date.now();
  const digits = loadDigits(locateDigitsCsv(), SPLIT_SEED);
  const accuracy = await buildDigitTags(digits);
  writeDigitsParquet(digits);
  const candidates = generateBookings(5_000, BOOKING_CANDIDATE_SEED);
  const r = await buildBooking(candidates);
  writeBookingsParquet(candidates);
  checkWithPyarrow();

  console.log(`\nwrote (under ${relative(process.cwd(), EXAMPLES) || '.'}/):`);
  for (const rel of written) console.log(`  ${rel.padEnd(32)} ${(statSync(join(EXAMPLES, rel)).size / 1024).toFixed(1).padStart(7)} KiB`);
  console.log(`digit-tags accuracy ${accuracy.toFixed(4)}, booking Pearson ${r.toFixed(4)}, ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

await main();
