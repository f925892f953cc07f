/**
 * Decodes one column chunk (all pages of one column in one row group) straight
 * into Arrow data, in JavaScript. Covers the columns an inference pipeline is
 * made of — bool / int32 / int64 / float32 / float64 / utf8 / binary, and
 * list or fixed_size_list of a number — in PLAIN or dictionary encoding,
 * uncompressed or Snappy, data pages v1 and v2. Everything else goes through
 * parquet-wasm (see plan.ts).
 *
 *   chunk bytes ─► page header ─► snappy ─► levels (rep, def) ─► values ─► Arrow Data
 *
 * A list<float32> column becomes one contiguous Float32Array child (the model
 * input, zero-copy). Corrupt bytes raise CorruptDataError.
 */
import type { DataType, Field , FixedSizeList, List} from 'apache-arrow';
import { Data, makeData } from 'apache-arrow';
import { bitWidthOf, decodeHybrid, listStarts } from './levels.js';
import type { ColumnChunkMeta, PageHeader } from './parquet-format.js';
import { Codec, Encoding, PageType, PhysicalType, parsePageHeader } from './parquet-format.js';
import { snappyDecompress } from './snappy.js';
import { CorruptDataError } from './thrift.js';

type NumericArray = Int32Array | BigInt64Array | Float32Array | Float64Array;

/** How a top-level field maps onto its single leaf column. Built by plan.ts. */
export interface ColumnPlan {
  readonly field: Field;
  readonly leafIndex: number;
  readonly physical: number;
  /** 'flat': the leaf is the field; 'list': one repeated level holding the leaf. */
  readonly kind: 'flat' | 'list';
  readonly maxDef: number;
  readonly maxRep: number;
  /** list: def level from which the list is non-null / has an element. */
  readonly listDef: number;
  readonly elemDef: number;
  /** fixed_size_list width, or 0. */
  readonly fixedWidth: number;
  /** BYTE_ARRAY leaves: keep as Uint8Array (binary) rather than utf8 — same bytes. */
}

/** Dense, non-null values of one page (or the dictionary). */
type Values =
  | { kind: 'num'; data: NumericArray }
  /** PLAIN numbers still as bytes (any alignment): copied straight into the output. */
  | { kind: 'raw'; bytes: Uint8Array; width: number }
  | { kind: 'bool'; data: Uint8Array }
  | { kind: 'bytes'; offsets: Int32Array; data: Uint8Array };

function numericCtor(physical: number): Int32ArrayConstructor | BigInt64ArrayConstructor | Float32ArrayConstructor | Float64ArrayConstructor {
  switch (physical) {
    case PhysicalType.INT32:
      return Int32Array;
    case PhysicalType.INT64:
      return BigInt64Array;
    case PhysicalType.FLOAT:
      return Float32Array;
    case PhysicalType.DOUBLE:
      return Float64Array;
    default:
      throw new CorruptDataError(`physical type ${physical} is not numeric`);
  }
}

function byteWidth(physical: number): number {
  return physical === PhysicalType.INT64 || physical === PhysicalType.DOUBLE ? 8 : 4;
}

/** Grows a byte buffer by doubling (utf8 / binary data). */
class ByteBuilder {
  data: Uint8Array;
  length = 0;
  constructor(initial: number) {
    this.data = new Uint8Array(Math.max(64, initial));
  }
  reserve(extra: number): void {
    const need = this.length + extra;
    if (need <= this.data.length) return;
    if (need > 0x7fffffff) throw new CorruptDataError('string column larger than 2 GiB in one row group');
    let size = this.data.length * 2;
    while (size < need) size *= 2;
    const next = new Uint8Array(Math.min(size, 0x7fffffff));
    next.set(this.data.subarray(0, this.length));
    this.data = next;
  }
}

/**
 * Collects the decoded pages of one column chunk. Flat columns put one entry
 * per row in the "slot" arrays; list columns one per element (child).
 */
class ChunkBuilder {
  /** Output slots: rows (flat) or child elements (list). */
  private slots = 0;
  private readonly num: NumericArray | undefined;
  private readonly bits: Uint8Array | undefined; // bool values as a bitmap
  private readonly offsets: Int32Array | undefined; // utf8 / binary
  private readonly bytes: ByteBuilder | undefined;
  private slotValid: Uint8Array | undefined; // validity of slots, made on first null
  private slotNulls = 0;
  // list only
  private rows = 0;
  private readonly listOffsets: Int32Array | undefined;
  private listValid: Uint8Array | undefined;
  private listNulls = 0;
  private readonly slotCapacity: number;

  constructor(
    private readonly plan: ColumnPlan,
    private readonly numRows: number,
    meta: ColumnChunkMeta,
  ) {
    const { physical } = plan;
    if (plan.kind === 'list') {
      this.listOffsets = new Int32Array(numRows + 1);
      // elements ≤ level entries; a fixed-size list holds exactly width per row
      this.slotCapacity = plan.fixedWidth > 0 ? numRows * plan.fixedWidth : meta.numValues;
    } else {
      this.slotCapacity = numRows;
    }
    if (physical === PhysicalType.BOOLEAN) this.bits = new Uint8Array((this.slotCapacity + 7) >> 3);
    else if (physical === PhysicalType.BYTE_ARRAY) {
      this.offsets = new Int32Array(this.slotCapacity + 1);
      this.bytes = new ByteBuilder(Math.min(meta.totalUncompressedSize, 1 << 30));
    } else this.num = new (numericCtor(physical))(this.slotCapacity);
  }

  private markNull(slot: number): void {
    if (this.slotValid === undefined) {
      this.slotValid = new Uint8Array((this.slotCapacity + 7) >> 3).fill(0xff);
    }
    this.slotValid[slot >> 3] = (this.slotValid[slot >> 3] as number) & ~(1 << (slot & 7));
    this.slotNulls++;
  }

  private ensureSlots(n: number): void {
    if (this.slots + n > this.slotCapacity) throw new CorruptDataError('column chunk holds more values than its metadata says');
  }

  /** Appends `count` values from `v` starting at `from` to consecutive slots. */
  private putDense(v: Values, from: number, count: number): void {
    this.ensureSlots(count);
    const at = this.slots;
    if (v.kind === 'raw' && this.num !== undefined) {
      const w = v.width;
      if ((from + count) * w > v.bytes.length) throw new CorruptDataError('page holds fewer values than its levels say');
      new Uint8Array(this.num.buffer, this.num.byteOffset + at * w, count * w).set(v.bytes.subarray(from * w, (from + count) * w));
    } else if (v.kind === 'num' && this.num !== undefined) {
      if (from + count > v.data.length) throw new CorruptDataError('page holds fewer values than its levels say');
      (this.num as Float32Array).set(v.data.subarray(from, from + count) as Float32Array, at);
    } else if (v.kind === 'bool' && this.bits !== undefined) {
      if (from + count > v.data.length) throw new CorruptDataError('page holds fewer values than its levels say');
      for (let i = 0; i < count; i++) {
        if (v.data[from + i] === 1) this.bits[(at + i) >> 3] = (this.bits[(at + i) >> 3] as number) | (1 << ((at + i) & 7));
      }
    } else if (v.kind === 'bytes' && this.offsets !== undefined && this.bytes !== undefined) {
      if (from + count > v.offsets.length - 1) throw new CorruptDataError('page holds fewer values than its levels say');
      const start = v.offsets[from] as number;
      const end = v.offsets[from + count] as number;
      const b = this.bytes;
      b.reserve(end - start);
      b.data.set(v.data.subarray(start, end), b.length);
      const shift = b.length - start;
      for (let i = 1; i <= count; i++) this.offsets[at + i] = (v.offsets[from + i] as number) + shift;
      b.length += end - start;
    } else {
      throw new CorruptDataError('page values do not match the column type');
    }
    this.slots += count;
  }

  /** A null slot: zero value, validity bit cleared. */
  private putNull(): void {
    this.ensureSlots(1);
    if (this.offsets !== undefined && this.bytes !== undefined) this.offsets[this.slots + 1] = this.bytes.length;
    this.markNull(this.slots);
    this.slots++;
  }

  /** One data page: `n` level entries, their levels (undefined = all at max) and dense values. */
  addPage(n: number, rep: Uint8Array | undefined, def: Uint8Array | undefined, values: Values): void {
    const { plan } = this;
    if (plan.kind === 'flat') {
      if (this.rows + n > this.numRows) throw new CorruptDataError('column chunk holds more rows than its row group');
      if (def === undefined) {
        this.putDense(values, 0, n);
      } else {
        let vi = 0;
        for (let i = 0; i < n; i++) {
          if (def[i] === plan.maxDef) {
            // run of present values: copy them together
            let j = i + 1;
            while (j < n && def[j] === plan.maxDef) j++;
            this.putDense(values, vi, j - i);
            vi += j - i;
            i = j - 1;
          } else {
            this.putNull();
          }
        }
      }
      this.rows += n;
      return;
    }
    // list column
    const offsets = this.listOffsets as Int32Array;
    if (rep === undefined) throw new CorruptDataError('list column without repetition levels');
    if (this.rows === 0 && n > 0 && rep[0] !== 0) throw new CorruptDataError('column chunk starts inside a list');
    if (def === undefined) {
      // every entry is a present element: mark row starts, copy values in one go
      const base = this.slots;
      for (let i = 0; i < n; i++) {
        if (rep[i] === 0) {
          if (this.rows >= this.numRows) throw new CorruptDataError('column chunk holds more rows than its row group');
          offsets[this.rows++] = base + i;
        }
      }
      this.putDense(values, 0, n);
      return;
    }
    let vi = 0;
    for (let i = 0; i < n; i++) {
      const d = def[i] as number;
      if (rep[i] === 0) {
        if (this.rows >= this.numRows) throw new CorruptDataError('column chunk holds more rows than its row group');
        offsets[this.rows] = this.slots;
        const row = this.rows++;
        if (d < plan.listDef) {
          this.markListNull(row);
          // a null fixed-size list still owns `width` child slots
          for (let k = 0; k < plan.fixedWidth; k++) this.putNull();
          continue;
        }
        if (d < plan.elemDef) continue; // empty list
      } else if (d < plan.elemDef) {
        throw new CorruptDataError('repeated entry without an element');
      }
      if (d === plan.maxDef) {
        let j = i + 1;
        while (j < n && def[j] === plan.maxDef && rep[j] !== 0) j++;
        this.putDense(values, vi, j - i);
        vi += j - i;
        i = j - 1;
      } else {
        this.putNull();
      }
    }
  }

  /**
   * A list page whose entries are all present elements (no nulls, no empty
   * lists): `markStarts` writes the row starts from the raw repetition levels.
   */
  addDenseListPage(n: number, values: Values, markStarts: (starts: Int32Array, row: number, base: number) => number): void {
    const offsets = this.listOffsets as Int32Array;
    const first = this.rows === 0;
    this.rows = markStarts(offsets, this.rows, this.slots);
    if (first && n > 0 && (this.rows === 0 || offsets[0] !== this.slots)) {
      throw new CorruptDataError('column chunk starts inside a list');
    }
    this.putDense(values, 0, n);
  }

  private markListNull(row: number): void {
    if (this.listValid === undefined) this.listValid = new Uint8Array((this.numRows + 7) >> 3).fill(0xff);
    this.listValid[row >> 3] = (this.listValid[row >> 3] as number) & ~(1 << (row & 7));
    this.listNulls++;
  }

  finish(): Data {
    const { plan, numRows } = this;
    if (this.rows !== numRows) throw new CorruptDataError(`column chunk holds ${this.rows} rows, row group has ${numRows}`);
    const type = plan.field.type as DataType;
    if (plan.kind === 'flat') return this.slotData(type, numRows);
    const offsets = this.listOffsets as Int32Array;
    offsets[numRows] = this.slots;
    const child = this.slotData((type as List | FixedSizeList).children[0]?.type as DataType, this.slots);
    const nullBitmap = this.listNulls > 0 ? this.listValid : undefined;
    if (plan.fixedWidth > 0) {
      const w = plan.fixedWidth;
      for (let r = 0; r < numRows; r++) {
        if ((offsets[r + 1] as number) - (offsets[r] as number) !== w) {
          throw new CorruptDataError(`fixed_size_list<${w}> row ${r} has ${(offsets[r + 1] as number) - (offsets[r] as number)} values`);
        }
      }
      return makeData({ type: type as FixedSizeList, length: numRows, nullCount: this.listNulls, nullBitmap, child });
    }
    return makeData({ type: type as List, length: numRows, nullCount: this.listNulls, nullBitmap, valueOffsets: offsets, child });
  }

  private slotData(type: DataType, length: number): Data {
    const nullCount = this.slotNulls;
    const nullBitmap = nullCount > 0 ? this.slotValid?.subarray(0, (length + 7) >> 3) : undefined;
    if (this.num !== undefined) {
      return new Data(type, 0, length, nullCount, [undefined, this.num.subarray(0, length), nullBitmap]);
    }
    if (this.bits !== undefined) {
      return new Data(type, 0, length, nullCount, [undefined, this.bits.subarray(0, (length + 7) >> 3), nullBitmap]);
    }
    const offsets = this.offsets as Int32Array;
    const bytes = this.bytes as ByteBuilder;
    return new Data(type, 0, length, nullCount, [offsets.subarray(0, length + 1), bytes.data.subarray(0, bytes.length), nullBitmap]);
  }
}

// ---- page values ---------------------------------------------------------------------------------

function plainValues(physical: number, bytes: Uint8Array, pos: number, end: number, count: number, typed = false): Values {
  if (physical === PhysicalType.BOOLEAN) {
    if (pos + ((count + 7) >> 3) > end) throw new CorruptDataError('page holds fewer values than its levels say');
    const data = new Uint8Array(count);
    for (let i = 0; i < count; i++) data[i] = ((bytes[pos + (i >> 3)] as number) >> (i & 7)) & 1;
    return { kind: 'bool', data };
  }
  if (physical === PhysicalType.BYTE_ARRAY) {
    const offsets = new Int32Array(count + 1);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let p = pos;
    let total = 0;
    for (let i = 0; i < count; i++) {
      if (p + 4 > end) throw new CorruptDataError('page holds fewer values than its levels say');
      const len = view.getUint32(p, true);
      p += 4 + len;
      if (p > end) throw new CorruptDataError('string value runs past the page');
      total += len;
      offsets[i + 1] = total;
    }
    // copy the strings without their length prefixes
    const data = new Uint8Array(total);
    p = pos;
    for (let i = 0; i < count; i++) {
      const len = (offsets[i + 1] as number) - (offsets[i] as number);
      const at = offsets[i] as number;
      p += 4;
      if (len < 24) for (let k = 0; k < len; k++) data[at + k] = bytes[p + k] as number;
      else data.set(bytes.subarray(p, p + len), at);
      p += len;
    }
    return { kind: 'bytes', offsets, data };
  }
  const width = byteWidth(physical);
  if (pos + count * width > end) throw new CorruptDataError('page holds fewer values than its levels say');
  if (!typed) return { kind: 'raw', bytes: bytes.subarray(pos, pos + count * width), width };
  const Ctor = numericCtor(physical);
  const start = bytes.byteOffset + pos;
  // a view when aligned, else one copy
  if (start % width === 0) return { kind: 'num', data: new Ctor(bytes.buffer as ArrayBuffer, start, count) };
  const data = new Ctor(count);
  new Uint8Array(data.buffer).set(bytes.subarray(pos, pos + count * width));
  return { kind: 'num', data };
}

function dictionaryValues(dict: Values, bytes: Uint8Array, pos: number, end: number, count: number): Values {
  if (pos >= end && count > 0) throw new CorruptDataError('dictionary page indices missing');
  const bitWidth = bytes[pos] as number;
  const idx = new Int32Array(count);
  decodeHybrid(bytes, pos + 1, end, bitWidth, count, idx);
  if (dict.kind === 'raw') throw new CorruptDataError('dictionary not decoded');
  const size = dict.kind === 'bytes' ? dict.offsets.length - 1 : dict.data.length;
  for (let i = 0; i < count; i++) {
    const k = idx[i] as number;
    if (k < 0 || k >= size) throw new CorruptDataError(`dictionary index ${k} out of range (dictionary has ${size})`);
  }
  if (dict.kind === 'num') {
    const Ctor = dict.data.constructor as Float64ArrayConstructor;
    const src = dict.data as Float64Array;
    const data = new Ctor(count);
    for (let i = 0; i < count; i++) data[i] = src[idx[i] as number] as number;
    return { kind: 'num', data: data as NumericArray };
  }
  if (dict.kind === 'bool') {
    const data = new Uint8Array(count);
    for (let i = 0; i < count; i++) data[i] = dict.data[idx[i] as number] as number;
    return { kind: 'bool', data };
  }
  const offsets = new Int32Array(count + 1);
  let total = 0;
  for (let i = 0; i < count; i++) {
    const k = idx[i] as number;
    total += (dict.offsets[k + 1] as number) - (dict.offsets[k] as number);
    offsets[i + 1] = total;
  }
  const data = new Uint8Array(total);
  for (let i = 0; i < count; i++) {
    const k = idx[i] as number;
    const s = dict.offsets[k] as number;
    const len = (dict.offsets[k + 1] as number) - s;
    const at = offsets[i] as number;
    if (len < 24) for (let j = 0; j < len; j++) data[at + j] = dict.data[s + j] as number;
    else data.set(dict.data.subarray(s, s + len), at);
  }
  return { kind: 'bytes', offsets, data };
}

/** Reusable page buffer: data pages are consumed before the next one is decoded. */
export class Scratch {
  private buf = new Uint8Array(0);
  take(size: number): Uint8Array {
    if (this.buf.length < size) this.buf = new Uint8Array(Math.max(size, this.buf.length * 2));
    return this.buf.subarray(0, size);
  }
}

function decompress(codec: number, body: Uint8Array, size: number, scratch?: Scratch): Uint8Array {
  if (codec === Codec.UNCOMPRESSED) {
    if (body.length !== size) throw new CorruptDataError(`page is ${body.length} bytes, header says ${size}`);
    return body;
  }
  if (codec === Codec.SNAPPY) {
    const out = scratch === undefined ? new Uint8Array(size) : scratch.take(size);
    snappyDecompress(body, out);
    return out;
  }
  throw new CorruptDataError(`unsupported compression codec ${codec}`);
}

/** Decodes one column chunk (`bytes` = the chunk's pages) into Arrow data of `numRows` rows. */
export function decodeColumnChunk(
  bytes: Uint8Array,
  meta: ColumnChunkMeta,
  plan: ColumnPlan,
  numRows: number,
  scratch: Scratch = new Scratch(),
): Data {
  if (meta.type !== plan.physical) throw new CorruptDataError(`column chunk type ${meta.type} differs from the schema's ${plan.physical}`);
  const builder = new ChunkBuilder(plan, numRows, meta);
  const repWidth = bitWidthOf(plan.maxRep);
  const defWidth = bitWidthOf(plan.maxDef);
  let dict: Values | undefined;
  let levelsSeen = 0;
  let pos = 0;
  let repBuf = new Uint8Array(0);
  let defBuf = new Uint8Array(0);
  while (levelsSeen < meta.numValues) {
    if (pos >= bytes.length) throw new CorruptDataError(`column chunk ends after ${levelsSeen} of ${meta.numValues} values`);
    const header: PageHeader = parsePageHeader(bytes, pos);
    pos += header.headerSize;
    const body = bytes.subarray(pos, pos + header.compressedSize);
    if (body.length !== header.compressedSize) throw new CorruptDataError('page runs past the column chunk');
    pos += header.compressedSize;

    if (header.type === PageType.DICTIONARY_PAGE) {
      if (header.encoding !== Encoding.PLAIN && header.encoding !== Encoding.PLAIN_DICTIONARY) {
        throw new CorruptDataError(`unsupported dictionary encoding ${header.encoding}`);
      }
      const page = decompress(meta.codec, body, header.uncompressedSize);
      dict = plainValues(plan.physical, page, 0, page.length, header.numValues, true);
      continue;
    }
    if (header.type !== PageType.DATA_PAGE && header.type !== PageType.DATA_PAGE_V2) continue; // index pages
    const n = header.numValues;
    if (n < 0 || levelsSeen + n > meta.numValues) throw new CorruptDataError('page holds more values than the column chunk');
    if (repBuf.length < n && plan.maxRep > 0) repBuf = new Uint8Array(n);
    if (defBuf.length < n && plan.maxDef > 0) defBuf = new Uint8Array(n);

    let page: Uint8Array;
    let p = 0;
    // repetition levels: located first, decoded once we know whether the page has nulls
    let repSection: { buf: Uint8Array; start: number; end: number } | undefined;
    let def: Uint8Array | undefined;
    let allDefined = true;
    if (header.v2 !== undefined) {
      const { repLength, defLength, isCompressed } = header.v2;
      const levelBytes = repLength + defLength;
      if (plan.maxRep > 0) repSection = { buf: body, start: 0, end: repLength };
      if (plan.maxDef > 0) {
        allDefined = decodeHybrid(body, repLength, levelBytes, defWidth, n, defBuf, plan.maxDef);
        def = defBuf;
      }
      const valuesBody = body.subarray(levelBytes);
      page = isCompressed ? decompress(meta.codec, valuesBody, header.uncompressedSize - levelBytes, scratch) : valuesBody;
    } else {
      page = decompress(meta.codec, body, header.uncompressedSize, scratch);
      const view = new DataView(page.buffer, page.byteOffset, page.byteLength);
      const section = (encoding: number): { start: number; end: number } => {
        if (encoding !== Encoding.RLE) throw new CorruptDataError(`unsupported level encoding ${encoding}`);
        if (p + 4 > page.length) throw new CorruptDataError('page ends inside its levels');
        const len = view.getUint32(p, true);
        const start = p + 4;
        const end = start + len;
        if (end > page.length) throw new CorruptDataError('levels run past the page');
        p = end;
        return { start, end };
      };
      if (plan.maxRep > 0) repSection = { buf: page, ...section(header.repEncoding) };
      if (plan.maxDef > 0) {
        const d = section(header.defEncoding);
        allDefined = decodeHybrid(page, d.start, d.end, defWidth, n, defBuf, plan.maxDef);
        def = defBuf;
      }
    }
    let present = n;
    if (!allDefined && def !== undefined) {
      present = 0;
      for (let i = 0; i < n; i++) if (def[i] === plan.maxDef) present++;
    }
    let values: Values;
    const enc = header.encoding;
    if (enc === Encoding.PLAIN) {
      values = plainValues(plan.physical, page, p, page.length, present);
    } else if (enc === Encoding.RLE_DICTIONARY || enc === Encoding.PLAIN_DICTIONARY) {
      if (dict === undefined) throw new CorruptDataError('dictionary-encoded page without a dictionary page');
      values = dictionaryValues(dict, page, p, page.length, present);
    } else if (enc === Encoding.RLE && plan.physical === PhysicalType.BOOLEAN) {
      // RLE booleans: 4-byte length, then hybrid with bit width 1
      if (p + 4 > page.length) throw new CorruptDataError('page ends inside its values');
      const len = new DataView(page.buffer, page.byteOffset, page.byteLength).getUint32(p, true);
      const data = new Uint8Array(present);
      decodeHybrid(page, p + 4, Math.min(page.length, p + 4 + len), 1, present, data);
      values = { kind: 'bool', data };
    } else {
      throw new CorruptDataError(`unsupported page encoding ${enc}`);
    }
    if (plan.kind === 'list' && allDefined && plan.maxRep === 1 && repSection !== undefined) {
      const r = repSection;
      builder.addDenseListPage(n, values, (starts, row, base) => listStarts(r.buf, r.start, r.end, n, base, starts, row));
    } else {
      let rep: Uint8Array | undefined;
      if (repSection !== undefined) {
        decodeHybrid(repSection.buf, repSection.start, repSection.end, repWidth, n, repBuf);
        rep = repBuf.subarray(0, n);
      }
      builder.addPage(n, rep, allDefined ? undefined : def?.subarray(0, n), values);
    }
    levelsSeen += n;
  }
  return builder.finish();
}
