/**
 * Which runner a model version gets, decided by what its folder holds:
 *
 *   model.onnx      ─► ONNX Runtime            (OnnxRunner)
 *   model.json      ─► TF.js graph or layers   (TfjsRunner; its "format" field says which)
 *   saved_model.pb  ─► TF.js SavedModel        (TfjsRunner; needs @tensorflow/tfjs-node)
 *
 * A folder holding more than one of them is refused: which one serves must not depend on a rule
 * nobody remembers.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ModelLoadError, printable } from '@inferq/shared';
import type { TensorSpec } from '@inferq/shared';
import type { Logger } from '../logging.js';
import { OnnxRunner } from './onnx/runner.js';
import type { OnnxRunnerOptions } from './onnx/runner.js';
import type { Device, Runner } from './runner.js';
import { TfjsRunner } from './tfjs/runner.js';

export type ModelFormat = 'onnx' | 'tfjs-graph' | 'tfjs-layers' | 'saved-model';

/** The file that marks each kind of model folder. */
export const MODEL_FILES = { onnx: 'model.onnx', tfjs: 'model.json', savedModel: 'saved_model.pb' } as const;

/** The format of the model in a version folder; a ModelLoadError naming the folder when it holds none or several. */
export async function modelFormatOf(versionDir: string): Promise<ModelFormat> {
  let names: string[];
  try {
    names = (await readdir(versionDir, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name);
  } catch (cause) {
    throw new ModelLoadError(`cannot list model folder ${versionDir}: ${(cause as Error).message}`, { cause });
  }
  const found = Object.values(MODEL_FILES).filter((f) => names.includes(f));
  if (found.length === 0) {
    throw new ModelLoadError(`no model in ${versionDir}: expected ${MODEL_FILES.onnx}, ${MODEL_FILES.tfjs} (TF.js) or ${MODEL_FILES.savedModel} (TensorFlow SavedModel)`);
  }
  if (found.length > 1) throw new ModelLoadError(`${versionDir} holds ${found.join(' and ')}: keep one model per version folder`);
  if (found[0] === MODEL_FILES.onnx) return 'onnx';
  if (found[0] === MODEL_FILES.savedModel) return 'saved-model';
  return tfjsFormat(join(versionDir, MODEL_FILES.tfjs));
}

/** A TF.js model.json's kind: its `format` field, else what its topology looks like (older converters wrote no format). */
async function tfjsFormat(path: string): Promise<'tfjs-graph' | 'tfjs-layers'> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (cause) {
    throw new ModelLoadError(`${path} is not readable JSON: ${(cause as Error).message}`, { cause });
  }
  const { format, modelTopology } = (typeof json === 'object' && json !== null ? json : {}) as { format?: unknown; modelTopology?: unknown };
  if (format === 'graph-model') return 'tfjs-graph';
  if (format === 'layers-model') return 'tfjs-layers';
  if (format === undefined && typeof modelTopology === 'object' && modelTopology !== null) {
    if (Array.isArray((modelTopology as { node?: unknown }).node)) return 'tfjs-graph';
    if ('model_config' in modelTopology || 'class_name' in modelTopology) return 'tfjs-layers';
  }
  const what = typeof format === 'string' ? `format "${printable(format)}"` : 'no format and no recognisable modelTopology';
  throw new ModelLoadError(`${path} has ${what}: expected a TF.js "graph-model" or "layers-model"`);
}

export interface CreateRunnerOptions {
  /** The version folder. */
  readonly dir: string;
  readonly format: ModelFormat;
  readonly name: string;
  readonly version: string;
  readonly device?: Device;
  readonly inputs?: readonly TensorSpec[] | undefined;
  readonly outputs?: readonly TensorSpec[] | undefined;
  readonly logger: Logger;
  /** ONNX only: the model's bytes, and thread options (see OnnxRunnerOptions). Default: read `model.onnx` from `dir`. */
  readonly onnx?: Partial<Omit<OnnxRunnerOptions, 'source' | 'name' | 'version' | 'device' | 'inputs' | 'outputs' | 'logger'>>;
}

/** The runner for a model version (not loaded yet). */
export async function createRunner(options: CreateRunnerOptions): Promise<Runner> {
  const { dir, format, name, version, logger } = options;
  const common = { name, version, logger, inputs: options.inputs, outputs: options.outputs, ...(options.device === undefined ? {} : { device: options.device }) };
  if (format !== 'onnx') return new TfjsRunner({ ...common, dir, format });
  const source = join(dir, MODEL_FILES.onnx);
  let model = options.onnx?.model;
  if (model === undefined) {
    try {
      model = new Uint8Array(await readFile(source));
    } catch (cause) {
      throw new ModelLoadError(`cannot read ${source}: ${(cause as Error).message}`, { cause, model: name, version });
    }
  }
  return new OnnxRunner({ ...options.onnx, ...common, source, model });
}
