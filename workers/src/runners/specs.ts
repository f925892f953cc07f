/**
 * A model's own input/output specs checked against the ones its config.yaml declares, the same
 * for every runner: the same names, the same dtypes, and shapes that agree wherever both give a
 * dimension (config.yaml may pin one the model leaves dynamic).
 */
import { ModelLoadError, allocate, describe } from '@inferq/shared';
import type { Tensor, TensorSpec } from '@inferq/shared';

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

/** Whether an input has a dynamic dimension besides the batch one (no warm-up batch can be made). */
export const hasDynamicInnerDims = (specs: readonly TensorSpec[]): boolean => specs.some((s) => s.shape.slice(1).some((d) => d < 0));

/** A batch of `rows` rows of zeros for every input: what a warm-up runs. */
export function zeroBatch(specs: readonly TensorSpec[], rows: number): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = {};
  for (const spec of specs) {
    const shape = [rows, ...spec.shape.slice(1)];
    feeds[spec.name] = { dtype: spec.dtype, shape, data: allocate(spec.dtype, shape.reduce((a, b) => a * b, 1)) };
  }
  return feeds;
}
