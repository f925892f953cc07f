import * as zlib from 'node:zlib';

/**
 * CRC-32 (IEEE) of bytes. Uses node:zlib's native crc32 (Node >= 20.15 / 22.2),
 * with a table-driven fallback for older runtimes.
 */
type Crc32 = (data: Uint8Array, value?: number) => number;

const nativeCrc32: Crc32 | undefined = (zlib as { crc32?: Crc32 }).crc32;

let table: Uint32Array | undefined;

function crcTable(): Uint32Array {
  if (table !== undefined) return table;
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  table = t;
  return t;
}

function portableCrc32(data: Uint8Array, value = 0): number {
  const t = crcTable();
  let c = ~value >>> 0;
  for (let i = 0; i < data.length; i++) c = (t[(c ^ data[i]!) & 0xff]! ^ (c >>> 8)) >>> 0;
  return ~c >>> 0;
}

export const crc32: Crc32 = nativeCrc32 ?? portableCrc32;
/** Exposed for tests: the fallback must agree with the native one. */
export const crc32Portable: Crc32 = portableCrc32;
