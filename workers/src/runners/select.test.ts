import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelLoadError } from '@inferq/shared';
import { buildMlp, forwardMlp } from '../../../examples/build/onnx-builder.js';
import { writeGraphMlp } from '../../../test/fixtures/tfjs/mlp.js';
import { captureLogger, smallMlp, tempDir } from '../../../test/helpers/models.js';
import { OnnxRunner } from './onnx/runner.js';
import { createRunner, modelFormatOf } from './select.js';
import { TfjsRunner } from './tfjs/runner.js';

/** A version folder holding `files` (name → contents). */
async function folder(files: Record<string, string | Uint8Array>): Promise<string> {
  const dir = await tempDir();
  await mkdir(dir, { recursive: true });
  for (const [name, body] of Object.entries(files)) await writeFile(join(dir, name), body);
  return dir;
}

describe('modelFormatOf', () => {
  it('tells the formats apart by the file the folder holds, and a model.json by its format field or topology', async () => {
    expect(await modelFormatOf(await folder({ 'model.onnx': 'x', 'config.yaml': '' }))).toBe('onnx');
    expect(await modelFormatOf(await folder({ 'saved_model.pb': 'x' }))).toBe('saved-model');
    expect(await modelFormatOf(await folder({ 'model.json': JSON.stringify({ format: 'graph-model', modelTopology: {} }) }))).toBe('tfjs-graph');
    expect(await modelFormatOf(await folder({ 'model.json': JSON.stringify({ format: 'layers-model', modelTopology: {} }) }))).toBe('tfjs-layers');
    // Older converters wrote no format field.
    expect(await modelFormatOf(await folder({ 'model.json': JSON.stringify({ modelTopology: { node: [] } }) }))).toBe('tfjs-graph');
    expect(await modelFormatOf(await folder({ 'model.json': JSON.stringify({ modelTopology: { class_name: 'Sequential', config: {} } }) }))).toBe('tfjs-layers');
  });

  it('names the folder and what it expected when it holds no model, several, or a model.json of an unknown kind', async () => {
    const empty = await folder({ 'config.yaml': '' });
    await expect(modelFormatOf(empty)).rejects.toBeInstanceOf(ModelLoadError);
    await expect(modelFormatOf(empty)).rejects.toThrow(`no model in ${empty}: expected model.onnx, model.json (TF.js) or saved_model.pb (TensorFlow SavedModel)`);
    const both = await folder({ 'model.onnx': 'x', 'model.json': '{}' });
    await expect(modelFormatOf(both)).rejects.toThrow(`${both} holds model.onnx and model.json: keep one model per version folder`);
    const odd = await folder({ 'model.json': JSON.stringify({ format: 'tfjs-magic' }) });
    await expect(modelFormatOf(odd)).rejects.toThrow(`${join(odd, 'model.json')} has format "tfjs-magic": expected a TF.js "graph-model" or "layers-model"`);
    const broken = await folder({ 'model.json': '{"format": ' });
    await expect(modelFormatOf(broken)).rejects.toThrow(`${join(broken, 'model.json')} is not readable JSON`);
    await expect(modelFormatOf(join(empty, 'missing'))).rejects.toThrow(`cannot list model folder ${join(empty, 'missing')}`);
  });
});

describe('createRunner', () => {
  const spec = smallMlp([4, 8, 1]);
  const x = Float32Array.from({ length: 12 }, (_, i) => Math.cos(i));
  const want = forwardMlp(spec, { features: x }, 3);

  it.each(['model.onnx', 'model.json'])('gives a version folder holding %s the runner for it, and both compute the same MLP', async (file) => {
    const dir = await tempDir();
    if (file === 'model.onnx') await writeFile(join(dir, file), buildMlp(spec));
    else await writeGraphMlp(spec, dir);
    const runner = await createRunner({ dir, format: await modelFormatOf(dir), name: 'm', version: '1', logger: captureLogger().logger });
    expect(runner).toBeInstanceOf(file === 'model.onnx' ? OnnxRunner : TfjsRunner);
    await runner.load();
    try {
      const got = (await runner.run({ features: { dtype: 'float32', shape: [3, 4], data: x } }))['score']!.data as Float32Array;
      for (let i = 0; i < 3; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThan(1e-6);
    } finally {
      await runner.dispose();
    }
  });

  it('an unreadable model.onnx is a ModelLoadError naming the file', async () => {
    const dir = await tempDir();
    await expect(createRunner({ dir, format: 'onnx', name: 'm', version: '1', logger: captureLogger().logger })).rejects.toThrow(`cannot read ${join(dir, 'model.onnx')}`);
  });
});
