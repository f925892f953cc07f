import { Utf8, makeVector, vectorFromArray } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { utf8Data } from './utf8.js';

/** What Arrow's own builder makes of the same strings: values, byte offsets and bytes. */
function expectSameAsArrow(values: (string | null)[]): void {
  const ours = utf8Data(values);
  const theirs = vectorFromArray(values, new Utf8()).data[0]!;
  expect(makeVector(ours).toArray()).toEqual(makeVector(theirs).toArray());
  expect(ours.nullCount).toBe(theirs.nullCount);
  expect(Array.from(ours.valueOffsets)).toEqual(Array.from(theirs.valueOffsets.subarray(0, values.length + 1)));
  const end = ours.valueOffsets[values.length]!;
  expect(Buffer.from(ours.values.subarray(0, end))).toEqual(Buffer.from(theirs.values.subarray(0, end)));
}

describe('utf8Data', () => {
  it('ASCII keys: the same column as Arrow builds', () => {
    expectSameAsArrow(Array.from({ length: 1000 }, (_, i) => `${i % 255}:${i}`));
  });
  it('empty strings, no strings', () => {
    expectSameAsArrow(['', 'a', '', '', 'bc', '']);
    expectSameAsArrow([]);
  });
  it('non-ASCII: byte offsets, not character offsets', () => {
    expectSameAsArrow(['été', 'a', '東京', '🙂x', 'plain']);
  });
  it('a surrogate pair split across two strings stays two replacement characters, as Arrow encodes it', () => {
    expectSameAsArrow(['a\ud83d', '\ude42b']);
  });
  it('nulls: a validity bitmap, null values read back as null', () => {
    expectSameAsArrow(['x', null, 'y', null, null, 'zz', 'q', null, 'r']);
  });
});
