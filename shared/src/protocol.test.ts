import { describe, expect, it } from 'vitest';
import { decodeEnvelope, encodeEnvelope } from './envelope.js';
import { EnvelopeError } from './errors.js';
import { checkJobData, decodeBundle, encodeBundle } from './protocol.js';

const env = (id: string, rows: number) => encodeEnvelope({ id, model: 'm' }, { x: { dtype: 'float32', shape: [rows, 3], data: new Float32Array(rows * 3).fill(rows) } });

describe('bundles', () => {
  it('round-trip envelopes of different sizes, each still decodable', () => {
    const parts = [env('a', 1), env('b', 5), env('c', 2)];
    const back = decodeBundle(encodeBundle(parts));
    expect(back.map((p) => decodeEnvelope(p).id)).toEqual(['a', 'b', 'c']);
    expect(Array.from(decodeEnvelope(back[1]!).tensors['x']!.data as Float32Array)).toEqual(new Array(15).fill(5));
  });

  it('every truncation is a clean EnvelopeError', () => {
    const bytes = encodeBundle([env('a', 2), env('b', 3)]);
    for (let len = 0; len < bytes.length; len++) {
      let err: unknown;
      try {
        decodeBundle(bytes.subarray(0, len)).forEach((p) => decodeEnvelope(p));
      } catch (e) {
        err = e;
      }
      expect(err, `length ${len}`).toBeInstanceOf(EnvelopeError);
    }
  });

  it('job data is checked field by field', () => {
    expect(checkJobData({ v: 1, model: 'm', rows: 1, bytes: 10, key: 'k' })).toEqual({ v: 1, model: 'm', rows: 1, bytes: 10, key: 'k' });
    expect(checkJobData({ v: 2 })).toMatch(/version 2 is not supported/);
    expect(checkJobData({ v: 1, model: 'm', rows: 1, bytes: 10 })).toMatch(/exactly one of "key"/);
    expect(checkJobData({ v: 1, model: 'm', rows: 1, bytes: 10, key: 'k', bundle: 0 })).toMatch(/"bundle"/);
    expect(checkJobData(null)).toMatch(/job data is null/);
  });
});
