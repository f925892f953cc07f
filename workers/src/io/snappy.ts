/**
 * Snappy block decompression (the raw format Parquet uses, no framing).
 * Literals are copied with TypedArray.set (memcpy); every length and offset is
 * checked, so corrupt input raises CorruptDataError instead of reading or
 * writing out of bounds.
 */
import { CorruptDataError } from './thrift.js';

/** Decompresses `input` into `output`, which must be exactly the uncompressed size. */
export function snappyDecompress(input: Uint8Array, output: Uint8Array): void {
  const inLen = input.length;
  const outLen = output.length;
  let pos = 0;
  // preamble: uncompressed length as a varint
  let declared = 0;
  for (let shift = 0; ; shift += 7) {
    if (pos >= inLen || shift > 28) throw new CorruptDataError('snappy: bad length header');
    const b = input[pos++] as number;
    declared += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) break;
  }
  if (declared !== outLen) throw new CorruptDataError(`snappy: holds ${declared} bytes, page header says ${outLen}`);
  let out = 0;
  while (pos < inLen) {
    const tag = input[pos++] as number;
    const kind = tag & 3;
    if (kind === 0) {
      let len = tag >>> 2;
      if (len >= 60) {
        const extra = len - 59;
        if (pos + extra > inLen) throw new CorruptDataError('snappy: truncated literal length');
        len = 0;
        for (let i = 0; i < extra; i++) len += (input[pos + i] as number) * 2 ** (8 * i);
        pos += extra;
      }
      len += 1;
      if (pos + len > inLen || out + len > outLen) throw new CorruptDataError('snappy: literal runs past the end');
      if (len < 16) {
        for (let i = 0; i < len; i++) output[out + i] = input[pos + i] as number;
      } else {
        output.set(input.subarray(pos, pos + len), out);
      }
      pos += len;
      out += len;
      continue;
    }
    let len: number;
    let offset: number;
    if (kind === 1) {
      if (pos >= inLen) throw new CorruptDataError('snappy: truncated copy');
      len = ((tag >>> 2) & 7) + 4;
      offset = ((tag >>> 5) << 8) | (input[pos++] as number);
    } else if (kind === 2) {
      if (pos + 2 > inLen) throw new CorruptDataError('snappy: truncated copy');
      len = (tag >>> 2) + 1;
      offset = (input[pos] as number) | ((input[pos + 1] as number) << 8);
      pos += 2;
    } else {
      if (pos + 4 > inLen) throw new CorruptDataError('snappy: truncated copy');
      len = (tag >>> 2) + 1;
      offset =
        ((input[pos] as number) |
          ((input[pos + 1] as number) << 8) |
          ((input[pos + 2] as number) << 16) |
          ((input[pos + 3] as number) << 24)) >>>
        0;
      pos += 4;
    }
    if (offset === 0 || offset > out || out + len > outLen) throw new CorruptDataError('snappy: bad back-reference');
    if (offset >= len && len >= 16) {
      output.copyWithin(out, out - offset, out - offset + len);
    } else {
      for (let i = 0; i < len; i++) output[out + i] = output[out - offset + i] as number;
    }
    out += len;
  }
  if (out !== outLen) throw new CorruptDataError(`snappy: produced ${out} bytes, expected ${outLen}`);
}
