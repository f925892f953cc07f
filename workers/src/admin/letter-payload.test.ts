import { describe, expect, it } from 'vitest';
import { decodeEnvelope, encodeEnvelope } from '@inferq/shared';
import type { TensorMap } from '@inferq/shared';
import { keptPayloads, replayJobs } from './letter-payload.js';

const rowsOf = (n: number, from: number): TensorMap => ({ features: { dtype: 'float32', shape: [n, 2], data: Float32Array.from({ length: n * 2 }, (_, i) => from + i) } });

/** A pack of jobs a (2 rows), b (3 rows), c (1 row), rows numbered 0, 1, 2, … in order. */
function pack(): Uint8Array {
  return encodeEnvelope(
    {
      id: 'pack-1',
      model: 'm',
      version: '2',
      replyTo: 'replies',
      rowIds: ['r0', 'r1', 'r2', 'r3', 'r4', 'r5'],
      jobs: [
        { id: 'a', rows: 2, deadline: 1000 },
        { id: 'b', rows: 3 },
        { id: 'c', rows: 1 },
      ],
    },
    rowsOf(6, 0),
  );
}

describe('keptPayloads', () => {
  it('a job on its own keeps its envelope bytes as they were', () => {
    const bytes = encodeEnvelope({ id: 'j', model: 'm', deadline: 5 }, rowsOf(3, 0));
    const kept = keptPayloads(bytes, 'j', ['j']);
    expect([...kept.keys()]).toEqual(['j']);
    expect(kept.get('j')).toBe(bytes);
  });

  it('a packed job keeps an envelope of its own rows, row ids and deadline only', () => {
    const kept = keptPayloads(pack(), 'pack-1', ['b', 'a']);
    expect([...kept.keys()].sort()).toEqual(['a', 'b']);
    const b = decodeEnvelope(kept.get('b')!);
    expect(b).toMatchObject({ id: 'b', model: 'm', version: '2', replyTo: 'replies', rows: 3, rowIds: ['r2', 'r3', 'r4'], deadline: undefined, jobs: undefined });
    expect(Array.from(b.tensors['features']!.data as Float32Array)).toEqual([4, 5, 6, 7, 8, 9]);
    const a = decodeEnvelope(kept.get('a')!);
    expect(a).toMatchObject({ id: 'a', rows: 2, deadline: 1000 });
    expect(Array.from(a.tensors['features']!.data as Float32Array)).toEqual([0, 1, 2, 3]);
  });

  it('undecodable bytes are kept only for a letter of the queue job itself; ids of no job keep nothing', () => {
    const junk = new Uint8Array([1, 2, 3]);
    expect(keptPayloads(junk, 'j', ['j']).get('j')).toBe(junk);
    expect(keptPayloads(junk, 'j', ['other']).size).toBe(0);
    expect(keptPayloads(pack(), 'pack-1', ['zzz']).size).toBe(0);
  });
});

describe('replayJobs', () => {
  it('a job on its own: its model, tensors and options, the deadline dropped', () => {
    const r = replayJobs(encodeEnvelope({ id: 'j', model: 'm', version: '3', sinks: ['parquet:/x'], replyTo: 's', deadline: 5 }, rowsOf(2, 0)), 'j');
    if (typeof r === 'string') throw new Error(r);
    expect(r.envelopeId).toBe('j');
    expect(r.jobs).toHaveLength(1);
    expect(r.jobs[0]).toMatchObject({ id: 'j', model: 'm', options: { version: '3', replyTo: 's', sinks: ['parquet:/x'] } });
    expect(r.jobs[0]!.options).not.toHaveProperty('deadline');
  });

  it('a pack: the letter of one job replays its rows; a letter of the pack itself replays each job', () => {
    const one = replayJobs(pack(), 'c');
    if (typeof one === 'string') throw new Error(one);
    expect(one.envelopeId).toBe('pack-1');
    expect(one.jobs.map((j) => [j.id, Array.from(j.tensors['features']!.data as Float32Array), j.options.rowIds])).toEqual([['c', [10, 11], ['r5']]]);
    const all = replayJobs(pack(), 'pack-1');
    if (typeof all === 'string') throw new Error(all);
    expect(all.jobs.map((j) => j.id)).toEqual(['a', 'b', 'c']);
  });

  it('refuses bytes that are not an envelope, and an envelope of another job', () => {
    expect(replayJobs(new Uint8Array([9, 9]), 'j')).toMatch(/not a valid envelope/);
    expect(replayJobs(encodeEnvelope({ id: 'x', model: 'm' }, rowsOf(1, 0)), 'j')).toMatch(/envelope of job "x", not of job "j"/);
    expect(replayJobs(pack(), 'nope')).toMatch(/a pack of 3/);
  });
});
