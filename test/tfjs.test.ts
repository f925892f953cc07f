/**
 * TF.js models made by Keras and converted by tensorflowjs_converter (test/infra/tf-python.ts):
 * inferq's outputs equal Keras's own predictions, through the runner, through Redis and through
 * `inferq predict`. The model has two inputs and two outputs, so names and order are checked too.
 */
import { cp } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelLoadError } from '@inferq/shared';
import type { Tensor } from '@inferq/shared';
import { Producer } from '@inferq/producer';
import { ModelPool, ModelRepository, RedisWorker, silentLogger } from '@inferq/workers';
import { createRunner, modelFormatOf } from '../workers/src/runners/select.js';
import { runCli } from './helpers/cli.js';
import { captureLogger, tempDir } from './helpers/models.js';
import { dropQueue, queueName } from './helpers/redis.js';
import { ensurePython, runPython } from './infra/python.js';
import { redisServer } from './infra/servers.js';
import { kerasFixtures } from './infra/tf-python.js';
import type { KerasFixtures } from './infra/tf-python.js';

const TOLERANCE = 1e-5;
let fx: KerasFixtures;
let repo: string;
const queues: string[] = [];

beforeAll(async () => {
  // First run on a fresh machine: a ~3 GB venv, then the Keras model and its conversions.
  [fx] = await Promise.all([kerasFixtures(), ensurePython()]);
  repo = join(await tempDir(), 'models');
  await cp(fx.graph, join(repo, 'keras-graph', '1'), { recursive: true });
  await cp(fx.layers, join(repo, 'keras-layers', '1'), { recursive: true });
  await cp(fx.savedModel, join(repo, 'keras-saved', '1'), { recursive: true });
}, 30 * 60_000);

afterAll(async () => {
  if (queues.length === 0) return;
  const url = await redisServer();
  for (const q of queues) await dropQueue(url, q);
});

/** Keras's inputs as inferq tensors. */
function kerasInputs(): Record<string, Tensor> {
  return Object.fromEntries(Object.entries(fx.expected.inputs).map(([name, t]) => [name, { dtype: 'float32', shape: t.shape, data: Float32Array.from(t.data) }]));
}

/** Largest difference from Keras's prediction of `name`, after checking the shape. */
function maxDiff(name: string, shape: readonly number[], got: ArrayLike<number>): number {
  const want = fx.expected.outputs[name]!;
  expect(shape, `shape of "${name}"`).toEqual(want.shape);
  expect(got.length).toBe(want.data.length);
  let m = 0;
  for (let i = 0; i < want.data.length; i++) m = Math.max(m, Math.abs(got[i]! - want.data[i]!));
  return m;
}

describe('Keras models converted to TF.js', () => {
  it.each([
    ['keras-graph', 'tfjs-graph'],
    ['keras-layers', 'tfjs-layers'],
  ] as const)('%s: the runner chosen for the folder gives Keras\'s predictions to 1e-5, outputs by name', async (name, format) => {
    const dir = join(repo, name, '1');
    expect(await modelFormatOf(dir)).toBe(format);
    const runner = await createRunner({ dir, format, name, version: '1', logger: captureLogger().logger });
    await runner.load();
    try {
      expect(runner.inputs.map((s) => [s.name, s.shape])).toEqual(expect.arrayContaining([['features', [-1, 8]], ['context', [-1, 3]]]));
      expect(runner.outputs.map((s) => s.name).sort()).toEqual(['embedding', 'score']);
      const out = await runner.run(kerasInputs());
      for (const o of ['score', 'embedding']) expect(maxDiff(o, out[o]!.shape, out[o]!.data as Float32Array), o).toBeLessThan(TOLERANCE);
    } finally {
      await runner.dispose();
    }
  });

  it('the Keras SavedModel is recognised, and without tfjs-node refused with how to convert it', async () => {
    const dir = join(repo, 'keras-saved', '1');
    expect(await modelFormatOf(dir)).toBe('saved-model');
    const runner = await createRunner({ dir, format: 'saved-model', name: 'keras-saved', version: '1', logger: captureLogger().logger });
    const err = await runner.load().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as Error).message).toContain('needs @tensorflow/tfjs-node');
    expect((err as Error).message).toContain(`tensorflowjs_converter --input_format=tf_saved_model --output_format=tfjs_graph_model ${dir}`);
    expect((err as Error).message).toContain('tf2onnx');
  });
});

// These two go through the model repository: they need its wiring to select.ts (model.json in a version folder).
describe('Keras models served by inferq', () => {
  it.each(['keras-graph', 'keras-layers'])('%s through Redis: predict() replies equal Keras to 1e-5', async (model) => {
    const url = await redisServer();
    const queue = queueName('tfjs');
    queues.push(queue);
    const pool = new ModelPool(new ModelRepository(repo), { logger: silentLogger(), batching: { maxDelayMs: 1 } });
    const worker = new RedisWorker({ redis: url, queue, models: pool, logger: silentLogger(), concurrency: 16 });
    await worker.start();
    const producer = new Producer({ redis: url, queue });
    try {
      const { features, context } = fx.expected.inputs;
      const rows = Array.from({ length: fx.expected.rows }, (_, r) => ({
        features: features!.data.slice(r * 8, r * 8 + 8),
        context: context!.data.slice(r * 3, r * 3 + 3),
      }));
      const reply = await producer.predict(model, rows, { timeoutMs: 30_000 });
      expect(reply.ok).toBe(true);
      for (const o of ['score', 'embedding']) expect(maxDiff(o, reply.outputs[o]!.shape, reply.outputs[o]!.data as ArrayLike<number>), o).toBeLessThan(TOLERANCE);
    } finally {
      await producer.close();
      await worker.close(10_000);
      await pool.close();
    }
  });

  it.each(['keras-graph', 'keras-layers'])('%s through inferq predict: the output Parquet equals Keras to 1e-5', async (model) => {
    const dir = await tempDir();
    const input = join(dir, 'in.parquet');
    const output = join(dir, 'out.parquet');
    await runPython(
      `import sys, json, numpy as np, pyarrow as pa, pyarrow.parquet as pq
e = json.load(open(sys.argv[2]))["inputs"]
col = lambda k, w: pa.FixedSizeListArray.from_arrays(pa.array(np.array(e[k]["data"], np.float32)), w)
pq.write_table(pa.table({"id": [f"r{i}" for i in range(len(e["features"]["data"]) // 8)], "features": col("features", 8), "context": col("context", 3)}), sys.argv[1])`,
      [input, join(fx.graph, '..', 'expected.json')],
    );
    const res = await runCli(['predict', '--model-repo', repo, '--model', model, '--input', input, '--output', output, '--no-progress']);
    expect(res.code, res.stderr).toBe(0);
    const got = JSON.parse(
      await runPython(
        `import sys, json, numpy as np, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
flat = lambda c: np.stack(t.column(c).to_numpy(zero_copy_only=False)).astype(np.float32).reshape(t.num_rows, -1)
print(json.dumps({"columns": t.column_names, "score": flat("score").reshape(-1).tolist(), "embedding": flat("embedding").reshape(-1).tolist()}))`,
        [output],
      ),
    ) as { columns: string[]; score: number[]; embedding: number[] };
    expect(got.columns).toEqual(expect.arrayContaining(['id', 'score', 'embedding']));
    expect(maxDiff('score', fx.expected.outputs['score']!.shape, got.score)).toBeLessThan(TOLERANCE);
    expect(maxDiff('embedding', fx.expected.outputs['embedding']!.shape, got.embedding)).toBeLessThan(TOLERANCE);
  });
});
