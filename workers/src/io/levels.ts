/**
 * Parquet's RLE / bit-packed hybrid encoding (definition and repetition levels,
 * dictionary indices, RLE booleans). Bounds-checked: a run that claims more
 * bytes than the buffer holds raises CorruptDataError.
 */
import { CorruptDataError } from './thrift.js';

/**
 * Decodes `count` values of `bitWidth` bits from bytes[pos, end) into out[0, count).
 * Returns true when every value equals `probe` (lets callers skip work for
 * columns without nulls).
 */
export function decodeHybrid(
  bytes: Uint8Array,
  pos: number,
  end: number,
  bitWidth: number,
  count: number,
  out: Uint8Array | Int32Array,
  probe = -1,
): boolean {
  if (bitWidth > 32) throw new CorruptDataError(`bit width ${bitWidth} out of range`);
  if (end > bytes.length) throw new CorruptDataError('levels run past the page');
  const byteWidth = (bitWidth + 7) >> 3;
  const max = out instanceof Uint8Array ? 0xff : 0xffffffff;
  let allProbe = true;
  let i = 0;
  while (i < count) {
    // ULEB128 run header
    let header = 0;
    for (let shift = 0; ; shift += 7) {
      if (pos >= end || shift > 28) throw new CorruptDataError('levels: truncated run header');
      const b = bytes[pos++] as number;
      header += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) break;
    }
    if ((header & 1) === 0) {
      // RLE run: one value repeated
      const runLength = Math.floor(header / 2);
      if (pos + byteWidth > end) throw new CorruptDataError('levels: truncated RLE value');
      let value = 0;
      for (let k = 0; k < byteWidth; k++) value += (bytes[pos + k] as number) * 2 ** (8 * k);
      pos += byteWidth;
      if (value > max) throw new CorruptDataError('levels: value out of range');
      const n = Math.min(runLength, count - i);
      out.fill(value, i, i + n);
      if (value !== probe && n > 0) allProbe = false;
      i += n;
    } else {
      // bit-packed run of (header >> 1) groups of 8 values
      const groups = Math.floor(header / 2);
      const runBytes = groups * bitWidth;
      if (pos + runBytes > end) throw new CorruptDataError('levels: truncated bit-packed run');
      const n = Math.min(groups * 8, count - i);
      if (bitWidth === 1) {
        for (let k = 0; k < n; k++) {
          const v = ((bytes[pos + (k >> 3)] as number) >> (k & 7)) & 1;
          out[i + k] = v;
          if (v !== probe) allProbe = false;
        }
      } else if (bitWidth === 0) {
        out.fill(0, i, i + n);
        if (probe !== 0 && n > 0) allProbe = false;
      } else if (bitWidth <= 24) {
        // shift register: at most 24 + 7 bits in flight, so 32-bit ints suffice
        const mask = (1 << bitWidth) - 1;
        let p = pos;
        let acc = 0;
        let bits = 0;
        for (let k = 0; k < n; k++) {
          while (bits < bitWidth) {
            acc |= (bytes[p++] as number) << bits;
            bits += 8;
          }
          const v = acc & mask;
          acc >>>= bitWidth;
          bits -= bitWidth;
          out[i + k] = v;
          if (v !== probe) allProbe = false;
        }
      } else {
        let bitPos = pos * 8;
        for (let k = 0; k < n; k++) {
          let v = 0;
          let got = 0;
          while (got < bitWidth) {
            const byte = bytes[bitPos >> 3] as number;
            const off = bitPos & 7;
            const take = Math.min(8 - off, bitWidth - got);
            v += ((byte >> off) & ((1 << take) - 1)) * 2 ** got;
            got += take;
            bitPos += take;
          }
          out[i + k] = v;
          if (v !== probe) allProbe = false;
        }
      }
      pos += runBytes;
      i += n;
    }
  }
  return allProbe;
}

/**
 * Repetition levels of a one-level list (bit width 1) whose entries are all
 * present elements: writes `base + i` into `starts[row++]` for every entry i
 * that begins a row (level 0), without materialising the levels. Returns the
 * new row count; more rows than `starts.length - 1` is corrupt.
 */
export function listStarts(
  bytes: Uint8Array,
  pos: number,
  end: number,
  count: number,
  base: number,
  starts: Int32Array,
  row: number,
): number {
  if (end > bytes.length) throw new CorruptDataError('levels run past the page');
  const maxRows = starts.length - 1;
  let i = 0;
  while (i < count) {
    let header = 0;
    for (let shift = 0; ; shift += 7) {
      if (pos >= end || shift > 28) throw new CorruptDataError('levels: truncated run header');
      const b = bytes[pos++] as number;
      header += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) break;
    }
    if ((header & 1) === 0) {
      const n = Math.min(Math.floor(header / 2), count - i);
      if (pos >= end) throw new CorruptDataError('levels: truncated RLE value');
      const value = bytes[pos++] as number;
      if (value > 1) throw new CorruptDataError(`repetition level ${value} above the maximum 1`);
      if (value === 0) {
        if (row + n > maxRows) throw new CorruptDataError('column chunk holds more rows than its row group');
        for (let k = 0; k < n; k++) starts[row++] = base + i + k;
      }
      i += n;
    } else {
      const groups = Math.floor(header / 2);
      if (pos + groups > end) throw new CorruptDataError('levels: truncated bit-packed run');
      const n = Math.min(groups * 8, count - i);
      for (let k = 0; k < n; k += 8) {
        const byte = bytes[pos + (k >> 3)] as number;
        if (byte === 0xff) continue;
        const m = Math.min(8, n - k);
        for (let j = 0; j < m; j++) {
          if (((byte >> j) & 1) === 0) {
            if (row >= maxRows) throw new CorruptDataError('column chunk holds more rows than its row group');
            starts[row++] = base + i + k + j;
          }
        }
      }
      pos += groups;
      i += n;
    }
  }
  return row;
}

/** Bits needed to hold values up to `max` (level widths). */
export function bitWidthOf(max: number): number {
  return max === 0 ? 0 : 32 - Math.clz32(max);
}
