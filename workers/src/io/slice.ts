/**
 * Compact slices of the Arrow data decode.ts produces: the slice starts at
 * offset 0 and its buffers cover exactly its rows, so a list<float32> batch's
 * `children[0].values` is exactly that batch's floats (a subarray view, no
 * copy). Offsets are rebased (a copy of rows + 1 ints); validity bitmaps are
 * views when the slice starts on a byte boundary, else re-packed.
 */
import type { DataType } from 'apache-arrow';
import { Data, Type } from 'apache-arrow';

function sliceBits(bits: Uint8Array, start: number, length: number): Uint8Array {
  if (start % 8 === 0) return bits.subarray(start >> 3, (start + length + 7) >> 3);
  const out = new Uint8Array((length + 7) >> 3);
  for (let i = 0; i < length; i++) {
    const j = start + i;
    if ((((bits[j >> 3] as number) >> (j & 7)) & 1) === 1) out[i >> 3] = (out[i >> 3] as number) | (1 << (i & 7));
  }
  return out;
}

function rebase(offsets: Int32Array, start: number, length: number): { offsets: Int32Array; from: number; to: number } {
  const from = offsets[start] as number;
  const to = offsets[start + length] as number;
  const out = new Int32Array(length + 1);
  for (let i = 0; i <= length; i++) out[i] = (offsets[start + i] as number) - from;
  return { offsets: out, from, to };
}

/** Rows [start, start + length) of `data` (offset-0 data from decode.ts) as compact data. */
export function sliceCompact(data: Data, start: number, length: number): Data {
  if (data.offset !== 0) throw new Error('sliceCompact expects offset-0 data');
  if (start === 0 && length === data.length) return data;
  const type = data.type as DataType;
  const validity = data.nullCount > 0 ? sliceBits(data.nullBitmap as Uint8Array, start, length) : undefined;
  const nullCount = validity === undefined ? 0 : -1; // -1: counted lazily by Arrow
  switch (type.typeId) {
    case Type.Bool:
      return new Data(type, 0, length, nullCount, [undefined, sliceBits(data.values as Uint8Array, start, length), validity]);
    case Type.Utf8:
    case Type.Binary: {
      const r = rebase(data.valueOffsets as Int32Array, start, length);
      return new Data(type, 0, length, nullCount, [r.offsets, (data.values as Uint8Array).subarray(r.from, r.to), validity]);
    }
    case Type.List: {
      const r = rebase(data.valueOffsets as Int32Array, start, length);
      const child = sliceCompact(data.children[0] as Data, r.from, r.to - r.from);
      return new Data(type, 0, length, nullCount, [r.offsets, undefined, validity], [child]);
    }
    case Type.FixedSizeList: {
      const w = (type as DataType & { listSize: number }).listSize;
      const child = sliceCompact(data.children[0] as Data, start * w, length * w);
      return new Data(type, 0, length, nullCount, [undefined, undefined, validity], [child]);
    }
    default: {
      const values = data.values as Int32Array | Float32Array | Float64Array | BigInt64Array;
      return new Data(type, 0, length, nullCount, [undefined, values.subarray(start, start + length), validity]);
    }
  }
}
