import type { DType, TypedArray } from './dtype.js';

/**
 * A dense tensor: a typed array in row-major order and its shape. The first
 * dimension is the batch (rows) wherever a tensor crosses a component boundary.
 */
export interface Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: TypedArray;
}

/** Named tensors: a model's inputs or outputs. */
export type TensorMap = Readonly<Record<string, Tensor>>;

/** Number of elements in a shape. */
export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Human form of a dtype and shape for messages: `float32 [10,63]`. */
export function describe(dtype: string, shape: readonly (number | string)[]): string {
  return `${dtype} [${shape.join(',')}]`;
}
