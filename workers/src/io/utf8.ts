/**
 * UTF-8 columns built in one pass: the strings joined and encoded once, offsets from their
 * lengths when every character is one byte (ASCII: keys, ids, category values, JSON numbers —
 * the common case), per string otherwise. Arrow's `vectorFromArray(strings, new Utf8())` runs a
 * builder that encodes each string on its own: in a precompute run that, and the garbage it
 * left, was most of the main thread's time outside the model.
 */
import { Utf8, makeData } from 'apache-arrow';
import type { Data } from 'apache-arrow';

const encoder = new TextEncoder();

/** Strings as UTF-8 bytes: value i is `bytes[offsets[i] … offsets[i + 1])` (Arrow's Utf8 layout). */
export interface Utf8Bytes {
  readonly offsets: Int32Array;
  readonly bytes: Uint8Array;
}

export function utf8Bytes(strings: readonly string[]): Utf8Bytes {
  const n = strings.length;
  const offsets = new Int32Array(n + 1);
  const joined = strings.join('');
  let bytes = encoder.encode(joined);
  if (bytes.length === joined.length) {
    // Every UTF-16 unit became one byte: offsets are the string lengths.
    let o = 0;
    for (let i = 0; i < n; i++) {
      offsets[i] = o;
      o += strings[i]!.length;
    }
    offsets[n] = o;
  } else {
    // Encoded one by one (a surrogate pair split across two strings must not be joined into one character).
    const parts = strings.map((s) => encoder.encode(s));
    bytes = new Uint8Array(parts.reduce((t, p) => t + p.length, 0));
    let o = 0;
    for (let i = 0; i < n; i++) {
      offsets[i] = o;
      bytes.set(parts[i]!, o);
      o += parts[i]!.length;
    }
    offsets[n] = o;
  }
  return { offsets, bytes };
}

/** An Arrow Utf8 column over UTF-8 bytes (no copy). */
export function utf8DataOf(column: Utf8Bytes): Data<Utf8> {
  return makeData({ type: new Utf8(), length: column.offsets.length - 1, nullCount: 0, valueOffsets: column.offsets, data: column.bytes });
}

export function utf8Data(values: readonly (string | null | undefined)[]): Data<Utf8> {
  const n = values.length;
  let nulls = 0;
  for (let i = 0; i < n; i++) if (values[i] === null || values[i] === undefined) nulls++;
  const { offsets, bytes } = utf8Bytes(nulls > 0 ? values.map((v) => v ?? '') : (values as readonly string[]));
  if (nulls === 0) return utf8DataOf({ offsets, bytes });
  const nullBitmap = new Uint8Array((n + 7) >> 3);
  for (let i = 0; i < n; i++) if (values[i] !== null && values[i] !== undefined) nullBitmap[i >> 3]! |= 1 << (i & 7);
  return makeData({ type: new Utf8(), length: n, nullCount: nulls, nullBitmap, valueOffsets: offsets, data: bytes });
}
