/**
 * Which TensorFlow.js backend runs a process's TF.js models, in this order:
 *
 *   cuda:N ─► @tensorflow/tfjs-node-gpu ─┐ (libtensorflow, native, the GPU)
 *   cpu    ─► @tensorflow/tfjs-node ─────┤ (libtensorflow, native, CPU)
 *   neither installed ─► @tensorflow/tfjs + @tensorflow/tfjs-backend-wasm (SIMD where the
 *                        runtime has it), with one warning naming what was missing
 *
 * The native packages are optional peers: their install downloads libtensorflow, so a host
 * adds them itself (docs/tensorflow.md). TF.js keeps one engine per process, so the first
 * TF.js model fixes the backend and the device; a later model asking for another device is
 * refused (one worker process per device, as `inferq worker --devices` runs them).
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ConfigError, ModelLoadError } from '@inferq/shared';
import type * as tfjs from '@tensorflow/tfjs';
import type { Logger } from '../../logging.js';
import { formatDevice } from '../runner.js';
import type { Device } from '../runner.js';

/** The TF.js namespace (`@tensorflow/tfjs`, or the native package, which re-exports it). */
export type TfModule = typeof tfjs;

/** The part of `@tensorflow/tfjs-node`'s `node` namespace the SavedModel loader uses. */
export interface TfNodeApi {
  loadSavedModel(path: string, tags?: string[], signature?: string): Promise<SavedModelHandle>;
}

/** tfjs-node's TFSavedModel, as far as the runner uses it. */
export interface SavedModelHandle {
  readonly inputs: readonly tfjs.ModelTensorInfo[];
  readonly outputs: readonly tfjs.ModelTensorInfo[];
  predict(inputs: tfjs.NamedTensorMap): tfjs.Tensor | tfjs.Tensor[] | tfjs.NamedTensorMap;
  dispose(): void;
}

export const TFJS_NODE = '@tensorflow/tfjs-node';
export const TFJS_NODE_GPU = '@tensorflow/tfjs-node-gpu';
/** The version the docs and messages tell hosts to add (the one the WASM fallback is built against). */
export const TFJS_VERSION = '4.22.0';

export interface TfBackend {
  readonly tf: TfModule;
  /** TF.js's backend name: `tensorflow` (native) or `wasm`. */
  readonly name: string;
  /** The package that provides it. */
  readonly package: string;
  /** Where models actually run, after any fallback. */
  readonly device: Device;
  /** SavedModel support: only with a native package. */
  readonly node?: TfNodeApi;
}

/** Imports a package by name; resolves undefined when it is not installed (any other failure rejects). */
export type PackageImporter = (name: string) => Promise<unknown>;

/** Literal specifiers, so tools that list a package's imports see these optional ones. */
const IMPORTS: Readonly<Record<string, () => Promise<unknown>>> = {
  [TFJS_NODE_GPU]: () => import('@tensorflow/tfjs-node-gpu'),
  [TFJS_NODE]: () => import('@tensorflow/tfjs-node'),
  '@tensorflow/tfjs': () => import('@tensorflow/tfjs'),
  '@tensorflow/tfjs-backend-wasm': () => import('@tensorflow/tfjs-backend-wasm'),
};

export const importInstalled: PackageImporter = async (name) => {
  const load = IMPORTS[name];
  if (load === undefined) throw new ConfigError(`TF.js: no importer for package "${name}"`);
  // Asked of the resolver first: a bundler's or test runner's loader words a missing package its own way.
  if (!isResolvable(name)) return undefined;
  try {
    return await load();
  } catch (err) {
    if (isNotInstalled(err, name)) return undefined;
    throw err;
  }
};

function isResolvable(name: string): boolean {
  try {
    createRequire(import.meta.url).resolve(`${name}/package.json`);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ERR_PACKAGE_PATH_NOT_EXPORTED') return true; // present, with an exports map that hides package.json
    if (code === 'MODULE_NOT_FOUND') return false;
    throw err;
  }
}

/** The package itself is absent (not a file inside it, such as a native binding that failed to build). */
function isNotInstalled(err: unknown, name: string): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && err instanceof Error && err.message.includes(`'${name}'`);
}

/**
 * Loads the best backend for `requested` (not memoised: {@link tfjsBackend} is the process-wide
 * one). `importer` is swapped in tests to present a native package.
 */
export async function loadBackend(requested: Device, logger: Logger, importer: PackageImporter = importInstalled): Promise<TfBackend> {
  const missing: string[] = [];
  if (requested.kind === 'cuda') {
    const visible = cudaVisibleDevices(requested.id, process.env['CUDA_VISIBLE_DEVICES']);
    const previous = process.env['CUDA_VISIBLE_DEVICES'];
    // libtensorflow runs on the first GPU it sees: make that the requested one before it loads.
    process.env['CUDA_VISIBLE_DEVICES'] = visible;
    const restore = (): void => {
      if (previous === undefined) delete process.env['CUDA_VISIBLE_DEVICES'];
      else process.env['CUDA_VISIBLE_DEVICES'] = previous;
    };
    const gpu = await importNative(importer, TFJS_NODE_GPU).catch((err: unknown) => {
      restore();
      throw err;
    });
    if (gpu !== undefined) {
      if (usesGpu(gpu.tf)) return { ...gpu, device: requested };
      logger.warn({ requested: formatDevice(requested), device: 'cpu', backend: gpu.name }, `TF.js: ${TFJS_NODE_GPU} sees no GPU for ${formatDevice(requested)} (CUDA_VISIBLE_DEVICES=${visible}); falling back to CPU`);
      return { ...gpu, device: { kind: 'cpu' } };
    }
    restore();
    missing.push(TFJS_NODE_GPU);
  }
  const cpu = await importNative(importer, TFJS_NODE);
  if (cpu !== undefined) {
    if (missing.length > 0) logger.warn({ requested: formatDevice(requested), device: 'cpu', backend: cpu.name }, `TF.js: ${TFJS_NODE_GPU} is not installed; falling back to CPU with ${TFJS_NODE} (add the GPU package: npm install ${TFJS_NODE_GPU}@${TFJS_VERSION})`);
    return { ...cpu, device: { kind: 'cpu' } };
  }
  missing.push(TFJS_NODE);
  const wasm = await loadWasm(importer);
  logger.warn(
    { requested: formatDevice(requested), device: 'cpu', backend: 'wasm', missing, simd: wasm.simd },
    `TF.js: ${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} not installed; running TF.js models on the CPU with the WASM backend (${wasm.simd ? 'SIMD' : 'no SIMD'}, 1 thread), several times slower than native. ` +
      `Add it with: npm install ${missing[0]}@${TFJS_VERSION} (it downloads libtensorflow; see docs/tensorflow.md)`,
  );
  return { tf: wasm.tf, name: 'wasm', package: '@tensorflow/tfjs-backend-wasm', device: { kind: 'cpu' } };
}

/** `CUDA_VISIBLE_DEVICES` that shows libtensorflow only GPU `id` (an index into an existing list, like onnxruntime's device id). */
export function cudaVisibleDevices(id: number, current: string | undefined): string {
  if (current === undefined || current.trim() === '') return String(id);
  const list = current.split(',').map((s) => s.trim());
  const chosen = list[id];
  if (chosen === undefined) throw new ConfigError(`device cuda:${id}: CUDA_VISIBLE_DEVICES="${current}" lists only ${list.length} GPU(s)`);
  return chosen;
}

async function importNative(importer: PackageImporter, name: string): Promise<Omit<TfBackend, 'device'> | undefined> {
  let mod: unknown;
  try {
    mod = await importer(name);
  } catch (cause) {
    // Installed but broken (e.g. libtensorflow missing): loud, not a silent fallback.
    throw new ModelLoadError(`TF.js: ${name} is installed but failed to load: ${(cause as Error).message}`, { cause });
  }
  if (mod === undefined) return undefined;
  const tf = namespaceOf(mod);
  await tf.ready();
  const node = (tf as unknown as { node?: TfNodeApi }).node;
  return { tf, name: tf.getBackend(), package: name, ...(node === undefined ? {} : { node }) };
}

/** Whether tfjs-node-gpu's backend found a CUDA device (its `isUsingGpuDevice`). */
function usesGpu(tf: TfModule): boolean {
  return (tf.backend() as unknown as { isUsingGpuDevice?: boolean }).isUsingGpuDevice === true;
}

async function loadWasm(importer: PackageImporter): Promise<{ tf: TfModule; simd: boolean }> {
  const tf = namespaceOf(await required(importer, '@tensorflow/tfjs'));
  const wasm = (await required(importer, '@tensorflow/tfjs-backend-wasm')) as { setWasmPaths(prefix: string): void };
  // The .wasm files are read from the package folder (Node has no URL to fetch them from).
  const pkg = createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm/package.json');
  wasm.setWasmPaths(`${join(dirname(pkg), 'dist')}/`);
  const simd = (await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) === true;
  const before = new Set<unknown>([...process.listeners('uncaughtException'), ...process.listeners('unhandledRejection')]);
  const ok = await tf.setBackend('wasm');
  // Emscripten's Node glue adds process handlers that rethrow; library code installs none (the CLI owns them).
  for (const l of process.listeners('uncaughtException')) if (!before.has(l)) process.removeListener('uncaughtException', l);
  for (const l of process.listeners('unhandledRejection')) if (!before.has(l)) process.removeListener('unhandledRejection', l);
  if (!ok) throw new ModelLoadError('TF.js: the WASM backend failed to initialise');
  return { tf, simd };
}

async function required(importer: PackageImporter, name: string): Promise<unknown> {
  const mod = await importer(name);
  if (mod === undefined) throw new ModelLoadError(`TF.js: ${name} is not installed; it is a dependency of @inferq/workers (reinstall it)`);
  return mod;
}

/** The namespace of a CommonJS package imported from ESM (named exports, or all under default). */
function namespaceOf(mod: unknown): TfModule {
  const m = mod as Partial<TfModule> & { default?: TfModule };
  return (typeof m.setBackend === 'function' ? m : m.default) as TfModule;
}

let processBackend: { requested: Device; backend: Promise<TfBackend> } | undefined;

/** The process's TF.js backend, chosen by the first TF.js model loaded (see the file comment). */
export function tfjsBackend(requested: Device, logger: Logger): Promise<TfBackend> {
  if (processBackend === undefined) {
    const backend = loadBackend(requested, logger);
    processBackend = { requested, backend };
    backend.catch(() => {
      processBackend = undefined; // a later model may try again
    });
    return backend;
  }
  if (formatDevice(processBackend.requested) !== formatDevice(requested)) {
    return Promise.reject(
      new ConfigError(
        `TF.js serves one device per process: this process already runs TF.js models for ${formatDevice(processBackend.requested)}, not ${formatDevice(requested)}; run one worker per device (inferq worker --devices)`,
      ),
    );
  }
  return processBackend.backend;
}
