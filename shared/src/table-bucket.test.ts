/** Lookup-table buckets: the writer (precompute) and every reader (the SDK) must agree on each key's bucket. */
import { describe, expect, it } from 'vitest';
import { crc32 } from './checksum.js';
import { tableBucket, tableBucketOfBytes } from './protocol.js';

describe('tableBucket', () => {
  it('is CRC-32 of the key\'s UTF-8 bytes modulo the bucket count, for ASCII and non-ASCII keys', () => {
    for (const key of ['', 'DE:1:1', 'a-much-longer-key/with:separators=1234567890', 'Zürich:7', '東京:3', '😀']) {
      const want = crc32(new TextEncoder().encode(key));
      for (const buckets of [1, 7, 1024, 100_003]) expect(tableBucket(key, buckets), `${key} % ${buckets}`).toBe(want % buckets);
    }
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926); // the CRC-32 check value
  });

  it('tableBucketOfBytes gives the same bucket from the key\'s bytes inside a larger buffer', () => {
    const keys = ['', 'DE:1:1', 'Zürich:7', '東京:3', '😀', '1:255'];
    const parts = keys.map((k) => new TextEncoder().encode(k));
    const joined = new Uint8Array(3 + parts.reduce((n, p) => n + p.length, 0));
    let at = 3; // not at the start of the buffer
    for (const [i, key] of keys.entries()) {
      joined.set(parts[i]!, at);
      for (const buckets of [1, 7, 1024, 100_003]) expect(tableBucketOfBytes(joined, at, at + parts[i]!.length, buckets), `${key} % ${buckets}`).toBe(tableBucket(key, buckets));
      at += parts[i]!.length;
    }
  });
});
