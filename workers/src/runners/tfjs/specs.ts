/**
 * A TF.js model's signature as inferq TensorSpecs, and those checked against config.yaml with
 * the same rules as the ONNX runner: the same names, the same dtypes, and shapes that agree
 * wherever both give a dimension (config.yaml may pin one the model leaves dynamic).
 */
import { ModelLoadError, describe } from '@inferq/shared';
import type { DType, TensorSpec } from '@inferq/shared';

/** What TF.js says of one input or output (GraphModel/TFSavedModel `inputs`, a LayersModel's symbolic tensors). */
export interface TfTensorInfo {
  readonly name: string;
  readonly dtype: string | undefined;
  readonly shape?: readonly (number | null | undefined)[] | undefined;
}

/** The TF.js dtypes inferq can carry (TF.js has no int64 or float64: the converter maps them to int32 and float32). */
const TF_DTYPES: Readonly<Record<string, DType>> = { float32: 'float32', int32: 'int32', bool: 'bool' };

/** One TensorSpec per tensor; an unknown or absent dimension is -1. */
export function specsOf(kind: 'input' | 'output', infos: readonly TfTensorInfo[], where: string): TensorSpec[] {
  const seen = new Set<string>();
  return infos.map((info): TensorSpec => {
    if (seen.has(info.name)) throw new ModelLoadError(`${where}: two ${kind}s are named "${info.name}"`);
    seen.add(info.name);
    const dtype = info.dtype === undefined ? undefined : TF_DTYPES[info.dtype];
    if (dtype === undefined) {
      throw new ModelLoadError(`${where}: ${kind} "${info.name}" has dtype ${info.dtype ?? 'unknown'}; TF.js models may use float32, int32 and bool`);
    }
    if (info.shape === undefined) throw new ModelLoadError(`${where}: ${kind} "${info.name}" has no shape in the model's signature`);
    return { name: info.name, dtype, shape: info.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : -1)) };
  });
}

/** Specs from the model, checked against (and refined by) the ones config.yaml declares. */
export function reconcileSpecs(kind: 'input' | 'output', fromModel: readonly TensorSpec[], declared: readonly TensorSpec[] | undefined, where: string): TensorSpec[] {
  if (declared === undefined) return [...fromModel];
  const modelNames = fromModel.map((s) => s.name).sort();
  const declaredNames = declared.map((s) => s.name).sort();
  if (modelNames.join('\u0000') !== declaredNames.join('\u0000')) {
    throw new ModelLoadError(
      `${where}: config.yaml declares ${kind}s ${declaredNames.map((n) => `"${n}"`).join(', ')} but the model has ${modelNames.map((n) => `"${n}"`).join(', ')}`,
    );
  }
  return declared.map((d): TensorSpec => {
    const m = fromModel.find((s) => s.name === d.name)!;
    const agree =
      d.dtype === m.dtype &&
      (m.shape.length === 0 || d.shape.length === m.shape.length) &&
      d.shape.every((dim, i) => dim < 0 || (m.shape[i] ?? -1) < 0 || m.shape[i] === dim);
    if (!agree) {
      throw new ModelLoadError(`${where}: config.yaml declares ${kind} "${d.name}" as ${describe(d.dtype, d.shape)}, the model has ${describe(m.dtype, m.shape)}`);
    }
    return { name: d.name, dtype: d.dtype, shape: d.shape.map((dim, i) => (dim >= 0 ? dim : (m.shape[i] ?? -1))) };
  });
}
