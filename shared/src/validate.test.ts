import { describe, expect, it } from 'vitest';
import { allocate } from './dtype.js';
import type { DType } from './dtype.js';
import type { ErrorCode } from './error-codes.js';
import { InvalidInputError } from './errors.js';
import type { TensorSpec } from './model-config.js';
import type { Tensor, TensorMap } from './tensor.js';
import { validateInputs } from './validate.js';

const tensor = (dtype: DType, shape: number[], fill = 1): Tensor => {
  const data = allocate(dtype, shape.reduce((a, b) => a * b, 1));
  if (data instanceof BigInt64Array) data.fill(BigInt(fill));
  else (data as Float32Array).fill(fill);
  return { dtype, shape, data };
};

const specs: TensorSpec[] = [
  { name: 'features', dtype: 'float32', shape: [-1, 4] },
  { name: 'ids', dtype: 'int32', shape: [-1] },
];
const ctx = { jobId: 'job-1', model: 'm', version: '1' };

/** The error validateInputs throws for `tensors`, which must be an InvalidInputError. */
function refusal(tensors: TensorMap, options: { nonFinite?: 'reject' | 'pass' } = {}): InvalidInputError {
  try {
    validateInputs(tensors, specs, { ...ctx, ...options });
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidInputError);
    return err as InvalidInputError;
  }
  throw new Error('validateInputs accepted the tensors');
}

const expectCode = (err: InvalidInputError, code: ErrorCode, message: RegExp): void => {
  expect(err.message).toMatch(message);
  expect(err.code).toBe(code);
  expect(err.retriable).toBe(false);
  expect([err.jobId, err.model, err.version]).toEqual(['job-1', 'm', '1']);
};

describe('validateInputs: error codes', () => {
  it('accepts good tensors (the cases below each break one thing)', () => {
    expect(validateInputs({ features: tensor('float32', [3, 4]), ids: tensor('int32', [3]) }, specs, ctx)).toBe(3);
  });

  it('a declared input that is absent: MISSING_INPUT', () => {
    expectCode(refusal({ features: tensor('float32', [3, 4]) }), 'MISSING_INPUT', /missing input "ids"/);
  });

  it('an input of another dtype: BAD_DTYPE, also when its shape is wrong too', () => {
    expectCode(refusal({ features: tensor('float64', [3, 4]), ids: tensor('int32', [3]) }), 'BAD_DTYPE', /expected float32 \[n,4\], got float64 \[3,4\]/);
    expectCode(refusal({ features: tensor('float32', [3, 4]), ids: tensor('int64', [3, 2]) }), 'BAD_DTYPE', /input "ids": expected int32 \[n\], got int64 \[3,2\]/);
  });

  it('a wrong width or rank: BAD_SHAPE', () => {
    expectCode(refusal({ features: tensor('float32', [3, 5]), ids: tensor('int32', [3]) }), 'BAD_SHAPE', /expected float32 \[n,4\], got float32 \[3,5\]/);
    expectCode(refusal({ features: tensor('float32', [12]), ids: tensor('int32', [3]) }), 'BAD_SHAPE', /got float32 \[12\]/);
  });

  it('inputs with different row counts: BAD_SHAPE', () => {
    expectCode(refusal({ features: tensor('float32', [3, 4]), ids: tensor('int32', [2]) }), 'BAD_SHAPE', /input "ids": 2 rows, but other inputs have 3/);
  });

  it('NaN or Infinity in a float input: NON_FINITE (unless they pass)', () => {
    const features = tensor('float32', [3, 4]);
    features.data[6] = Number.POSITIVE_INFINITY;
    const tensors = { features, ids: tensor('int32', [3]) };
    expectCode(refusal(tensors), 'NON_FINITE', /non-finite value Infinity at row 1, column 2/);
    expect(validateInputs(tensors, specs, { ...ctx, nonFinite: 'pass' })).toBe(3);
  });

  it('a tensor the model does not declare: UNKNOWN_INPUT', () => {
    expectCode(refusal({ features: tensor('float32', [3, 4]), ids: tensor('int32', [3]), extra: tensor('float32', [3]) }), 'UNKNOWN_INPUT', /unknown input "extra"/);
  });
});
