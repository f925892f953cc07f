import { describe, expect, it } from 'vitest';
import { crc32, crc32Portable } from './checksum.js';
import { DTYPES } from './dtype.js';
import type { DType, TypedArray } from './dtype.js';
import { decodeEnvelope, encodeEnvelope, unpackJobs } from './envelope.js';
import { EnvelopeError, InvalidInputError } from './errors.js';
import type { Tensor } from './tensor.js';
import { firstNonFinite, validateInputs } from './validate.js';

let seed = 12345;
function rand(n: number): number {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed % n;
}

function sample(dtype: DType, shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  let data: TypedArray;
  switch (dtype) {
    case 'float32':
      data = Float32Array.from({ length: n }, (_, i) => i * 0.5 - 3.25);
      break;
    case 'float64':
      data = Float64Array.from({ length: n }, (_, i) => i / 3 - 1e300 * (i % 2));
      break;
    case 'int32':
      data = Int32Array.from({ length: n }, (_, i) => (i * 7919) | 0 - 2 ** 30);
      break;
    case 'int64':
      data = BigInt64Array.from({ length: n }, (_, i) => BigInt(i) * 9_000_000_000_000n - 1n);
      break;
    case 'uint8':
      data = Uint8Array.from({ length: n }, (_, i) => (i * 37) & 255);
      break;
    case 'int8':
      data = Int8Array.from({ length: n }, (_, i) => ((i * 37) & 255) - 128);
      break;
    case 'bool':
      data = Uint8Array.from({ length: n }, (_, i) => i % 3 === 0 ? 1 : 0);
      break;
  }
  return { dtype, shape, data };
}

describe('tensor envelope', () => {
  it('a zero-row job is valid, with zero-row tensors or with no tensors at all; tensors are required as soon as there are rows', () => {
    const empty = decodeEnvelope(encodeEnvelope({ id: 'empty', model: 'm' }, {}));
    expect(empty.rows).toBe(0);
    expect(empty.tensors).toEqual({});
    const shaped = decodeEnvelope(encodeEnvelope({ id: 'shaped', model: 'm', rowIds: [] }, { x: { dtype: 'float32', shape: [0, 4], data: new Float32Array(0) } }));
    expect(shaped.rows).toBe(0);
    expect(shaped.tensors['x']!.shape).toEqual([0, 4]);
    // A header that claims rows but carries no tensor is refused.
    const bytes = encodeEnvelope({ id: 'liar', model: 'm' }, {});
    const text = new TextDecoder().decode(bytes.subarray(20));
    const forged = text.replace('"rows":0', '"rows":3'); // same length: the prefix stays right
    const out = new Uint8Array(bytes.length);
    out.set(bytes.subarray(0, 20));
    out.set(new TextEncoder().encode(forged), 20);
    new DataView(out.buffer).setUint32(16, crc32(out.subarray(20)), true);
    expect(() => decodeEnvelope(out)).toThrow(/"tensors": expected 1\.\.256 tensors \(none only for zero rows\)/);
  });

  it.each(DTYPES)('round-trips %s tensors exactly, as typed-array views', (dtype) => {
    const t = sample(dtype, [5, 3]);
    const bytes = encodeEnvelope({ id: `job-${dtype}`, model: 'm', version: '2', rowIds: ['a', 'b', 'c', 'd', 'e'] }, { x: t });
    const env = decodeEnvelope(bytes);
    expect(env.id).toBe(`job-${dtype}`);
    expect(env.model).toBe('m');
    expect(env.version).toBe('2');
    expect(env.rows).toBe(5);
    expect(env.rowIds).toEqual(['a', 'b', 'c', 'd', 'e']);
    const got = env.tensors['x']!;
    expect(got.dtype).toBe(dtype);
    expect(got.shape).toEqual([5, 3]);
    expect(got.data.constructor).toBe(t.data.constructor);
    expect(Array.from(got.data as Iterable<number | bigint>)).toEqual(Array.from(t.data as Iterable<number | bigint>));
    expect(got.data.buffer).toBe(bytes.buffer); // zero-copy: a view over the message
  });

  it('carries several tensors, metadata and 8-byte alignment', () => {
    const tensors = { a: sample('uint8', [3, 1]), b: sample('float64', [3, 2]), c: sample('int64', [3]) };
    const bytes = encodeEnvelope({ id: 'j1', model: 'rec', replyTo: 'replies', sinks: ['parquet:file:///tmp/x'], deadline: 1_700_000_000_000 }, tensors);
    const env = decodeEnvelope(bytes);
    expect(Object.keys(env.tensors)).toEqual(['a', 'b', 'c']);
    for (const t of Object.values(env.tensors)) expect(t.data.byteOffset % 8).toBe(0);
    expect(env.replyTo).toBe('replies');
    expect(env.sinks).toEqual(['parquet:file:///tmp/x']);
    expect(env.deadline).toBe(1_700_000_000_000);
    expect(Array.from(env.tensors['b']!.data as Float64Array)).toEqual(Array.from(tensors.b.data as Float64Array));
  });

  it('copies once when the message bytes are not aligned, still returning the right values', () => {
    const bytes = encodeEnvelope({ id: 'j', model: 'm' }, { x: sample('float32', [4, 4]) });
    const shifted = new Uint8Array(bytes.length + 3);
    shifted.set(bytes, 3);
    const env = decodeEnvelope(shifted.subarray(3));
    expect(Array.from(env.tensors['x']!.data as Float32Array)).toEqual(Array.from(sample('float32', [4, 4]).data as Float32Array));
  });

  it('round-trips zero-row tensors and result envelopes with an error', () => {
    const env = decodeEnvelope(encodeEnvelope({ id: 'j', model: 'm', error: { message: 'bad', kind: 'InvalidInputError' } }, { y: sample('float32', [0, 8]) }));
    expect(env.rows).toBe(0);
    expect(env.error).toEqual({ message: 'bad', kind: 'InvalidInputError' });
  });

  it('refuses to encode inconsistent tensors, naming them', () => {
    expect(() => encodeEnvelope({ id: 'j', model: 'm' }, { x: { dtype: 'float32', shape: [2, 3], data: new Float32Array(5) } })).toThrow(
      /tensor "x": shape \[2,3\] needs 24 bytes of float32, data has 20/,
    );
    expect(() => encodeEnvelope({ id: 'j', model: 'm' }, { a: sample('float32', [2, 1]), b: sample('float32', [3, 1]) })).toThrow(/tensor "b": 3 rows, but other tensors have 2/);
    expect(() => encodeEnvelope({ id: 'j', model: 'bad name!' }, { a: sample('float32', [1]) })).toThrow(/"model"/);
  });

  it('gives a clean EnvelopeError for every truncation', () => {
    const bytes = encodeEnvelope({ id: 'job-trunc', model: 'm' }, { x: sample('float32', [16, 8]), y: sample('int64', [16]) });
    for (let len = 0; len < bytes.length; len++) {
      expect(() => decodeEnvelope(bytes.subarray(0, len)), `length ${len}`).toThrow(EnvelopeError);
    }
  });

  it('gives a clean EnvelopeError, never a wrong tensor, for random bit flips', () => {
    const bytes = encodeEnvelope({ id: 'job-flip', model: 'm', rowIds: Array.from({ length: 16 }, (_, i) => `r${i}`) }, { x: sample('float32', [16, 8]), b: sample('bool', [16]) });
    for (let trial = 0; trial < 3000; trial++) {
      const copy = bytes.slice();
      const flips = 1 + rand(3);
      const bits = new Set<number>();
      while (bits.size < flips) bits.add(rand(copy.length * 8)); // distinct bits: two flips never cancel
      for (const bit of bits) copy[bit >> 3] = copy[bit >> 3]! ^ (1 << (bit & 7));
      let err: unknown;
      try {
        decodeEnvelope(copy);
      } catch (e) {
        err = e;
      }
      expect(err, `trial ${trial}`).toBeInstanceOf(EnvelopeError);
    }
  });

  it('rejects a valid-checksum envelope whose header lies (crafted), naming the field', () => {
    const good = encodeEnvelope({ id: 'j', model: 'm' }, { x: sample('float32', [2, 2]) });
    const craft = (mutate: (h: Record<string, unknown>) => void): Uint8Array => {
      const view = new DataView(good.buffer);
      const hlen = view.getUint32(8, true);
      const header = JSON.parse(new TextDecoder().decode(good.subarray(20, 20 + hlen))) as Record<string, unknown>;
      mutate(header);
      const hb = new TextEncoder().encode(JSON.stringify(header));
      const dataStart = (20 + hlen + 7) & ~7;
      const data = good.subarray(dataStart);
      const start = (20 + hb.length + 7) & ~7;
      const out = new Uint8Array(start + data.length);
      const v = new DataView(out.buffer);
      out.set(good.subarray(0, 8));
      v.setUint32(8, hb.length, true);
      v.setUint32(12, out.length, true);
      out.set(hb, 20);
      out.set(data, start);
      v.setUint32(16, crc32(out.subarray(20)), true);
      return out;
    };
    const tensor = (h: Record<string, unknown>) => (h['tensors'] as Record<string, unknown>[])[0]!;
    expect(() => decodeEnvelope(craft((h) => (tensor(h)['shape'] = [2, 3])))).toThrow(/tensor "x": float32 \[2,3\] needs 24 bytes, header says 16/);
    expect(() => decodeEnvelope(craft((h) => (tensor(h)['dtype'] = 'complex64')))).toThrow(/tensor "x": unknown dtype "complex64"/);
    expect(() => decodeEnvelope(craft((h) => ((tensor(h)['shape'] = [4, 1]), (tensor(h)['byteLength'] = 16))))).toThrow(/has 4 rows, header says 2/);
    expect(() => decodeEnvelope(craft((h) => (tensor(h)['offset'] = 8)))).toThrow(/run past the 16-byte data region/);
    expect(() => decodeEnvelope(craft((h) => (h['id'] = '')))).toThrow(/"id"/);
    expect(() => decodeEnvelope(craft((h) => (h['rowIds'] = ['only-one'])))).toThrow(/"rowIds": expected 2 strings/);
    // Packed jobs: their rows must add up, their ids be distinct strings, their deadlines numbers.
    const jobs = (ids: unknown[], rows: unknown[], deadlines?: unknown[]) => (h: Record<string, unknown>) => (h['jobs'] = { ids, rows, ...(deadlines === undefined ? {} : { deadlines }) });
    expect(() => decodeEnvelope(craft(jobs(['a'], [1])))).toThrow(/"jobs.rows": they add up to 1, header says 2/);
    expect(() => decodeEnvelope(craft(jobs(['a', 'a'], [1, 1])))).toThrow(/"jobs.ids"\[1\]: job id "a" appears twice/);
    expect(() => decodeEnvelope(craft(jobs([7], [2])))).toThrow(/"jobs.ids"\[0\]: expected a string/);
    expect(() => decodeEnvelope(craft(jobs(['a', 'b'], [2])))).toThrow(/"jobs.rows": expected 2 row counts/);
    expect(() => decodeEnvelope(craft(jobs(['a'], [2], ['soon'])))).toThrow(/"jobs.deadlines"\[0\]: expected epoch milliseconds or null, got "soon"/);
    expect(() => decodeEnvelope(craft(jobs([], [])))).toThrow(/"jobs.ids": expected 1\.\.100000 job ids/);
    expect(() => decodeEnvelope(craft((h) => (h['jobs'] = 'all')))).toThrow(/"jobs.ids"/);
  });

  it('packs several jobs into one envelope and unpacks them as views of their own rows', () => {
    const x: Tensor = { dtype: 'float32', shape: [4, 2], data: Float32Array.from([0, 1, 10, 11, 20, 21, 30, 31]) };
    const k: Tensor = { dtype: 'int64', shape: [4], data: BigInt64Array.from([0n, 1n, 2n, 3n]) };
    const jobs = [{ id: 'a', rows: 1, deadline: 123 }, { id: 'b', rows: 0 }, { id: 'c', rows: 3 }];
    const packed = decodeEnvelope(encodeEnvelope({ id: 'pack', model: 'm', replyTo: 'r', rowIds: ['r0', 'r1', 'r2', 'r3'], jobs }, { x, k }));
    expect(packed.jobs).toEqual(jobs);
    const parts = unpackJobs(packed);
    expect(parts.map((p) => [p.id, p.rows, p.deadline, p.replyTo])).toEqual([['a', 1, 123, 'r'], ['b', 0, undefined, 'r'], ['c', 3, undefined, 'r']]);
    expect(parts.map((p) => p.rowIds)).toEqual([['r0'], [], ['r1', 'r2', 'r3']]);
    expect(parts.map((p) => p.tensors['x']!.shape)).toEqual([[1, 2], [0, 2], [3, 2]]);
    expect(Array.from(parts[2]!.tensors['x']!.data as Float32Array)).toEqual([10, 11, 20, 21, 30, 31]);
    expect(Array.from(parts[2]!.tensors['k']!.data as BigInt64Array)).toEqual([1n, 2n, 3n]);
    expect(parts[0]!.tensors['x']!.data.buffer).toBe(packed.tensors['x']!.data.buffer); // a view, not a copy
    // An envelope without jobs is its own only job.
    const single = decodeEnvelope(encodeEnvelope({ id: 'j', model: 'm' }, { x }));
    expect(unpackJobs(single)).toEqual([single]);
  });

  it('rejects a bool element other than 0 or 1', () => {
    const t: Tensor = { dtype: 'bool', shape: [3], data: Uint8Array.from([0, 1, 7]) };
    expect(() => decodeEnvelope(encodeEnvelope({ id: 'j', model: 'm' }, { b: t }))).toThrow(/bool element 2 has value 7/);
  });

  it('native and portable crc32 agree', () => {
    const data = Uint8Array.from({ length: 10_000 }, (_, i) => (i * 31) & 255);
    expect(crc32(data)).toBe(crc32Portable(data));
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
  });
});

describe('validateInputs', () => {
  const spec = [{ name: 'features', dtype: 'float32' as const, shape: [-1, 64] }];
  const ctx = { jobId: '7f3a9c1e-0000-4000-8000-000000000000', model: 'm', version: '1' };

  it('accepts matching inputs and returns the rows', () => {
    expect(validateInputs({ features: sample('float32', [10, 64]) }, spec, ctx)).toBe(10);
  });

  it('names the bad value: shape, dtype, missing and unknown inputs', () => {
    expect(() => validateInputs({ features: sample('float32', [10, 63]) }, spec, ctx)).toThrow(
      'input "features": expected float32 [n,64], got float32 [10,63] (job 7f3a9c1e…)',
    );
    expect(() => validateInputs({ features: sample('float64', [10, 64]) }, spec, ctx)).toThrow(/expected float32 \[n,64\], got float64 \[10,64\]/);
    expect(() => validateInputs({}, spec, ctx)).toThrow(/missing input "features" \(float32 \[n,64\]\)/);
    expect(() => validateInputs({ features: sample('float32', [1, 64]), extra: sample('float32', [1]) }, spec, ctx)).toThrow(/unknown input "extra"/);
    expect(() => validateInputs({ features: sample('float32', [10, 63]) }, spec, ctx)).toThrow(InvalidInputError);
  });

  it('rejects NaN and Infinity by default, naming row and column, and passes them when asked', () => {
    const t = sample('float32', [3, 64]);
    (t.data as Float32Array)[64 + 5] = Number.NaN;
    expect(() => validateInputs({ features: t }, spec, ctx)).toThrow(/non-finite value NaN at row 1, column 5/);
    expect(validateInputs({ features: t }, spec, { ...ctx, nonFinite: 'pass' })).toBe(3);
    (t.data as Float32Array)[64 + 5] = 0;
    (t.data as Float32Array)[2 * 64] = -Infinity;
    expect(() => validateInputs({ features: t }, spec, ctx)).toThrow(/non-finite value -Infinity at row 2, column 0/);
  });

  it('finds the first non-finite value at every position of the unrolled loop and its tail, float32 and float64', () => {
    for (const make of [(n: number) => new Float32Array(n), (n: number) => new Float64Array(n)]) {
      for (const length of [0, 1, 3, 4, 7, 8, 9]) {
        const data = make(length).map((_, i) => i + 0.5);
        expect(firstNonFinite(data)).toBe(-1);
        for (let at = 0; at < length; at++) {
          for (const bad of [Number.NaN, Infinity, -Infinity]) {
            const d = data.slice();
            d[at] = bad;
            if (at + 2 < length) d[at + 2] = Number.NaN; // a later one is not the first
            expect(firstNonFinite(d)).toBe(at);
          }
        }
      }
    }
  });
});
