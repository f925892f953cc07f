import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, DEFAULT_BATCHING, ModelLoadError, UnknownModelError } from '@inferq/shared';
import { forwardMlp } from '../../../examples/build/onnx-builder.js';
import { captureLogger, smallMlp, tempDir, writeModel } from '../../../test/helpers/models.js';
import { perCpuInstances } from '../runners/onnx/runner.js';
import { inThreadSessionFactory } from '../runners/onnx/session.js';
import type { OrtSessionFactory } from '../runners/onnx/session.js';
import { loadModel } from './loaded-model.js';
import { ModelRepository } from './repository.js';

describe('ModelRepository', () => {
  it('refuses model names and versions that are not one plain folder ("..", ".", hidden, separators, control characters)', async () => {
    // A model the exploit would reach: <repo>/../1/model.onnx, i.e. an integer folder beside the repository.
    const outer = await tempDir();
    await writeModel(outer, '.', '1', smallMlp());
    const root = join(outer, 'repo');
    await writeModel(root, 'm', '1', smallMlp());
    const repo = new ModelRepository(root);
    for (const name of ['..', '.', '.hidden', 'a/b', '../m', 'm\u202e', '']) {
      await expect(repo.resolve(name), name).rejects.toBeInstanceOf(UnknownModelError);
      await expect(repo.versions(name), name).rejects.toBeInstanceOf(UnknownModelError);
    }
    await expect(repo.resolve('..')).rejects.toThrow('model name ".." is not valid');
    await expect(repo.resolve('m\u202e')).rejects.toThrow('model name "m\\u202e" is not valid');
    for (const version of ['..', '../1', '1/', 'x']) await expect(repo.resolve('m', version), version).rejects.toBeInstanceOf(UnknownModelError);
    expect((await repo.resolve('m', '1')).version).toBe('1');
  });

  it('refuses traffic, shadow and versionPolicy in a version folder’s config.yaml, naming the file and where they belong', async () => {
    const root = await tempDir();
    await writeModel(root, 'm', '3', smallMlp());
    const repo = new ModelRepository(root);
    for (const yaml of ['traffic: { "3": 100 }\n', 'shadow: { version: "3", sample: 0.5 }\n', 'versionPolicy: all\n']) {
      await writeFile(join(root, 'm', '3', 'config.yaml'), yaml);
      const err = await repo.resolve('m', '3').catch((e: unknown) => e);
      expect(err, yaml).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toContain(`${join(root, 'm', '3', 'config.yaml')}: ${yaml.split(':')[0]} belongs in ${join(root, 'm', 'config.yaml')}`);
    }
  });

  it('serves a bare model.onnx: inputs and outputs read from the model, default batching', async () => {
    const root = await tempDir();
    await writeModel(root, 'bare', '1', smallMlp([4, 8, 1]));
    const repo = new ModelRepository(root);
    const mv = await repo.resolve('bare');
    expect(mv.version).toBe('1');
    expect(mv.inputs).toBeUndefined();
    expect(mv.batching.maxBatchSize).toBe(DEFAULT_BATCHING.maxBatchSize);
    const { logger } = captureLogger();
    const model = await loadModel(repo, 'bare', undefined, { logger });
    try {
      expect(model.inputs).toEqual([{ name: 'features', dtype: 'float32', shape: [-1, 4] }]);
      expect(model.outputs).toEqual([{ name: 'score', dtype: 'float32', shape: [-1, 1] }]);
    } finally {
      await model.close();
    }
  });

  it('picks the newest version numerically, and follows the model-level versionPolicy', async () => {
    const root = await tempDir();
    for (const v of ['2', '10', '9']) await writeModel(root, 'm', v, smallMlp());
    const repo = new ModelRepository(root);
    expect((await repo.resolve('m')).version).toBe('10');
    expect(await repo.versions('m')).toEqual(['10']);
    await expect(repo.resolve('m', '2')).rejects.toThrow('model "m" version "2" is present but not served (incomplete, or not chosen by its versionPolicy); served versions: 10');
    await writeFile(join(root, 'm', 'config.yaml'), 'versionPolicy: all\n');
    expect(await repo.versions('m')).toEqual(['2', '9', '10']);
    expect((await repo.resolve('m', '2')).version).toBe('2');
    await writeFile(join(root, 'm', 'config.yaml'), 'versionPolicy: { specific: [2, 9] }\n');
    expect((await repo.resolve('m')).version).toBe('9');
    await writeFile(join(root, 'm', 'config.yaml'), 'versionPolicy: { latest: 2 }\n');
    expect(await repo.versions('m')).toEqual(['9', '10']);
  });

  it('names unknown models and versions, listing what exists', async () => {
    const root = await tempDir();
    await writeModel(root, 'alpha', '1', smallMlp());
    await writeModel(root, 'beta', '3', smallMlp());
    const repo = new ModelRepository(root);
    await expect(repo.resolve('gamma')).rejects.toThrow(`unknown model "gamma" in repository ${root}; available: alpha, beta`);
    await expect(repo.resolve('gamma')).rejects.toBeInstanceOf(UnknownModelError);
    await expect(repo.resolve('beta', '4')).rejects.toThrow('model "beta" version "4" does not exist; served versions: 3');
    await expect(repo.resolve('../etc')).rejects.toBeInstanceOf(UnknownModelError);
  });

  it('fails to load a config that disagrees with the model, naming both', async () => {
    const root = await tempDir();
    const cfg = (shape: string, name = 'features') => `inputs:\n  - { name: ${name}, dtype: float32, shape: ${shape} }\n`;
    await writeModel(root, 'wide', '1', smallMlp([4, 8, 1]), cfg('[-1, 5]'));
    await writeModel(root, 'named', '1', smallMlp([4, 8, 1]), cfg('[-1, 4]', 'x'));
    await writeModel(root, 'good', '1', smallMlp([4, 8, 1]), `${cfg('[-1, 4]')}batching: { maxBatchSize: 64, preferredBatchSizes: [16, 64] }\n`);
    const repo = new ModelRepository(root);
    const { logger } = captureLogger();
    await expect(loadModel(repo, 'wide', undefined, { logger })).rejects.toThrow(/config.yaml declares input "features" as float32 \[-1,5\], the model has float32 \[-1,4\]/);
    await expect(loadModel(repo, 'named', undefined, { logger })).rejects.toThrow(/declares inputs "x" but the model has "features"/);
    await expect(loadModel(repo, 'wide', undefined, { logger })).rejects.toBeInstanceOf(ModelLoadError);
    const good = await loadModel(repo, 'good', undefined, { logger });
    expect(good.batching.maxBatchSize).toBe(64);
    expect(good.batching.preferredBatchSizes).toEqual([16, 64]);
    await good.close();
  });

  it('rejects invalid config.yaml with the file and field', async () => {
    const root = await tempDir();
    await writeModel(root, 'm', '1', smallMlp(), 'batching: { maxBatchSize: -3 }\n');
    await writeModel(root, 'n', '1', smallMlp(), 'batching: { maxBatchSize: 8, preferredBatchSizes: [16] }\n');
    await writeModel(root, 'y', '1', smallMlp(), 'inputs: [ {name: x\n');
    const repo = new ModelRepository(root);
    await expect(repo.resolve('m')).rejects.toThrow(/m\/1\/config.yaml: "batching.maxBatchSize"/);
    await expect(repo.resolve('m')).rejects.toBeInstanceOf(ConfigError);
    await expect(repo.resolve('n')).rejects.toThrow(/preferredBatchSizes: 16 is larger than maxBatchSize 8/);
    await expect(repo.resolve('y')).rejects.toThrow(/y\/1\/config.yaml: not valid YAML/);
  });

  it('gives a ModelLoadError for a model file that fails to load, and names why a version without model.onnx is not served', async () => {
    const root = await tempDir();
    await writeModel(root, 'corrupt', '1', new TextEncoder().encode('this is not an onnx model'));
    await mkdir(join(root, 'empty', '1'), { recursive: true });
    const repo = new ModelRepository(root);
    const { logger } = captureLogger();
    await expect(loadModel(repo, 'corrupt', undefined, { logger })).rejects.toThrow(/model corrupt:1 \(.*model.onnx\) failed to load/);
    await expect(repo.resolve('empty')).rejects.toThrow(/model "empty" has no complete version .*; the newest, version "1": no model in .*: expected model\.onnx, model\.json \(TF\.js\) or saved_model\.pb/);
  });

  it('runs a loaded model through its batcher with the same numbers as a reference forward pass', async () => {
    const root = await tempDir();
    const spec = smallMlp([6, 16, 3], 7);
    await writeModel(root, 'm', '1', spec);
    const { logger } = captureLogger();
    const model = await loadModel(new ModelRepository(root), 'm', undefined, { logger, batching: { maxBatchSize: 4, maxDelayMs: 0 } });
    try {
      const rows = 10;
      const x = Float32Array.from({ length: rows * 6 }, (_, i) => Math.sin(i));
      const out = await model.batcher.submit({ id: 'j', rows, tensors: { features: { dtype: 'float32', shape: [rows, 6], data: x } } });
      const want = forwardMlp(spec, { features: x }, rows);
      const got = out['score']!.data as Float32Array;
      expect(got.length).toBe(want.length);
      for (let i = 0; i < want.length; i++) expect(got[i]).toBeCloseTo(want[i]!, 5);
      expect(model.batcher.stats.batches).toBe(3); // 4 + 4 + 2 rows
    } finally {
      await model.close();
    }
  });

  it("instances 'per-cpu' loads the instances perCpuInstances picks for the model's size; an explicit intraOpThreads still wins", async () => {
    const root = await tempDir();
    await writeModel(root, 'm', '1', smallMlp([4, 8, 1]));
    const bytes = (await readFile(join(root, 'm', '1', 'model.onnx'))).byteLength;
    const { logger } = captureLogger();
    const threads: (number | undefined)[][] = [];
    for (const extra of [{}, { intraOpThreads: 3 }]) {
      const seen: (number | undefined)[] = [];
      const recording: OrtSessionFactory = (model, options) => {
        seen.push(options.intraOpNumThreads);
        return inThreadSessionFactory(model, options);
      };
      const model = await loadModel(new ModelRepository(root), 'm', undefined, { logger, instances: 'per-cpu', createSession: recording, ...extra });
      try {
        expect(model.runner.instanceCount).toBe(perCpuInstances(bytes).instances);
      } finally {
        await model.close();
      }
      threads.push(seen);
    }
    const { instances, intraOpThreads } = perCpuInstances(bytes);
    expect(threads).toEqual([Array<number>(instances).fill(intraOpThreads), Array<number>(instances).fill(3)]);
  });
});
