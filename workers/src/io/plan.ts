/**
 * Decides, per top-level field, whether the JavaScript decoder (decode.ts)
 * handles it, and what Arrow type the field has.
 *
 * The Arrow schema comes from the `ARROW:schema` hint that Arrow writers
 * (pyarrow, arrow-rs, parquet-wasm) store in the footer; without one it is
 * derived from the Parquet schema for the types we decode. A field is "fast"
 * when its Parquet shape, physical type, encodings and codec are ones decode.ts
 * covers; any other field sends the read through parquet-wasm.
 */
import type { DataType } from 'apache-arrow';
import { Binary, Bool, Field, FixedSizeList, Float32, Float64, Int32, Int64, List, RecordBatchReader, Schema, Type, Utf8 } from 'apache-arrow';
import type { ColumnPlan } from './decode.js';
import type { FileMeta, SchemaNode } from './parquet-format.js';
import { Codec, ConvertedType, Encoding, PhysicalType, Repetition, schemaTree } from './parquet-format.js';

export interface FilePlan {
  /** The Arrow schema, or undefined when it can only come from parquet-wasm. */
  readonly schema: Schema | undefined;
  /** Plans of the fields decode.ts handles, by field name. */
  readonly fast: ReadonlyMap<string, ColumnPlan>;
  /** Top-level field names in file order. */
  readonly names: readonly string[];
}

const FAST_ENCODINGS = new Set<number>([Encoding.PLAIN, Encoding.PLAIN_DICTIONARY, Encoding.RLE, Encoding.RLE_DICTIONARY]);

export function planFile(meta: FileMeta): FilePlan {
  const root = schemaTree(meta.schema);
  const names = root.children.map((c) => c.element.name);
  const hinted = arrowHint(meta.keyValue.get('ARROW:schema'), names);
  const fields: (Field | undefined)[] = root.children.map((node, i) => hinted?.fields[i] ?? deriveField(node));
  const fast = new Map<string, ColumnPlan>();
  root.children.forEach((node, i) => {
    const field = fields[i];
    if (field === undefined) return;
    const plan = planField(node, field);
    if (plan !== undefined && chunksDecodable(meta, plan.leafIndex)) {
      fast.set(field.name, plan);
      fields[i] = plan.field;
    }
  });
  const complete = fields.every((f): f is Field => f !== undefined);
  return {
    schema: complete ? new Schema(fields, hinted?.metadata) : undefined,
    fast,
    names,
  };
}

/** Parses the base64 IPC schema message Arrow writers store; undefined if absent or unusable. */
function arrowHint(b64: string | undefined, names: readonly string[]): Schema | undefined {
  if (b64 === undefined) return undefined;
  try {
    const reader = RecordBatchReader.from(Buffer.from(b64, 'base64'));
    reader.open();
    const schema = reader.schema as Schema | undefined;
    if (schema === undefined || schema.fields.length !== names.length) return undefined;
    if (schema.fields.some((f, i) => f.name !== names[i])) return undefined;
    return schema;
  } catch {
    return undefined; // a hint we cannot parse is ignored, as Arrow readers do
  }
}

function isList(node: SchemaNode): boolean {
  const e = node.element;
  return e.convertedType === ConvertedType.LIST || e.logicalType?.has(3) === true;
}

/** The Arrow type arrow-rs gives a leaf, for the leaves we decode; undefined otherwise. */
function leafType(node: SchemaNode): DataType | undefined {
  const e = node.element;
  const logical = e.logicalType;
  const plainInt = (bits: number): boolean => {
    if (e.convertedType !== undefined && e.convertedType !== (bits === 32 ? ConvertedType.INT_32 : ConvertedType.INT_64)) return false;
    if (logical === undefined) return true;
    const int = logical.get(10); // IntType { bitWidth, isSigned }
    return int instanceof Map && int.get(1) === bits && int.get(2) === true;
  };
  switch (e.type) {
    case PhysicalType.BOOLEAN:
      return e.convertedType === undefined && logical === undefined ? new Bool() : undefined;
    case PhysicalType.INT32:
      return plainInt(32) ? new Int32() : undefined;
    case PhysicalType.INT64:
      return plainInt(64) ? new Int64() : undefined;
    case PhysicalType.FLOAT:
      return e.convertedType === undefined && logical === undefined ? new Float32() : undefined;
    case PhysicalType.DOUBLE:
      return e.convertedType === undefined && logical === undefined ? new Float64() : undefined;
    case PhysicalType.BYTE_ARRAY:
      if (e.convertedType === ConvertedType.UTF8 || logical?.has(1) === true) return new Utf8();
      return e.convertedType === undefined && logical === undefined ? new Binary() : undefined;
    default:
      return undefined;
  }
}

function deriveField(node: SchemaNode): Field | undefined {
  const e = node.element;
  const nullable = e.repetition !== Repetition.REQUIRED;
  if (e.numChildren === 0) {
    if (e.repetition === Repetition.REPEATED) return undefined;
    const type = leafType(node);
    return type === undefined ? undefined : new Field(e.name, type, nullable);
  }
  const shape = listShape(node);
  if (shape === undefined) return undefined;
  const child = leafType(shape.leaf);
  if (child === undefined) return undefined;
  return new Field(e.name, new List(new Field(shape.leaf.element.name, child, shape.leaf.element.repetition === Repetition.OPTIONAL)), nullable);
}

/** A LIST-annotated group in the 3-level (or legacy 2-level) form around one primitive leaf. */
function listShape(node: SchemaNode): { repeated: SchemaNode; leaf: SchemaNode } | undefined {
  if (!isList(node) || node.element.repetition === Repetition.REPEATED || node.children.length !== 1) return undefined;
  const repeated = node.children[0];
  if (repeated === undefined || repeated.element.repetition !== Repetition.REPEATED) return undefined;
  if (repeated.children.length === 0) return { repeated, leaf: repeated }; // 2-level: repeated primitive
  if (repeated.children.length !== 1) return undefined;
  const leaf = repeated.children[0];
  if (leaf === undefined || leaf.children.length !== 0 || leaf.element.repetition === Repetition.REPEATED) return undefined;
  return { repeated, leaf };
}

/** Whether `arrow` is the Arrow type decode.ts produces from this physical type. */
function matches(arrow: DataType, physical: number | undefined): boolean {
  switch (arrow.typeId) {
    case Type.Bool:
      return physical === PhysicalType.BOOLEAN;
    case Type.Int: {
      const t = arrow as Int32 | Int64;
      if (!t.isSigned) return false;
      return (t.bitWidth === 32 && physical === PhysicalType.INT32) || (t.bitWidth === 64 && physical === PhysicalType.INT64);
    }
    case Type.Float: {
      const t = arrow as Float32 | Float64;
      return (t.precision === 1 && physical === PhysicalType.FLOAT) || (t.precision === 2 && physical === PhysicalType.DOUBLE);
    }
    case Type.Utf8:
    case Type.Binary:
      return physical === PhysicalType.BYTE_ARRAY;
    default:
      return false;
  }
}

function planField(node: SchemaNode, field: Field): ColumnPlan | undefined {
  const e = node.element;
  if (e.numChildren === 0) {
    if (e.repetition === Repetition.REPEATED || leafType(node) === undefined) return undefined;
    if (!matches(field.type as DataType, e.type)) return undefined;
    return {
      field,
      leafIndex: node.leafIndex,
      physical: e.type ?? -1,
      kind: 'flat',
      maxDef: node.defLevel,
      maxRep: 0,
      listDef: 0,
      elemDef: 0,
      fixedWidth: 0,
    };
  }
  const shape = listShape(node);
  if (shape === undefined || leafType(shape.leaf) === undefined) return undefined;
  const type = field.type as DataType;
  let fixedWidth = 0;
  let childType: DataType;
  if (type.typeId === Type.List) {
    childType = (type as List).children[0]?.type as DataType;
  } else if (type.typeId === Type.FixedSizeList) {
    fixedWidth = (type as FixedSizeList).listSize;
    if (fixedWidth <= 0) return undefined;
    childType = (type as FixedSizeList).children[0]?.type as DataType;
  } else {
    return undefined;
  }
  if (childType === undefined || !matches(childType, shape.leaf.element.type)) return undefined;
  // Name the child after the Parquet leaf, as arrow-rs (the parquet-wasm path) does.
  const leafEl = shape.leaf.element;
  const childField = new Field(leafEl.name, childType, (type.children[0] as Field).nullable);
  const renamed = fixedWidth > 0 ? new FixedSizeList(fixedWidth, childField) : new List(childField);
  return {
    field: new Field(field.name, renamed, field.nullable, field.metadata),
    leafIndex: shape.leaf.leafIndex,
    physical: leafEl.type ?? -1,
    kind: 'list',
    maxDef: shape.leaf.defLevel,
    maxRep: shape.leaf.repLevel,
    listDef: node.defLevel,
    elemDef: shape.repeated.defLevel,
    fixedWidth,
  };
}

function chunksDecodable(meta: FileMeta, leafIndex: number): boolean {
  return meta.rowGroups.every((rg) => {
    const c = rg.columns[leafIndex];
    if (c === undefined) return false;
    if (c.codec !== Codec.UNCOMPRESSED && c.codec !== Codec.SNAPPY) return false;
    return c.encodings.every((e) => FAST_ENCODINGS.has(e));
  });
}
