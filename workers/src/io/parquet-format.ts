/**
 * Parquet file structure: the footer (FileMetaData), the schema tree and page
 * headers, decoded from Thrift with every offset and count checked against the
 * file size. Field ids follow parquet-format's parquet.thrift.
 */
import type { FileHandle } from 'node:fs/promises';
import type { ThriftStruct } from './thrift.js';
import { CorruptDataError, ThriftReader, int, list, optBool, optInt, optString, optStruct, structList } from './thrift.js';

export const PhysicalType = {
  BOOLEAN: 0,
  INT32: 1,
  INT64: 2,
  INT96: 3,
  FLOAT: 4,
  DOUBLE: 5,
  BYTE_ARRAY: 6,
  FIXED_LEN_BYTE_ARRAY: 7,
} as const;

export const Repetition = { REQUIRED: 0, OPTIONAL: 1, REPEATED: 2 } as const;

export const Encoding = {
  PLAIN: 0,
  PLAIN_DICTIONARY: 2,
  RLE: 3,
  BIT_PACKED: 4,
  DELTA_BINARY_PACKED: 5,
  DELTA_LENGTH_BYTE_ARRAY: 6,
  DELTA_BYTE_ARRAY: 7,
  RLE_DICTIONARY: 8,
  BYTE_STREAM_SPLIT: 9,
} as const;

export const Codec = { UNCOMPRESSED: 0, SNAPPY: 1, GZIP: 2, LZO: 3, BROTLI: 4, LZ4: 5, ZSTD: 6, LZ4_RAW: 7 } as const;

export const PageType = { DATA_PAGE: 0, INDEX_PAGE: 1, DICTIONARY_PAGE: 2, DATA_PAGE_V2: 3 } as const;

/** ConvertedType values we look at. */
export const ConvertedType = { UTF8: 0, LIST: 3, INT_32: 17, INT_64: 18 } as const;

export interface SchemaElement {
  readonly name: string;
  readonly type: number | undefined;
  readonly repetition: number | undefined;
  readonly numChildren: number;
  readonly convertedType: number | undefined;
  /** Raw LogicalType union (field id of the set member → its struct). */
  readonly logicalType: ThriftStruct | undefined;
}

export interface ColumnChunkMeta {
  readonly type: number;
  readonly encodings: readonly number[];
  readonly path: readonly string[];
  readonly codec: number;
  /** Number of level entries (values including nulls and list slots). */
  readonly numValues: number;
  readonly totalCompressedSize: number;
  readonly totalUncompressedSize: number;
  /** Where the chunk's first page starts (dictionary page if any). */
  readonly start: number;
}

export interface RowGroupMeta {
  readonly numRows: number;
  readonly columns: readonly ColumnChunkMeta[];
}

export interface FileMeta {
  readonly numRows: number;
  readonly schema: readonly SchemaElement[];
  readonly rowGroups: readonly RowGroupMeta[];
  readonly keyValue: ReadonlyMap<string, string>;
  readonly createdBy: string | undefined;
}

/** One node of the schema tree. Leaves are columns, numbered in file order. */
export interface SchemaNode {
  readonly element: SchemaElement;
  readonly children: readonly SchemaNode[];
  /** Leaf index (column chunk index) for leaves, -1 for groups. */
  readonly leafIndex: number;
  /** Definition / repetition levels reached at this node (counting itself). */
  readonly defLevel: number;
  readonly repLevel: number;
}

const MAGIC = 0x31524150; // "PAR1" little-endian
const MAGIC_ENCRYPTED = 0x45524150; // "PARE"

/** Reads and validates the footer of an open file of `size` bytes. */
export async function readFileMeta(handle: FileHandle, size: number): Promise<FileMeta> {
  if (size < 12) throw new CorruptDataError(`not a Parquet file (${size} bytes, too short)`);
  const head = Buffer.alloc(4);
  const tail = Buffer.alloc(8);
  await readExactly(handle, head, 0);
  await readExactly(handle, tail, size - 8);
  const headMagic = head.readUInt32LE(0);
  const tailMagic = tail.readUInt32LE(4);
  if (headMagic === MAGIC_ENCRYPTED || tailMagic === MAGIC_ENCRYPTED) {
    throw new CorruptDataError('encrypted Parquet files are not supported');
  }
  if (headMagic !== MAGIC) throw new CorruptDataError('not a Parquet file (bad magic bytes)');
  if (tailMagic !== MAGIC) throw new CorruptDataError('truncated or not a Parquet file (no PAR1 at the end)');
  const footerLength = tail.readUInt32LE(0);
  if (footerLength > size - 12) {
    throw new CorruptDataError(`corrupt footer (length ${footerLength} exceeds the file size ${size})`);
  }
  const footer = Buffer.alloc(footerLength);
  await readExactly(handle, footer, size - 8 - footerLength);
  try {
    return parseFileMeta(footer, size - 8 - footerLength);
  } catch (err) {
    if (err instanceof CorruptDataError) throw new CorruptDataError(`corrupt footer (${err.message})`);
    throw err;
  }
}

/** Reads exactly buf.length bytes at `position`, failing on a short read. */
export async function readExactly(handle: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await handle.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) throw new CorruptDataError(`file ends early (wanted ${buf.length} bytes at offset ${position})`);
    done += bytesRead;
  }
}

/** Parses a footer's bytes (without its length and magic); `dataEnd` is where the footer starts in the file. */
export function parseFileMeta(footer: Uint8Array, dataEnd: number): FileMeta {
  const s = new ThriftReader(footer).readStruct();
  const numRows = int(s, 3, 'num_rows');
  if (numRows < 0) throw new CorruptDataError(`num_rows is ${numRows}`);
  const schema = structList(s, 2).map(parseSchemaElement);
  if (schema.length === 0) throw new CorruptDataError('empty schema');
  const leaves = countLeaves(schema);
  let rowsSeen = 0;
  const rowGroups = structList(s, 4).map((rg, g) => {
    const rows = int(rg, 3, `row group ${g} num_rows`);
    if (rows < 0) throw new CorruptDataError(`row group ${g} has ${rows} rows`);
    rowsSeen += rows;
    const columns = structList(rg, 1).map((cc, c) => parseColumnChunk(cc, `row group ${g} column ${c}`, dataEnd));
    if (columns.length !== leaves) {
      throw new CorruptDataError(`row group ${g} has ${columns.length} column chunks, schema has ${leaves} columns`);
    }
    return { numRows: rows, columns };
  });
  if (rowsSeen !== numRows) throw new CorruptDataError(`row groups hold ${rowsSeen} rows, footer says ${numRows}`);
  const keyValue = new Map<string, string>();
  for (const kv of structList(s, 5)) {
    const key = optString(kv, 1);
    if (key !== undefined) keyValue.set(key, optString(kv, 2) ?? '');
  }
  return { numRows, schema, rowGroups, keyValue, createdBy: optString(s, 6) };
}

function parseSchemaElement(e: ThriftStruct): SchemaElement {
  const numChildren = optInt(e, 5) ?? 0;
  if (numChildren < 0) throw new CorruptDataError(`schema element has ${numChildren} children`);
  return {
    name: optString(e, 4) ?? '',
    type: optInt(e, 1),
    repetition: optInt(e, 3),
    numChildren,
    convertedType: optInt(e, 6),
    logicalType: optStruct(e, 10),
  };
}

function parseColumnChunk(cc: ThriftStruct, what: string, dataEnd: number): ColumnChunkMeta {
  if (optString(cc, 1) !== undefined) throw new CorruptDataError(`${what} lives in another file (file_path is set)`);
  const m = optStruct(cc, 3);
  if (m === undefined) throw new CorruptDataError(`${what} has no metadata`);
  const dataPageOffset = int(m, 9, `${what} data_page_offset`);
  const dictOffset = optInt(m, 11);
  // Some writers put 0 or a bogus value here when there is no dictionary page.
  const start = dictOffset !== undefined && dictOffset > 0 && dictOffset < dataPageOffset ? dictOffset : dataPageOffset;
  const totalCompressedSize = int(m, 7, `${what} total_compressed_size`);
  const numValues = int(m, 5, `${what} num_values`);
  // An empty chunk (a 0-row row group, as pyarrow writes for an empty table) is never read.
  if (numValues !== 0 && (start < 4 || totalCompressedSize < 0 || start + totalCompressedSize > dataEnd || numValues < 0)) {
    throw new CorruptDataError(`${what} points outside the file (offset ${start}, ${totalCompressedSize} bytes)`);
  }
  return {
    type: int(m, 1, `${what} type`),
    encodings: list(m, 2).map((v) => {
      if (typeof v !== 'number') throw new CorruptDataError(`${what} has a bad encoding list`);
      return v;
    }),
    path: list(m, 3).map((v) => {
      if (!(v instanceof Uint8Array)) throw new CorruptDataError(`${what} has a bad path`);
      return new TextDecoder().decode(v);
    }),
    codec: int(m, 4, `${what} codec`),
    numValues,
    totalCompressedSize,
    totalUncompressedSize: int(m, 6, `${what} total_uncompressed_size`),
    start,
  };
}

function countLeaves(schema: readonly SchemaElement[]): number {
  return schema.reduce((n, e, i) => (i > 0 && e.numChildren === 0 ? n + 1 : n), 0);
}

/** Builds the schema tree; the root's children are the top-level fields. */
export function schemaTree(schema: readonly SchemaElement[]): SchemaNode {
  let next = 0;
  let leaf = 0;
  const build = (defParent: number, repParent: number, depth: number): SchemaNode => {
    if (depth > 64) throw new CorruptDataError('corrupt footer (schema nested too deeply)');
    const index = next++;
    const element = schema[index];
    if (element === undefined) throw new CorruptDataError('corrupt footer (schema has fewer elements than its children say)');
    const root = index === 0;
    const defLevel = defParent + (!root && element.repetition !== Repetition.REQUIRED ? 1 : 0);
    const repLevel = repParent + (!root && element.repetition === Repetition.REPEATED ? 1 : 0);
    const children: SchemaNode[] = [];
    for (let i = 0; i < element.numChildren; i++) children.push(build(defLevel, repLevel, depth + 1));
    const isLeaf = !root && element.numChildren === 0;
    if (isLeaf && element.type === undefined) throw new CorruptDataError(`corrupt footer (column "${element.name}" has no type)`);
    return { element, children, leafIndex: isLeaf ? leaf++ : -1, defLevel, repLevel };
  };
  const root = build(0, 0, 0);
  if (next !== schema.length) throw new CorruptDataError('corrupt footer (schema has more elements than its tree)');
  return root;
}

// ---- pages ------------------------------------------------------------------------------------

export interface PageHeader {
  readonly type: number;
  readonly uncompressedSize: number;
  readonly compressedSize: number;
  /** Number of level entries (V1 and V2 data pages) or dictionary entries. */
  readonly numValues: number;
  readonly encoding: number;
  /** V1 data pages: level encodings. */
  readonly defEncoding: number;
  readonly repEncoding: number;
  /** V2 data pages. */
  readonly v2?: { readonly defLength: number; readonly repLength: number; readonly isCompressed: boolean };
  /** Bytes taken by the header itself. */
  readonly headerSize: number;
}

export function parsePageHeader(bytes: Uint8Array, pos: number): PageHeader {
  const r = new ThriftReader(bytes, pos);
  const s = r.readStruct();
  const type = int(s, 1, 'page type');
  const uncompressedSize = int(s, 2, 'uncompressed_page_size');
  const compressedSize = int(s, 3, 'compressed_page_size');
  if (uncompressedSize < 0 || compressedSize < 0) throw new CorruptDataError('negative page size');
  const base = { type, uncompressedSize, compressedSize, headerSize: r.pos - pos };
  if (type === PageType.DATA_PAGE) {
    const d = optStruct(s, 5);
    if (d === undefined) throw new CorruptDataError('data page without data_page_header');
    return {
      ...base,
      numValues: int(d, 1, 'num_values'),
      encoding: int(d, 2, 'encoding'),
      defEncoding: int(d, 3, 'definition_level_encoding'),
      repEncoding: int(d, 4, 'repetition_level_encoding'),
    };
  }
  if (type === PageType.DICTIONARY_PAGE) {
    const d = optStruct(s, 7);
    if (d === undefined) throw new CorruptDataError('dictionary page without dictionary_page_header');
    return { ...base, numValues: int(d, 1, 'num_values'), encoding: int(d, 2, 'encoding'), defEncoding: 0, repEncoding: 0 };
  }
  if (type === PageType.DATA_PAGE_V2) {
    const d = optStruct(s, 8);
    if (d === undefined) throw new CorruptDataError('data page v2 without data_page_header_v2');
    const defLength = int(d, 5, 'definition_levels_byte_length');
    const repLength = int(d, 6, 'repetition_levels_byte_length');
    if (defLength < 0 || repLength < 0 || defLength + repLength > compressedSize) {
      throw new CorruptDataError('data page v2 level lengths exceed the page');
    }
    return {
      ...base,
      numValues: int(d, 1, 'num_values'),
      encoding: int(d, 4, 'encoding'),
      defEncoding: Encoding.RLE,
      repEncoding: Encoding.RLE,
      v2: { defLength, repLength, isCompressed: optBool(d, 7) ?? true },
    };
  }
  return { ...base, numValues: 0, encoding: 0, defEncoding: 0, repEncoding: 0 };
}
