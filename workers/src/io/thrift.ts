/**
 * A small reader for the Thrift compact protocol, which Parquet uses for its
 * footer (FileMetaData) and page headers. It decodes a struct into a map from
 * field id to value without knowing the schema; parquet-format.ts gives the
 * fields their names. Every read is bounds-checked: corrupt or truncated bytes
 * raise {@link CorruptDataError}, never an out-of-range read, a hang or a stack
 * overflow.
 */

/** Bytes that do not decode. Internal: the reader wraps it in a DataIOError naming the file. */
export class CorruptDataError extends Error {
  override name = 'CorruptDataError';
}

/** A decoded compact-protocol value. Structs are maps from field id. */
export type ThriftValue = boolean | number | bigint | Uint8Array | ThriftValue[] | ThriftStruct;
export type ThriftStruct = Map<number, ThriftValue>;

const T_STOP = 0;
const T_TRUE = 1;
const T_FALSE = 2;
const T_BYTE = 3;
const T_I16 = 4;
const T_I32 = 5;
const T_I64 = 6;
const T_DOUBLE = 7;
const T_BINARY = 8;
const T_LIST = 9;
const T_SET = 10;
const T_MAP = 11;
const T_STRUCT = 12;

/** Deeper nesting than this is certainly corrupt (Parquet's footer nests ~6 levels). */
const MAX_DEPTH = 64;

export class ThriftReader {
  pos: number;
  private readonly view: DataView;

  constructor(
    private readonly bytes: Uint8Array,
    start = 0,
  ) {
    this.pos = start;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Reads one struct (up to and including its STOP byte). */
  readStruct(depth = 0): ThriftStruct {
    if (depth > MAX_DEPTH) throw new CorruptDataError('thrift structure nested too deeply');
    const out: ThriftStruct = new Map();
    let lastId = 0;
    for (;;) {
      const header = this.byte();
      const type = header & 0x0f;
      if (type === T_STOP) return out;
      const delta = header >> 4;
      const id = delta === 0 ? this.zigzag32() : lastId + delta;
      lastId = id;
      if (type === T_TRUE || type === T_FALSE) out.set(id, type === T_TRUE);
      else out.set(id, this.readValue(type, depth));
    }
  }

  private readValue(type: number, depth: number): ThriftValue {
    switch (type) {
      case T_TRUE:
      case T_FALSE:
        // only inside lists: one byte per element
        return this.byte() === T_TRUE;
      case T_BYTE: {
        const b = this.byte();
        return b > 127 ? b - 256 : b;
      }
      case T_I16:
      case T_I32:
        return this.zigzag32();
      case T_I64:
        return this.zigzag64();
      case T_DOUBLE: {
        this.need(8);
        const v = this.view.getFloat64(this.pos, true);
        this.pos += 8;
        return v;
      }
      case T_BINARY: {
        const len = this.varint32();
        this.need(len);
        const v = this.bytes.subarray(this.pos, this.pos + len);
        this.pos += len;
        return v;
      }
      case T_LIST:
      case T_SET: {
        const header = this.byte();
        let size = header >> 4;
        if (size === 15) size = this.varint32();
        const elemType = header & 0x0f;
        // every element takes at least one byte: a larger count is corrupt
        this.need(size);
        const list: ThriftValue[] = [];
        for (let i = 0; i < size; i++) list.push(this.readValue(elemType, depth + 1));
        return list;
      }
      case T_MAP: {
        const size = this.varint32();
        if (size === 0) return new Map();
        const kv = this.byte();
        this.need(size);
        const map: ThriftStruct = new Map();
        // Parquet has no maps; keep entries as numbered pairs so nothing is lost.
        for (let i = 0; i < size; i++) {
          map.set(2 * i, this.readValue(kv >> 4, depth + 1));
          map.set(2 * i + 1, this.readValue(kv & 0x0f, depth + 1));
        }
        return map;
      }
      case T_STRUCT:
        return this.readStruct(depth + 1);
      default:
        throw new CorruptDataError(`thrift: unknown field type ${type} at byte ${this.pos}`);
    }
  }

  private need(n: number): void {
    if (n < 0 || this.pos + n > this.bytes.length) {
      throw new CorruptDataError(`thrift: needs ${n} bytes at ${this.pos}, ${this.bytes.length - this.pos} left`);
    }
  }

  private byte(): number {
    const b = this.bytes[this.pos];
    if (b === undefined) throw new CorruptDataError('thrift: unexpected end of data');
    this.pos++;
    return b;
  }

  private varint32(): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) break;
      shift += 7;
      if (shift > 35) throw new CorruptDataError('thrift: varint too long');
    }
    if (result > 0xffffffff) throw new CorruptDataError('thrift: varint out of range');
    return result;
  }

  private zigzag32(): number {
    const n = this.varint32();
    return n % 2 === 0 ? n / 2 : -(n + 1) / 2;
  }

  private zigzag64(): number | bigint {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      const b = this.byte();
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) break;
      shift += 7n;
      if (shift > 63n) throw new CorruptDataError('thrift: varint too long');
    }
    const v = (result >> 1n) ^ -(result & 1n);
    // small values (all offsets, sizes and counts in real files) as plain numbers
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
}

// ---- typed access to decoded structs --------------------------------------------------------

export function optInt(s: ThriftStruct, id: number): number | undefined {
  const v = s.get(id);
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    throw new CorruptDataError(`thrift: field ${id} is not an integer`);
  }
  return v;
}

export function int(s: ThriftStruct, id: number, what: string): number {
  const v = optInt(s, id);
  if (v === undefined) throw new CorruptDataError(`${what} is missing`);
  return v;
}

export function optBool(s: ThriftStruct, id: number): boolean | undefined {
  const v = s.get(id);
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw new CorruptDataError(`thrift: field ${id} is not a boolean`);
  return v;
}

const utf8 = new TextDecoder('utf-8', { fatal: false });

export function optString(s: ThriftStruct, id: number): string | undefined {
  const v = s.get(id);
  if (v === undefined) return undefined;
  if (!(v instanceof Uint8Array)) throw new CorruptDataError(`thrift: field ${id} is not a string`);
  return utf8.decode(v);
}

export function optStruct(s: ThriftStruct, id: number): ThriftStruct | undefined {
  const v = s.get(id);
  if (v === undefined) return undefined;
  if (!(v instanceof Map)) throw new CorruptDataError(`thrift: field ${id} is not a struct`);
  return v;
}

export function list(s: ThriftStruct, id: number): ThriftValue[] {
  const v = s.get(id);
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new CorruptDataError(`thrift: field ${id} is not a list`);
  return v;
}

export function structList(s: ThriftStruct, id: number): ThriftStruct[] {
  return list(s, id).map((v) => {
    if (!(v instanceof Map)) throw new CorruptDataError(`thrift: field ${id} holds a non-struct`);
    return v;
  });
}
