/**
 * Validation of a job's tensors against a model's declared inputs. Runs before
 * anything is batched, so a bad job fails alone with a message naming the value.
 */
import type { ErrorCode } from './error-codes.js';
import { InvalidInputError, jobSuffix } from './errors.js';
import type { TensorSpec } from './model-config.js';
import { describe } from './tensor.js';
import type { TensorMap } from './tensor.js';

/** What to do with NaN or ±Infinity in floating-point features. */
export type NonFinitePolicy = 'reject' | 'pass';

export interface ValidateContext {
  readonly jobId?: string | undefined;
  readonly model: string;
  readonly version: string;
  /** Default 'reject'. */
  readonly nonFinite?: NonFinitePolicy;
  /** Added to row numbers in messages (a chunk of a larger file). Default 0. */
  readonly rowOffset?: number;
}

/** Shape of a declared spec for messages: the batch dimension shows as `n`, other -1 as `?`. */
export function describeSpec(spec: TensorSpec): string {
  return describe(
    spec.dtype,
    spec.shape.map((d, i) => (i === 0 ? 'n' : d < 0 ? '?' : d)),
  );
}

/**
 * Checks every declared input is present with the right dtype and shape, that
 * no undeclared tensor is sent, and that all share one row count. Returns the rows.
 */
export function validateInputs(tensors: TensorMap, inputs: readonly TensorSpec[], ctx: ValidateContext): number {
  const err = (code: ErrorCode, message: string): InvalidInputError =>
    new InvalidInputError(`${message}${jobSuffix(ctx.jobId)}`, { code, jobId: ctx.jobId, model: ctx.model, version: ctx.version });
  let rows: number | undefined;
  for (const spec of inputs) {
    const t = tensors[spec.name];
    if (t === undefined) {
      throw err('MISSING_INPUT', `missing input "${spec.name}" (${describeSpec(spec)}) for model ${ctx.model}:${ctx.version}; got ${listNames(tensors)}`);
    }
    const shapeOk = t.shape.length === spec.shape.length && spec.shape.every((d, i) => i === 0 || d < 0 || d === t.shape[i]);
    if (t.dtype !== spec.dtype || !shapeOk) {
      throw err(t.dtype !== spec.dtype ? 'BAD_DTYPE' : 'BAD_SHAPE', `input "${spec.name}": expected ${describeSpec(spec)}, got ${describe(t.dtype, t.shape)}`);
    }
    const r = t.shape[0]!;
    if (rows !== undefined && r !== rows) {
      throw err('BAD_SHAPE', `input "${spec.name}": ${r} rows, but other inputs have ${rows}`);
    }
    rows = r;
    if ((ctx.nonFinite ?? 'reject') === 'reject' && (t.dtype === 'float32' || t.dtype === 'float64')) {
      const data = t.data as Float32Array | Float64Array;
      const bad = firstNonFinite(data);
      if (bad >= 0) {
        const width = r === 0 ? 1 : data.length / r;
        throw err('NON_FINITE', `input "${spec.name}": non-finite value ${data[bad]} at row ${(ctx.rowOffset ?? 0) + Math.floor(bad / width)}, column ${bad % width}`);
      }
    }
  }
  for (const name of Object.keys(tensors)) {
    if (!inputs.some((s) => s.name === name)) {
      throw err('UNKNOWN_INPUT', `unknown input "${name}" for model ${ctx.model}:${ctx.version}; it takes ${inputs.map((s) => `"${s.name}"`).join(', ')}`);
    }
  }
  return rows ?? 0;
}

/**
 * Index of the first NaN/±Infinity, or -1. The common case (all finite) is one
 * pass of `acc += v * 0`, which stays 0 unless some v is NaN or ±Infinity; only
 * then is the position searched. Monomorphic per array type (this runs on every row).
 */
export function firstNonFinite(data: Float32Array | Float64Array): number {
  return data instanceof Float32Array ? firstNonFinite32(data) : firstNonFinite64(data);
}

function firstNonFinite32(data: Float32Array): number {
  // Four independent sums: one sum's chain of dependent additions would cap the loop at one add per latency.
  let a0 = 0;
  let a1 = 0;
  let a2 = 0;
  let a3 = 0;
  const n = data.length - (data.length % 4);
  let i = 0;
  for (; i < n; i += 4) {
    a0 += data[i]! * 0;
    a1 += data[i + 1]! * 0;
    a2 += data[i + 2]! * 0;
    a3 += data[i + 3]! * 0;
  }
  for (; i < data.length; i++) a0 += data[i]! * 0;
  if (a0 + a1 + a2 + a3 === 0) return -1;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v - v !== 0) return i;
  }
  return -1;
}

function firstNonFinite64(data: Float64Array): number {
  // Four independent sums: one sum's chain of dependent additions would cap the loop at one add per latency.
  let a0 = 0;
  let a1 = 0;
  let a2 = 0;
  let a3 = 0;
  const n = data.length - (data.length % 4);
  let i = 0;
  for (; i < n; i += 4) {
    a0 += data[i]! * 0;
    a1 += data[i + 1]! * 0;
    a2 += data[i + 2]! * 0;
    a3 += data[i + 3]! * 0;
  }
  for (; i < data.length; i++) a0 += data[i]! * 0;
  if (a0 + a1 + a2 + a3 === 0) return -1;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v - v !== 0) return i;
  }
  return -1;
}

function listNames(tensors: TensorMap): string {
  const names = Object.keys(tensors);
  return names.length === 0 ? 'no tensors' : names.map((n) => `"${n}"`).join(', ');
}
