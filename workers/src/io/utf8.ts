/**
 * An Arrow Utf8 column built in one pass: the strings joined and encoded once, offsets from
 * their lengths when every character is one byte (ASCII: keys, ids, category values — the
 * common case), per string otherwise. Arrow's `vectorFromArray(strings, new Utf8())` runs a
 * builder that encodes each string on its own: in a precompute run that, and the garbage it
 * left, was most of the main thread's time outside the model.
 */
import { Utf8, makeData } from 'apache-arrow';
import type { Data } from 'apache-arrow';

const encoder = new TextEncoder();

export function utf8Data(values: readonly (string | null | undefined)[]): Data<Utf8> {
  const n = values.length;
  const offsets = new Int32Array(n + 1);
  let nulls = 0;
  for (let i = 0; i < n; i++) if (values[i] === null || values[i] === undefined) nulls++;
  let nullBitmap: Uint8Array | undefined;
  if (nulls > 0) {
    nullBitmap = new Uint8Array((n + 7) >> 3);
    for (let i = 0; i < n; i++) if (values[i] !== null && values[i] !== undefined) nullBitmap[i >> 3]! |= 1 << (i & 7);
  }
  const strings = nulls > 0 ? values.map((v) => v ?? '') : (values as readonly string[]);
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
  return makeData({ type: new Utf8(), length: n, nullCount: nulls, ...(nullBitmap === undefined ? {} : { nullBitmap }), valueOffsets: offsets, data: bytes });
}
