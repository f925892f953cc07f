/**
 * Zero-copy access to a list / fixed_size_list column of numbers as one flat
 * typed array plus a row width — the shape a model input wants.
 */
import type { Data, DataType, RecordBatch } from 'apache-arrow';
import { Type } from 'apache-arrow';
import { InvalidInputError } from '@inferq/shared';

export type TypedArray =
  | Int8Array
  | Int16Array
  | Int32Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | Float32Array
  | Float64Array
  | BigInt64Array
  | BigUint64Array;

export interface ListValues {
  /** rows × width values, row-major; a view into the batch (no copy) when possible. */
  readonly values: TypedArray;
  readonly rows: number;
  readonly width: number;
}

/**
 * The values of list column `name` of `batch`, checking that every row has the
 * same number of values and none is null. A view when the batch's child
 * buffer is contiguous (always for batches from openParquet); a copy otherwise.
 */
export function listValues(batch: RecordBatch, name: string): ListValues {
  const column = batch.getChild(name);
  if (column === null) throw new InvalidInputError(`column "${name}": not in the batch`);
  const type = column.type as DataType;
  if (type.typeId !== Type.List && type.typeId !== Type.FixedSizeList) {
    throw new InvalidInputError(`column "${name}": expected a list of numbers, got ${String(type)}`);
  }
  let width = -1;
  const parts: TypedArray[] = [];
  for (const data of column.data as Data[]) {
    const child = data.children[0] as Data | undefined;
    if (child === undefined || !ArrayBuffer.isView(child.values) || child.typeId === Type.Utf8) {
      throw new InvalidInputError(`column "${name}": expected a list of numbers, got ${String(type)}`);
    }
    if (data.nullCount > 0) throw new InvalidInputError(`column "${name}": has null rows`);
    if (child.nullCount > 0) throw new InvalidInputError(`column "${name}": has null values inside lists`);
    let from: number;
    let to: number;
    if (type.typeId === Type.FixedSizeList) {
      const w = (type as DataType & { listSize: number }).listSize;
      if (width === -1) width = w;
      from = data.offset * w;
      to = from + data.length * w;
    } else {
      const offsets = data.valueOffsets as Int32Array;
      from = offsets[data.offset] ?? 0;
      to = offsets[data.offset + data.length] ?? from;
      for (let i = 0; i < data.length; i++) {
        const w = (offsets[data.offset + i + 1] as number) - (offsets[data.offset + i] as number);
        if (width === -1) width = w;
        else if (w !== width) throw new InvalidInputError(`column "${name}": row ${i} has ${w} values, row 0 has ${width}`);
      }
    }
    const values = child.values as TypedArray;
    parts.push(values.subarray(child.offset + from, child.offset + to) as TypedArray);
  }
  const rows = batch.numRows;
  if (width === -1) width = 0;
  if (parts.length === 1 && parts[0] !== undefined) return { values: parts[0], rows, width };
  const first = parts[0];
  if (first === undefined) return { values: new Float32Array(0), rows, width };
  const out = new (first.constructor as new (n: number) => TypedArray)(rows * width);
  let at = 0;
  for (const p of parts) {
    (out as Float32Array).set(p as Float32Array, at);
    at += p.length;
  }
  return { values: out, rows, width };
}
