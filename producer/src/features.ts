/**
 * JSON convenience at the SDK edge: `number[][]` or named feature objects become
 * tensors once, here. Inside inferq everything is the binary envelope.
 */
import { InvalidInputError } from '@inferq/shared';
import type { Tensor, TensorMap } from '@inferq/shared';

/** Rows of numbers (one input), named feature objects (one input per key), or tensors. */
export type FeatureBatch = TensorMap | readonly (readonly number[])[] | readonly Readonly<Record<string, number | readonly number[]>>[];

function isTensor(v: unknown): v is Tensor {
  return typeof v === 'object' && v !== null && 'dtype' in v && 'shape' in v && 'data' in v;
}

/**
 * Converts a feature batch to float32 tensors. `number[][]` feeds the input named
 * `input` (default "features"); objects feed one input per key (a number → width 1).
 */
export function toTensors(batch: FeatureBatch, input = 'features'): TensorMap {
  if (!Array.isArray(batch)) {
    const map = batch as TensorMap;
    for (const [name, t] of Object.entries(map)) {
      if (!isTensor(t)) throw new InvalidInputError(`feature "${name}": expected a tensor { dtype, shape, data }`);
    }
    return map;
  }
  const rows = batch as readonly unknown[];
  // An empty batch is a zero-row job: its reply holds every model output with zero rows.
  if (rows.length === 0) return {};
  if (Array.isArray(rows[0])) return { [input]: fromMatrix(rows as readonly (readonly number[])[], input) };
  return fromObjects(rows as readonly Readonly<Record<string, number | readonly number[]>>[]);
}

function fromMatrix(rows: readonly (readonly number[])[], name: string): Tensor {
  const width = rows[0]!.length;
  const data = new Float32Array(rows.length * width);
  rows.forEach((row, r) => {
    if (!Array.isArray(row) || row.length !== width) {
      throw new InvalidInputError(`feature "${name}" row ${r}: expected ${width} numbers, got ${Array.isArray(row) ? row.length : typeof row}`);
    }
    for (let c = 0; c < width; c++) {
      const v = row[c];
      if (typeof v !== 'number') throw new InvalidInputError(`feature "${name}" row ${r} column ${c}: expected a number, got ${JSON.stringify(v)}`);
      data[r * width + c] = v;
    }
  });
  return { dtype: 'float32', shape: [rows.length, width], data };
}

function fromObjects(rows: readonly Readonly<Record<string, number | readonly number[]>>[]): TensorMap {
  const first = rows[0]!;
  const names = Object.keys(first);
  if (names.length === 0) throw new InvalidInputError('feature row 0 has no features');
  const out: Record<string, Tensor> = {};
  for (const name of names) {
    const v0 = first[name];
    const width = typeof v0 === 'number' ? 1 : Array.isArray(v0) ? v0.length : -1;
    if (width < 0) throw new InvalidInputError(`feature "${name}" row 0: expected a number or an array of numbers, got ${JSON.stringify(v0)}`);
    out[name] = fromMatrix(
      rows.map((row, r) => {
        const v = row[name];
        if (v === undefined) throw new InvalidInputError(`feature "${name}" is missing in row ${r}`);
        return typeof v === 'number' ? [v] : (v as number[]);
      }),
      name,
    );
  }
  return out;
}
