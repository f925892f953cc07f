/**
 * Arrow columns ⇄ tensors, for Parquet in and out. Zero-copy where Arrow's
 * layout already is the tensor's: a list<float32> column of equal-length rows
 * (or a fixed_size_list) is one contiguous Float32Array of child values.
 */
import { Field, FixedSizeList, Float32, Float64, Int32, Int64, Int8, Bool, Uint8, Type, makeData } from 'apache-arrow';
import type { Data, DataType, RecordBatch, Schema } from 'apache-arrow';
import { InvalidInputError, describeSpec, elementCount } from '@inferq/shared';
import type { DType, Tensor, TensorSpec, TypedArray } from '@inferq/shared';

/** How a Parquet column feeds a model input. */
export interface InputBinding {
  readonly spec: TensorSpec;
  readonly column: string;
  /** Elements per row. */
  readonly width: number;
  readonly layout: 'scalar' | 'list' | 'fixed';
}

/** Our dtype for an Arrow scalar type, or undefined when we have none. */
export function dtypeOfArrow(type: DataType): DType | undefined {
  switch (type.typeId) {
    case Type.Float: {
      const precision = (type as unknown as { precision: number }).precision;
      return precision === 1 ? 'float32' : precision === 2 ? 'float64' : undefined;
    }
    case Type.Int: {
      const t = type as unknown as { bitWidth: number; isSigned: boolean };
      if (t.isSigned && t.bitWidth === 32) return 'int32';
      if (t.isSigned && t.bitWidth === 64) return 'int64';
      if (t.isSigned && t.bitWidth === 8) return 'int8';
      if (!t.isSigned && t.bitWidth === 8) return 'uint8';
      return undefined;
    }
    case Type.Bool:
      return 'bool';
    default:
      return undefined;
  }
}

function arrowTypeName(type: DataType): string {
  return String(type);
}

/** Matches model inputs to Parquet columns by name; errors name the column and what was expected. */
export function bindInputs(schema: Schema, inputs: readonly TensorSpec[], source: string): InputBinding[] {
  return inputs.map((spec) => {
    const field = schema.fields.find((f) => f.name === spec.name);
    const width = elementCount(spec.shape.slice(1));
    if (spec.shape.slice(1).some((d) => d < 0)) {
      throw new InvalidInputError(`input "${spec.name}": dynamic non-batch dimensions (${describeSpec(spec)}) cannot be fed from Parquet; declare the shape in config.yaml`);
    }
    if (field === undefined) {
      throw new InvalidInputError(
        `${source}: missing input column "${spec.name}" (${describeSpec(spec)}); columns are ${schema.fields.map((f) => `"${f.name}"`).join(', ')}`,
      );
    }
    const t = field.type as DataType;
    const want = spec.shape.length === 1 || width === 1 ? `${spec.dtype} or list<${spec.dtype}>[${width}]` : `list<${spec.dtype}>[${width}]`;
    if (t.typeId === Type.List || t.typeId === Type.FixedSizeList) {
      const child = (t as unknown as { children: Field[] }).children[0]!.type as DataType;
      if (dtypeOfArrow(child) !== spec.dtype) {
        throw new InvalidInputError(`${source}: column "${spec.name}" is ${arrowTypeName(t)}, model input needs ${want}`);
      }
      if (t.typeId === Type.FixedSizeList) {
        const size = (t as unknown as { listSize: number }).listSize;
        if (size !== width) throw new InvalidInputError(`${source}: column "${spec.name}" has width ${size}, model input "${spec.name}" needs ${describeSpec(spec)}`);
        return { spec, column: spec.name, width, layout: 'fixed' as const };
      }
      return { spec, column: spec.name, width, layout: 'list' as const };
    }
    if (width === 1 && dtypeOfArrow(t) === spec.dtype) return { spec, column: spec.name, width, layout: 'scalar' as const };
    throw new InvalidInputError(`${source}: column "${spec.name}" is ${arrowTypeName(t)}, model input needs ${want}`);
  });
}

/**
 * One model input tensor from a record batch column; checks nulls and row widths.
 * A record batch holds exactly one Data per column, so this is a view (bools, which
 * Arrow bit-packs, are unpacked to one byte each).
 */
export function columnToTensor(batch: RecordBatch, binding: InputBinding, firstRow: number, source: string): Tensor {
  const data = batch.data.children[batch.schema.fields.findIndex((f) => f.name === binding.column)];
  if (data === undefined) throw new InvalidInputError(`${source}: column "${binding.column}" vanished from a record batch`);
  const rows = batch.numRows;
  const shape = [rows, ...binding.spec.shape.slice(1)];
  const where = (row: number): string => `${source}: column "${binding.column}" row ${firstRow + row}`;
  const needs = `model input "${binding.spec.name}" needs ${describeSpec(binding.spec)}`;
  if (data.nullCount > 0) throw new InvalidInputError(`${where(firstNull(data))}: null value (${needs})`);
  if (binding.layout === 'scalar') return { dtype: binding.spec.dtype, shape, data: valuesOf(data, 0, rows) };
  const child = data.children[0]!;
  if (child.nullCount > 0) throw new InvalidInputError(`${where(0)}: null element inside a list`);
  const w = binding.width;
  let start = 0; // a sliced fixed_size_list's child is sliced with it
  if (binding.layout === 'list') {
    // Arrow JS slices valueOffsets with the Data; they index the (unsliced) child.
    const offsets = data.valueOffsets as Int32Array;
    for (let i = 0; i < rows; i++) {
      const len = offsets[i + 1]! - offsets[i]!;
      if (len !== w) throw new InvalidInputError(`${where(i)}: list of length ${len}, ${needs}`);
    }
    start = offsets[0]!;
  }
  return { dtype: binding.spec.dtype, shape, data: valuesOf(child, start, rows * w) };
}

/**
 * `length` values from logical element `start` of a flat Arrow Data. Arrow JS slices
 * fixed-width `values` with the Data (a view is returned); booleans stay bit-packed with
 * a bit offset and are unpacked to one byte each.
 */
function valuesOf(data: Data, start: number, length: number): TypedArray {
  if (data.typeId !== Type.Bool) return (data.values as TypedArray).subarray(start, start + length);
  const bits = data.values as Uint8Array;
  const first = data.offset + start;
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (bits[(first + i) >> 3]! >> ((first + i) & 7)) & 1;
  return out;
}

function firstNull(data: Data): number {
  for (let i = 0; i < data.length; i++) if (!data.getValid(i)) return i;
  return 0;
}

function arrowScalarType(dtype: DType): DataType {
  switch (dtype) {
    case 'float32':
      return new Float32();
    case 'float64':
      return new Float64();
    case 'int32':
      return new Int32();
    case 'int64':
      return new Int64();
    case 'int8':
      return new Int8();
    case 'uint8':
      return new Uint8();
    case 'bool':
      return new Bool();
  }
}

/**
 * An Arrow column for a model output: a scalar column for [n] and [n,1],
 * fixed_size_list<dtype>[k] for [n,k,...] (flattened per row). No copy.
 */
export function tensorToColumn(name: string, t: Tensor): { field: Field; data: Data } {
  const rows = t.shape[0] ?? 0;
  const width = elementCount(t.shape.slice(1));
  if (t.dtype === 'bool') {
    // Arrow booleans are bit-packed.
    const bits = new Uint8Array(Math.ceil((rows * width) / 8));
    const src = t.data as Uint8Array;
    for (let i = 0; i < src.length; i++) if (src[i]) bits[i >> 3]! |= 1 << (i & 7);
    const child = makeData({ type: new Bool(), length: rows * width, data: bits });
    return wrap(name, child, rows, width);
  }
  const scalar = arrowScalarType(t.dtype);
  const child = makeData({ type: scalar, length: rows * width, data: t.data } as Parameters<typeof makeData>[0]);
  return wrap(name, child, rows, width);
}

function wrap(name: string, child: Data, rows: number, width: number): { field: Field; data: Data } {
  if (width === 1) return { field: new Field(name, child.type, false), data: child };
  const type = new FixedSizeList(width, new Field('item', child.type, false));
  return { field: new Field(name, type, false), data: makeData({ type, length: rows, child }) };
}
