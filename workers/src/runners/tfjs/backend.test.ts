import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, ModelLoadError } from '@inferq/shared';
import * as tfjs from '@tensorflow/tfjs';
import { captureLogger } from '../../../../test/helpers/models.js';
import { TFJS_NODE, TFJS_NODE_GPU, cudaVisibleDevices, importInstalled, loadBackend, tfjsBackend } from './backend.js';
import type { PackageImporter } from './backend.js';

const savedCuda = process.env['CUDA_VISIBLE_DEVICES'];
afterEach(() => {
  if (savedCuda === undefined) delete process.env['CUDA_VISIBLE_DEVICES'];
  else process.env['CUDA_VISIBLE_DEVICES'] = savedCuda;
});

const warnings = (lines: Record<string, unknown>[]) => lines.filter((l) => l['level'] === 40).map((l) => String(l['msg']));

/** The real importer, except that `present` resolves to a stand-in native package (the real TF.js plus what tfjs-node adds). */
function presenting(present: string, extra: Record<string, unknown> = {}): { importer: PackageImporter; asked: string[] } {
  const asked: string[] = [];
  const importer: PackageImporter = async (name) => {
    asked.push(name);
    if (name === present) return { ...tfjs, node: { loadSavedModel: () => Promise.reject(new Error('not in this test')) }, ...extra };
    return importInstalled(name);
  };
  return { importer, asked };
}

describe('TF.js backend choice', () => {
  it('tfjs-node is really absent here: the CPU gets WASM (SIMD) with exactly one warning that names the package and how to add it', async () => {
    expect(await importInstalled(TFJS_NODE)).toBeUndefined();
    const { logger, lines } = captureLogger();
    const before = process.listeners('uncaughtException').length + process.listeners('unhandledRejection').length;
    const backend = await loadBackend({ kind: 'cpu' }, logger);
    expect(backend.name).toBe('wasm');
    expect(backend.tf.getBackend()).toBe('wasm');
    expect(backend.device).toEqual({ kind: 'cpu' });
    expect(backend.node).toBeUndefined();
    const w = warnings(lines);
    expect(w).toHaveLength(1);
    expect(w[0]).toContain('@tensorflow/tfjs-node is not installed');
    expect(w[0]).toContain('WASM backend (SIMD, 1 thread)');
    expect(w[0]).toContain('npm install @tensorflow/tfjs-node@4.22.0');
    // Emscripten's process handlers are taken off again.
    expect(process.listeners('uncaughtException').length + process.listeners('unhandledRejection').length).toBe(before);
    const t = backend.tf.tensor([1, 2, 3]);
    expect(Array.from(await backend.tf.mul(t, 2).data())).toEqual([2, 4, 6]);
  });

  it('cuda:N without either native package: one warning naming both, and CUDA_VISIBLE_DEVICES left as it was', async () => {
    delete process.env['CUDA_VISIBLE_DEVICES'];
    const { logger, lines } = captureLogger();
    const backend = await loadBackend({ kind: 'cuda', id: 1 }, logger);
    expect(backend.name).toBe('wasm');
    expect(backend.device).toEqual({ kind: 'cpu' });
    const w = warnings(lines);
    expect(w).toHaveLength(1);
    expect(w[0]).toContain(`${TFJS_NODE_GPU} and ${TFJS_NODE} are not installed`);
    expect(w[0]).toContain(`npm install ${TFJS_NODE_GPU}@4.22.0`);
    expect(process.env['CUDA_VISIBLE_DEVICES']).toBeUndefined();
  });

  it('prefers tfjs-node on the CPU when installed, without a warning, and offers its SavedModel loader', async () => {
    const { importer, asked } = presenting(TFJS_NODE);
    const { logger, lines } = captureLogger();
    const backend = await loadBackend({ kind: 'cpu' }, logger, importer);
    expect(asked).toEqual([TFJS_NODE]);
    expect(backend.package).toBe(TFJS_NODE);
    expect(backend.node).toBeDefined();
    expect(warnings(lines)).toEqual([]);
  });

  it('asks for tfjs-node-gpu first for cuda:N, showing libtensorflow only that GPU', async () => {
    process.env['CUDA_VISIBLE_DEVICES'] = '4,5,6';
    const { importer, asked } = presenting(TFJS_NODE_GPU, { backend: () => ({ isUsingGpuDevice: true }) });
    const { logger, lines } = captureLogger();
    const backend = await loadBackend({ kind: 'cuda', id: 2 }, logger, importer);
    expect(asked).toEqual([TFJS_NODE_GPU]);
    expect(backend.package).toBe(TFJS_NODE_GPU);
    expect(backend.device).toEqual({ kind: 'cuda', id: 2 });
    expect(process.env['CUDA_VISIBLE_DEVICES']).toBe('6');
    expect(warnings(lines)).toEqual([]);
  });

  it('tfjs-node-gpu that finds no GPU runs on the CPU and says so once', async () => {
    delete process.env['CUDA_VISIBLE_DEVICES'];
    const { importer } = presenting(TFJS_NODE_GPU, { backend: () => ({ isUsingGpuDevice: false }) });
    const { logger, lines } = captureLogger();
    const backend = await loadBackend({ kind: 'cuda', id: 0 }, logger, importer);
    expect(backend.device).toEqual({ kind: 'cpu' });
    expect(warnings(lines)).toEqual([`TF.js: ${TFJS_NODE_GPU} sees no GPU for cuda:0 (CUDA_VISIBLE_DEVICES=0); falling back to CPU`]);
  });

  it('an installed native package that fails to load is an error, not a quiet fallback', async () => {
    const importer: PackageImporter = (name) => (name === TFJS_NODE ? Promise.reject(new Error('libtensorflow.so.2: cannot open shared object file')) : importInstalled(name));
    const err = await loadBackend({ kind: 'cpu' }, captureLogger().logger, importer).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as Error).message).toBe('TF.js: @tensorflow/tfjs-node is installed but failed to load: libtensorflow.so.2: cannot open shared object file');
  });

  it('maps cuda:N into CUDA_VISIBLE_DEVICES like a device index, and names a GPU the list lacks', () => {
    expect(cudaVisibleDevices(3, undefined)).toBe('3');
    expect(cudaVisibleDevices(1, ' 2, 7 ')).toBe('7');
    expect(() => cudaVisibleDevices(2, '0,1')).toThrow(ConfigError);
    expect(() => cudaVisibleDevices(2, '0,1')).toThrow('device cuda:2: CUDA_VISIBLE_DEVICES="0,1" lists only 2 GPU(s)');
  });

  it('one device per process: the process backend is shared, and another device is refused with a message saying why', async () => {
    const { logger, lines } = captureLogger();
    const a = await tfjsBackend({ kind: 'cpu' }, logger);
    const b = await tfjsBackend({ kind: 'cpu' }, logger);
    expect(b).toBe(a);
    expect(warnings(lines)).toHaveLength(1);
    await expect(tfjsBackend({ kind: 'cuda', id: 0 }, logger)).rejects.toThrow(
      'TF.js serves one device per process: this process already runs TF.js models for cpu, not cuda:0; run one worker per device (inferq worker --devices)',
    );
  });
});
