import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { InferenceError, InvalidInputError, ModelLoadError } from '@inferq/shared';
import { forwardMlp } from '../../../../examples/build/onnx-builder.js';
import { writeGraphMlp, writeLayersMlp } from '../../../../test/fixtures/tfjs/mlp.js';
import { captureLogger, smallMlp, tempDir } from '../../../../test/helpers/models.js';
import { loadBackend } from './backend.js';
import type { TfBackend } from './backend.js';
import { TfjsRunner } from './runner.js';
import type { TfjsRunnerOptions } from './runner.js';

const spec = smallMlp([4, 8, 1]);
let backend: TfBackend;
let graphDir: string;
let layersDir: string;

beforeAll(async () => {
  backend = await loadBackend({ kind: 'cpu' }, captureLogger().logger);
  const root = await tempDir();
  graphDir = join(root, 'graph');
  layersDir = join(root, 'layers');
  await writeGraphMlp(spec, graphDir);
  await writeLayersMlp(backend.tf, spec, layersDir);
});

function runner(format: 'tfjs-graph' | 'tfjs-layers', extra: Partial<TfjsRunnerOptions> = {}): TfjsRunner {
  return new TfjsRunner({
    dir: format === 'tfjs-graph' ? graphDir : layersDir,
    format,
    name: 'm',
    version: '3',
    logger: captureLogger().logger,
    backend: () => Promise.resolve(backend),
    ...extra,
  });
}

const rowsOf = (n: number) => Float32Array.from({ length: n * 4 }, (_, i) => Math.sin(i * 0.7) * 2);

describe.each(['tfjs-graph', 'tfjs-layers'] as const)('TfjsRunner, %s', (format) => {
  it('reads inputs and outputs from the model and computes what the MLP computes', async () => {
    const r = runner(format);
    await r.load();
    expect(r.inputs).toEqual([{ name: 'features', dtype: 'float32', shape: [-1, 4] }]);
    expect(r.outputs).toEqual([{ name: 'score', dtype: 'float32', shape: [-1, 1] }]);
    expect(r.device).toEqual({ kind: 'cpu' });
    for (const rows of [1, 7, 64]) {
      const x = rowsOf(rows);
      const out = await r.run({ features: { dtype: 'float32', shape: [rows, 4], data: x } });
      expect(out['score']!.shape).toEqual([rows, 1]);
      const want = forwardMlp(spec, { features: x }, rows);
      const got = out['score']!.data as Float32Array;
      expect(got).toBeInstanceOf(Float32Array);
      for (let i = 0; i < rows; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThan(1e-6);
    }
    await r.dispose();
  });

  it('leaks no tensor: 10,000 batches leave tf.memory() as they found it', async () => {
    const r = runner(format);
    await r.load();
    await r.warmup([1, 16]);
    const x = rowsOf(16);
    const before = backend.tf.memory();
    for (let i = 0; i < 10_000; i++) await r.run({ features: { dtype: 'float32', shape: [16, 4], data: x } });
    // Refused batches leave nothing behind either.
    for (let i = 0; i < 100; i++) await expect(r.run({ features: { dtype: 'float32', shape: [16, 3], data: x.subarray(0, 48) } })).rejects.toThrow();
    const after = backend.tf.memory();
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.numBytes).toBe(before.numBytes);
    await r.dispose();
    // dispose() releases the weights.
    expect(backend.tf.memory().numTensors).toBeLessThan(before.numTensors);
  }, 120_000);

  it('refuses a batch of the wrong shape or dtype with a message naming the value', async () => {
    const r = runner(format);
    await r.load();
    const bad = r.run({ features: { dtype: 'float32', shape: [10, 3], data: new Float32Array(30) } });
    await expect(bad).rejects.toBeInstanceOf(InvalidInputError);
    await expect(bad).rejects.toThrow('input "features": expected float32 [n,4], got float32 [10,3]');
    await expect(r.run({ features: { dtype: 'float64', shape: [2, 4], data: new Float64Array(8) } })).rejects.toThrow(
      'input "features": expected float32 [n,4], got float64 [2,4]',
    );
    await expect(r.run({ other: { dtype: 'float32', shape: [1, 4], data: new Float32Array(4) } })).rejects.toThrow('missing input "features"');
    await r.dispose();
  });

  it('checks config.yaml against the signature like ONNX: a disagreeing shape or name is a ModelLoadError naming both', async () => {
    const shape = runner(format, { inputs: [{ name: 'features', dtype: 'float32', shape: [-1, 5] }] });
    const err = await shape.load().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as Error).message).toMatch(/model m:3 \(.*\): config.yaml declares input "features" as float32 \[-1,5\], the model has float32 \[-1,4\]$/);
    const dtype = runner(format, { outputs: [{ name: 'score', dtype: 'int32', shape: [-1, 1] }] });
    await expect(dtype.load()).rejects.toThrow('config.yaml declares output "score" as int32 [-1,1], the model has float32 [-1,1]');
    const name = runner(format, { inputs: [{ name: 'x', dtype: 'float32', shape: [-1, 4] }] });
    await expect(name.load()).rejects.toThrow('config.yaml declares inputs "x" but the model has "features"');
    // A declared shape may pin a dimension the model leaves dynamic.
    const pinned = runner(format, { inputs: [{ name: 'features', dtype: 'float32', shape: [8, 4] }] });
    await pinned.load();
    expect(pinned.inputs).toEqual([{ name: 'features', dtype: 'float32', shape: [8, 4] }]);
    await pinned.dispose();
  });
});

describe('TfjsRunner, loading', () => {
  it('a SavedModel without tfjs-node fails with how to convert it', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'saved_model.pb'), new Uint8Array([8, 1]));
    const r = new TfjsRunner({ dir, format: 'saved-model', name: 'sm', version: '1', logger: captureLogger().logger, backend: () => Promise.resolve(backend) });
    const err = await r.load().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    const message = (err as Error).message;
    expect(message).toContain(`model sm:1 (${dir}): a TensorFlow SavedModel (${join(dir, 'saved_model.pb')}) needs @tensorflow/tfjs-node`);
    expect(message).toContain(`tensorflowjs_converter --input_format=tf_saved_model --output_format=tfjs_graph_model ${dir} <new version folder>`);
    expect(message).toContain(`python -m tf2onnx.convert --saved-model ${dir} --output <new version folder>/model.onnx`);
  });

  it('a weight file named outside the model folder is refused', async () => {
    const dir = await tempDir();
    await writeGraphMlp(spec, dir);
    const json = JSON.parse(await readFile(join(dir, 'model.json'), 'utf8')) as { weightsManifest: { paths: string[] }[] };
    json.weightsManifest[0]!.paths = ['../weights.bin'];
    await writeFile(join(dir, 'model.json'), JSON.stringify(json));
    const r = new TfjsRunner({ dir, format: 'tfjs-graph', name: 'm', version: '1', logger: captureLogger().logger, backend: () => Promise.resolve(backend) });
    await expect(r.load()).rejects.toThrow(`${join(dir, 'model.json')}: weight file "../weights.bin" is not a file name in the model folder`);
  });

  it('a graph model without a signature is refused with how to get one', async () => {
    const dir = await tempDir();
    await writeGraphMlp(spec, dir);
    const json = JSON.parse(await readFile(join(dir, 'model.json'), 'utf8')) as Record<string, unknown>;
    delete json['signature'];
    await writeFile(join(dir, 'model.json'), JSON.stringify(json));
    const r = new TfjsRunner({ dir, format: 'tfjs-graph', name: 'm', version: '1', logger: captureLogger().logger, backend: () => Promise.resolve(backend) });
    const before = backend.tf.memory().numTensors;
    await expect(r.load()).rejects.toThrow('model.json has no signature naming its inputs and outputs');
    expect(backend.tf.memory().numTensors).toBe(before); // the weights it read are released
  });

  it('a corrupt model.json is a ModelLoadError naming the model', async () => {
    const dir = await tempDir();
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'model.json'), '{"format": "graph-model", "modelTopology": ');
    const r = new TfjsRunner({ dir, format: 'tfjs-graph', name: 'm', version: '1', logger: captureLogger().logger, backend: () => Promise.resolve(backend) });
    const err = await r.load().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as Error).message).toMatch(/^model m:1 \(.*\) failed to load: /);
  });

  it('run() before load() is an InferenceError', async () => {
    await expect(runner('tfjs-graph').run({})).rejects.toBeInstanceOf(InferenceError);
  });
});
