import { describe, expect, it } from 'vitest';
import type { TensorMap } from '@inferq/shared';
import { rowJson } from './precompute.js';

/** The oracle: one row's outputs as an object, { output: number | number[] }, for JSON.stringify. */
function rowValue(outputs: TensorMap, row: number): Record<string, number | number[]> {
  const value: Record<string, number | number[]> = {};
  for (const [name, t] of Object.entries(outputs)) {
    const width = t.shape.slice(1).reduce((a, b) => a * b, 1);
    if (width === 1) value[name] = Number(t.data[row]);
    else value[name] = Array.from(t.data.subarray(row * width, (row + 1) * width) as ArrayLike<number>, Number);
  }
  return value;
}

describe('rowJson', () => {
  it('writes the same text as JSON.stringify of the row object, for every row', () => {
    const rows = 5;
    const outputs: TensorMap = {
      score: { dtype: 'float32', shape: [rows, 1], data: Float32Array.from([0.1, -2.5e-8, NaN, Infinity, 1 / 3]) },
      'la"bels\\x': { dtype: 'float32', shape: [rows, 3], data: Float32Array.from({ length: rows * 3 }, (_, i) => Math.sin(i) * 1e6) },
      idx: { dtype: 'int64', shape: [rows], data: BigInt64Array.from([1n, -2n, 3n, 40n, 5n]) },
      flat: { dtype: 'float64', shape: [rows, 2, 2], data: Float64Array.from({ length: rows * 4 }, (_, i) => i / 7) },
    };
    const json = rowJson(outputs);
    for (let r = 0; r < rows; r++) expect(json(r)).toBe(JSON.stringify(rowValue(outputs, r)));
  });
  it('no outputs: an empty object', () => {
    expect(rowJson({})(0)).toBe('{}');
  });
});
