import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelLoadError, UnknownModelError } from '@inferq/shared';
import type { TensorMap, TensorSpec } from '@inferq/shared';
import { tempDir } from '../../../test/helpers/models.js';
import { silentLogger } from '../logging.js';
import { noMetrics } from '../ops/hooks.js';
import type { WorkerMetrics } from '../ops/hooks.js';
import type { Runner } from '../runners/runner.js';
import type { CreateRunnerOptions } from '../runners/select.js';
import type { LoadedModel } from './loaded-model.js';
import { ModelPool } from './model-pool.js';
import { ModelRepository } from './repository.js';

const SPEC: TensorSpec[] = [{ name: 'x', dtype: 'float32', shape: [-1, 1] }];
const OUT: TensorSpec[] = [{ name: 'y', dtype: 'float32', shape: [-1, 1] }];

/** In-memory runners: each answers its version number per row; a gate holds batches; disposals are recorded. */
class FakeRunners {
  readonly disposed: string[] = [];
  readonly broken = new Set<string>();
  gate: Promise<void> | undefined;

  create = (o: CreateRunnerOptions): Promise<Runner> => {
    const id = `${o.name}@${o.version}`;
    const broken = this.broken.has(id);
    const gate = (): Promise<void> | undefined => this.gate;
    const disposed = this.disposed;
    return Promise.resolve({
      inputs: SPEC,
      outputs: OUT,
      device: { kind: 'cpu' as const },
      load: () => (broken ? Promise.reject(new ModelLoadError(`model ${id} is broken`)) : Promise.resolve()),
      warmup: () => Promise.resolve(),
      async run(inputs: TensorMap): Promise<TensorMap> {
        await gate();
        const rows = inputs['x']!.shape[0]!;
        return { y: { dtype: 'float32', shape: [rows, 1], data: new Float32Array(rows).fill(Number(o.version)) } };
      },
      dispose: () => {
        disposed.push(id);
        return Promise.resolve();
      },
    });
  };
}

function job(model: LoadedModel, id = 'j'): Promise<number> {
  return model.batcher.submit({ id, rows: 1, tensors: { x: { dtype: 'float32', shape: [1, 1], data: new Float32Array([1]) } } }).then((o) => o['y']!.data[0] as number);
}

async function addVersion(root: string, name: string, version: string, bytes = 'onnx'): Promise<void> {
  await mkdir(join(root, name, version), { recursive: true });
  await writeFile(join(root, name, version, 'model.onnx'), bytes);
}

function recordingMetrics(): { metrics: WorkerMetrics; reloads: string[]; unloads: string[] } {
  const reloads: string[] = [];
  const unloads: string[] = [];
  const metrics: WorkerMetrics = {
    ...noMetrics,
    modelReload: (m, outcome) => void reloads.push(`${m}:${outcome}`),
    modelUnloaded: (m, v) => void unloads.push(`${m}@${v}`),
  };
  return { metrics, reloads, unloads };
}

async function setup(extra: { maxLoadedModels?: number } = {}) {
  const root = await tempDir();
  const runners = new FakeRunners();
  const rec = recordingMetrics();
  const pool = new ModelPool(new ModelRepository(root), { logger: silentLogger(), createRunner: runners.create, batching: { maxDelayMs: 0 }, metrics: rec.metrics, drainTimeoutMs: 5000, ...extra });
  return { root, runners, pool, ...rec };
}

const code = (p: Promise<unknown>): Promise<unknown> => p.then(() => 'resolved', (err: unknown) => (err instanceof UnknownModelError ? err.code : err));

describe('ModelPool hot reload', () => {
  it('loads a new version beside the serving one; a batch already running finishes on the old, which is disposed after it', async () => {
    const { root, runners, pool, reloads, unloads } = await setup();
    try {
      await addVersion(root, 'm', '1');
      const v1 = await pool.get('m');
      let open!: () => void;
      runners.gate = new Promise((r) => (open = r));
      const running = job(v1);
      await addVersion(root, 'm', '2');
      await pool.refresh(); // first sight: not taken yet (two equal scans)
      expect((await pool.get('m')).version).toBe('1');
      await pool.refresh();
      expect((await pool.get('m')).version).toBe('2');
      expect(await code(pool.get('m', '1'))).toBe('UNKNOWN_VERSION');
      expect(runners.disposed).toEqual([]); // the old one still runs a batch
      open();
      expect(await running).toBe(1);
      await pool.refresh(); // refreshes run one at a time: the retirement started before is under way
      await expect.poll(() => runners.disposed).toEqual(['m@1']);
      expect(unloads).toEqual(['m@1']);
      expect(reloads).toEqual(['m:loaded', 'm:retired']);
      expect(await job(await pool.get('m'))).toBe(2);
    } finally {
      await pool.close();
    }
  });

  it('never takes a half-copied version: no model file, a file still growing, or a missing marker', async () => {
    const { root, pool } = await setup();
    try {
      await addVersion(root, 'm', '1');
      await pool.get('m');
      await mkdir(join(root, 'm', '2'));
      await pool.refresh();
      await pool.refresh();
      expect(pool.served('m')).toEqual(['1']); // a folder without a model file
      await writeFile(join(root, 'm', '2', 'model.onnx'), 'on');
      await pool.refresh();
      await writeFile(join(root, 'm', '2', 'model.onnx'), 'onnx-more-bytes');
      await pool.refresh();
      expect(pool.served('m')).toEqual(['1']); // it changed between the two scans
      await pool.refresh();
      expect(pool.served('m')).toEqual(['2']);

      // Markers: once a version has one, versions without one are ignored however stable.
      await writeFile(join(root, 'm', '2', '_READY'), '');
      await addVersion(root, 'm', '3');
      await pool.refresh();
      await pool.refresh();
      await pool.refresh();
      expect(pool.served('m')).toEqual(['2']);
      await writeFile(join(root, 'm', '3', '_SUCCESS'), '');
      await pool.refresh(); // a marker counts at once
      expect(pool.served('m')).toEqual(['3']);

      // A TF.js model.json whose weights file is not there yet.
      await mkdir(join(root, 'm', '4'));
      await writeFile(join(root, 'm', '4', 'model.json'), JSON.stringify({ format: 'graph-model', modelTopology: { node: [] }, weightsManifest: [{ paths: ['group1-shard1of1.bin'] }] }));
      await writeFile(join(root, 'm', '4', '_READY'), '');
      await pool.refresh();
      expect(pool.served('m')).toEqual(['3']);
    } finally {
      await pool.close();
    }
  });

  it('a broken new version leaves the old one serving, is metered, and is not retried until its folder changes', async () => {
    const { root, runners, pool, reloads } = await setup();
    try {
      await addVersion(root, 'm', '1');
      await pool.get('m');
      runners.broken.add('m@2');
      await addVersion(root, 'm', '2');
      await pool.refresh();
      await pool.refresh();
      expect(pool.served('m')).toEqual(['1']);
      expect(reloads).toEqual(['m:failed']);
      await pool.refresh();
      expect(reloads).toEqual(['m:failed']);
      expect(await job(await pool.get('m'))).toBe(1);
      runners.broken.delete('m@2');
      await writeFile(join(root, 'm', '2', 'model.onnx'), 'fixed onnx');
      await pool.refresh();
      await pool.refresh();
      expect(pool.served('m')).toEqual(['2']);
      expect(reloads).toEqual(['m:failed', 'm:loaded', 'm:retired']);
    } finally {
      await pool.close();
    }
  });

  it('rollback: removing the new folder, or pinning with the policy, brings the previous version back', async () => {
    const { root, pool } = await setup();
    try {
      await addVersion(root, 'm', '1');
      await pool.get('m');
      await mkdir(join(root, 'm', '.2.tmp'));
      await writeFile(join(root, 'm', '.2.tmp', 'model.onnx'), 'onnx');
      await rename(join(root, 'm', '.2.tmp'), join(root, 'm', '2'));
      await pool.refresh();
      await pool.refresh();
      expect((await pool.get('m')).version).toBe('2');
      await rm(join(root, 'm', '2'), { recursive: true });
      await pool.refresh();
      expect((await pool.get('m')).version).toBe('1');
      expect(await code(pool.get('m', '2'))).toBe('UNKNOWN_VERSION');

      await addVersion(root, 'm', '3');
      await pool.refresh();
      await pool.refresh();
      expect(await job(await pool.get('m'))).toBe(3);
      await writeFile(join(root, 'm', 'config.yaml'), 'versionPolicy: { specific: [1] }\n');
      await pool.refresh();
      expect(pool.served('m')).toEqual(['1']);
      expect(await job(await pool.get('m'))).toBe(1);
      await writeFile(join(root, 'm', 'config.yaml'), 'versionPolicy: all\n');
      await pool.refresh();
      expect(pool.served('m')).toEqual(['1', '3']);
      expect(await job(await pool.get('m', '3'))).toBe(3);
    } finally {
      await pool.close();
    }
  });
});

describe('ModelPool --max-loaded-models', () => {
  it('unloads the least recently used idle model, never one with a batch in flight', async () => {
    const { root, runners, pool, unloads } = await setup({ maxLoadedModels: 1 });
    try {
      for (const m of ['a', 'b', 'c']) await addVersion(root, m, '1');
      const a = await pool.get('a');
      let open!: () => void;
      runners.gate = new Promise((r) => (open = r));
      const running = job(a);
      await pool.get('b');
      await pool.refresh();
      expect(runners.disposed).toEqual([]); // a is busy, b was just loaded
      open();
      expect(await running).toBe(1);
      await pool.refresh();
      await expect.poll(() => runners.disposed).toEqual(['a@1']);
      await pool.get('c');
      await expect.poll(() => runners.disposed).toEqual(['a@1', 'b@1']);
      expect(unloads).toEqual(['a@1', 'b@1']);
      expect((await pool.models()).map((m) => m.name)).toEqual(['c']);
      expect(await job(await pool.get('a'))).toBe(1); // unloaded is not unserved: it loads again
    } finally {
      await pool.close();
    }
  });
});
