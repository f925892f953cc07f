/**
 * Loads a TF.js model from a version folder and runs one batch through it, whatever its kind:
 * a graph model or a layers model (`model.json` + weight shards), or a TensorFlow SavedModel
 * (`saved_model.pb`, only with a native backend). Each kind is one small {@link TfModel}.
 */
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { ModelLoadError } from '@inferq/shared';
import type { TensorSpec } from '@inferq/shared';
import type * as tfjs from '@tensorflow/tfjs';
import { TFJS_NODE, TFJS_NODE_GPU } from './backend.js';
import type { TfBackend, TfModule } from './backend.js';
import { specsOf } from './specs.js';
import type { TfTensorInfo } from './specs.js';

export type TfjsFormat = 'tfjs-graph' | 'tfjs-layers' | 'saved-model';

/** A loaded model: its signature, and a batch in → outputs in `outputs` order. */
export interface TfModel {
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
  /** Runs synchronously when it can (then inside `tf.tidy`); the caller disposes `feeds` and the results. */
  execute(feeds: tfjs.NamedTensorMap): tfjs.Tensor[] | Promise<tfjs.Tensor[]>;
  dispose(): void;
}

/** How to convert a SavedModel for a host without the native package. */
export function savedModelHelp(dir: string): string {
  return (
    `a TensorFlow SavedModel (${join(dir, 'saved_model.pb')}) needs ${TFJS_NODE} (or ${TFJS_NODE_GPU}), which is not installed. ` +
    `Install it (npm install ${TFJS_NODE}; see docs/tensorflow.md), or convert the model: ` +
    `tensorflowjs_converter --input_format=tf_saved_model --output_format=tfjs_graph_model ${dir} <new version folder> (a TF.js graph model), ` +
    `or python -m tf2onnx.convert --saved-model ${dir} --output <new version folder>/model.onnx (ONNX Runtime)`
  );
}

export async function loadTfModel(backend: TfBackend, format: TfjsFormat, dir: string, where: string): Promise<TfModel> {
  const { tf } = backend;
  try {
    switch (format) {
      case 'tfjs-graph':
        return disposingOnError(await tf.loadGraphModel(folderHandler(tf, dir)), (m) => graphModel(tf, m, where));
      case 'tfjs-layers':
        return disposingOnError(await tf.loadLayersModel(folderHandler(tf, dir)), (m) => layersModel(tf, m, where));
      case 'saved-model':
        if (backend.node === undefined) throw new ModelLoadError(`${where}: ${savedModelHelp(dir)}`);
        return disposingOnError(await backend.node.loadSavedModel(dir, ['serve'], 'serving_default'), (m) => savedModel(m, where));
    }
  } catch (cause) {
    if (cause instanceof ModelLoadError) throw cause;
    throw new ModelLoadError(`${where} failed to load: ${(cause as Error).message}`, { cause });
  }
}

/** A model whose signature is refused releases its weights before the error goes up. */
function disposingOnError<M extends { dispose(): void }>(model: M, wrap: (m: M) => TfModel): TfModel {
  try {
    return wrap(model);
  } catch (err) {
    model.dispose();
    throw err;
  }
}

/**
 * Reads `model.json` and the weight files its manifest names, from the folder only (a path
 * that leaves it is refused: a model folder cannot pull in other files of the host).
 */
function folderHandler(tf: TfModule, dir: string): tfjs.io.IOHandler {
  return {
    load: async () => {
      const json = JSON.parse(await readFile(join(dir, 'model.json'), 'utf8')) as tfjs.io.ModelJSON;
      return tf.io.getModelArtifactsForJSON(json, async (manifest) => {
        const specs: tfjs.io.WeightsManifestEntry[] = [];
        const buffers: ArrayBuffer[] = [];
        for (const group of manifest) {
          specs.push(...group.weights);
          for (const path of group.paths) {
            if (basename(path) !== path || path === '..' || path === '.') throw new ModelLoadError(`${join(dir, 'model.json')}: weight file "${path}" is not a file name in the model folder`);
            const bytes = await readFile(join(dir, path));
            buffers.push(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
          }
        }
        return [specs, tf.io.concatenateArrayBuffers(buffers)];
      });
    },
  };
}

function graphModel(tf: TfModule, model: tfjs.GraphModel, where: string): TfModel {
  const signature = model.modelSignature as GraphSignature | undefined;
  if (signature?.inputs === undefined || signature.outputs === undefined) {
    throw new ModelLoadError(`${where}: model.json has no signature naming its inputs and outputs; convert the model from a SavedModel (tensorflowjs_converter --input_format=tf_saved_model)`);
  }
  const inputs = specsOf('input', signatureInfos(signature.inputs), where);
  const outputs = specsOf('output', signatureInfos(signature.outputs), where);
  const names = outputs.map((o) => o.name);
  // Models with control flow (dynamic ops) only run through executeAsync; known after the first try.
  let dynamic = false;
  return {
    inputs,
    outputs,
    execute(feeds) {
      if (!dynamic) {
        try {
          return tf.tidy(() => asArray(model.execute(feeds, names)));
        } catch (err) {
          if (!/executeAsync/.test((err as Error).message)) throw err;
          dynamic = true;
        }
      }
      return model.executeAsync(feeds, names).then(asArray);
    },
    dispose: () => model.dispose(),
  };
}

/** A graph model's signature as model.json holds it (TensorFlow's SignatureDef in JSON). */
interface GraphSignature {
  readonly inputs?: Record<string, SignatureTensor>;
  readonly outputs?: Record<string, SignatureTensor>;
}

interface SignatureTensor {
  readonly dtype?: string;
  readonly tensorShape?: { readonly dim?: readonly { readonly size?: string | number }[]; readonly unknownRank?: boolean };
}

/** TensorFlow dtypes as TF.js runs them (the converter stores int64 as int32). */
const TF_TO_TFJS: Readonly<Record<string, string>> = { DT_FLOAT: 'float32', DT_INT32: 'int32', DT_INT64: 'int32', DT_BOOL: 'bool' };

/** Signature entries, keyed by the names callers use (the keys, not the graph's tensor names). */
function signatureInfos(entries: Record<string, SignatureTensor>): TfTensorInfo[] {
  return Object.entries(entries).map(([name, t]) => ({
    name,
    dtype: t.dtype === undefined ? undefined : (TF_TO_TFJS[t.dtype] ?? t.dtype),
    shape: t.tensorShape === undefined || t.tensorShape.unknownRank === true ? undefined : (t.tensorShape.dim ?? []).map((d) => Number(d.size ?? 0)),
  }));
}

function layersModel(tf: TfModule, model: tfjs.LayersModel, where: string): TfModel {
  const inputs = specsOf('input', model.inputs.map((t, i) => ({ name: model.inputNames[i]!, dtype: t.dtype, shape: t.shape })), where);
  const outputs = specsOf('output', model.outputs.map((t, i) => ({ name: model.outputNames[i]!, dtype: t.dtype, shape: t.shape })), where);
  return {
    inputs,
    outputs,
    execute: (feeds) => tf.tidy(() => asArray(model.predictOnBatch(inputs.map((s) => feeds[s.name]!)))),
    dispose: () => model.dispose(),
  };
}

function savedModel(model: Awaited<ReturnType<NonNullable<TfBackend['node']>['loadSavedModel']>>, where: string): TfModel {
  const inputs = specsOf('input', model.inputs, where);
  const outputs = specsOf('output', model.outputs, where);
  return {
    inputs,
    outputs,
    execute(feeds) {
      const result = model.predict(feeds);
      if (Array.isArray(result) || !isNamedMap(result)) return asArray(result);
      return outputs.map((o) => {
        const t = result[o.name];
        if (t === undefined) throw new ModelLoadError(`${where}: the SavedModel produced no output "${o.name}"`);
        return t;
      });
    },
    dispose: () => model.dispose(),
  };
}

function isNamedMap(value: tfjs.Tensor | tfjs.NamedTensorMap): value is tfjs.NamedTensorMap {
  return typeof (value as Partial<tfjs.Tensor>).dataSync !== 'function';
}

function asArray(result: tfjs.Tensor | tfjs.Tensor[]): tfjs.Tensor[] {
  return Array.isArray(result) ? result : [result];
}
