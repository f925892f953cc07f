/**
 * A model's own input/output specs checked against the ones its config.yaml declares, the same
 * for every runner: the same names, the same dtypes, and shapes that agree wherever both give a
 * dimension (config.yaml may pin one the model leaves dynamic).
 */
import { ModelLoadError, describe } from '@inferq/shared';
import type { TensorSpec } from '@inferq/shared';

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
