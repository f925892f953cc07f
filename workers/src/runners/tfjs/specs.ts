/**
 * A TF.js model's signature as inferq TensorSpecs (checked against config.yaml by
 * runners/specs.ts, as for ONNX).
 */
import { ModelLoadError } from '@inferq/shared';
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
