import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '@inferq/shared';
import { RUN_ID, newRunId, parseRunRecord, taskUnits } from './record.js';

const good = {
  v: '1',
  kind: 'precompute',
  mode: 'queue',
  queue: 'inferq-offline',
  params: '{"x":1}',
  units: '10',
  tasks: '4',
  totalRows: '1000',
  lockTtlMs: '60000',
  holds: 'table "t"',
  createdAt: '2025-01-02T03:04:05.678Z',
  launchedAt: '2025-01-02T03:04:05.678Z',
  launchUnits: '0',
  updatedAt: '2025-01-02T03:04:06.000Z',
  state: 'running',
};

describe('taskUnits', () => {
  it('covers every unit exactly once, in order, whatever the counts', () => {
    for (const [units, tasks] of [[10, 4], [10, 10], [10, 3], [1, 1], [7, 7], [100, 8], [5, 8]] as const) {
      const seen: number[] = [];
      for (let t = 0; t < tasks; t++) {
        const [from, to] = taskUnits(units, tasks, t);
        expect(from).toBeLessThanOrEqual(to);
        for (let u = from; u < to; u++) seen.push(u);
      }
      expect(seen, `${units} units over ${tasks} tasks`).toEqual(Array.from({ length: units }, (_, i) => i));
    }
    expect(taskUnits(10, 4, 3)).toEqual([9, 10]);
  });
});

describe('parseRunRecord', () => {
  it('reads a record, numbers as numbers', () => {
    const r = parseRunRecord('20250102T030405Z-abcdef', good);
    expect(r).toMatchObject({ runId: '20250102T030405Z-abcdef', kind: 'precompute', units: 10, tasks: 4, totalRows: 1000, lockTtlMs: 60_000, state: 'running' });
  });

  it('refuses what is not a record, naming the field (BAD_JOB_DATA)', () => {
    const bad = (fields: Record<string, string>, runId = '20250102T030405Z-abcdef'): string => {
      try {
        parseRunRecord(runId, fields);
      } catch (err) {
        expect(err).toBeInstanceOf(InvalidInputError);
        expect((err as InvalidInputError).code).toBe('BAD_JOB_DATA');
        return (err as Error).message;
      }
      throw new Error('accepted');
    };
    expect(bad({})).toBe('run 20250102T030405Z-abcdef: no run record (it never existed, or it was deleted)');
    expect(bad(good, '../x')).toBe('run id "../x" is not a run id');
    expect(bad({ ...good, kind: 'shell' })).toMatch(/^run \S+: record field kind: /);
    expect(bad({ ...good, tasks: '0' })).toMatch(/^run \S+: record field tasks: /);
    expect(bad({ ...good, tasks: '-3' })).toMatch(/record field tasks: a whole number/);
    expect(bad({ ...good, lockTtlMs: '10' })).toMatch(/record field lockTtlMs/);
    expect(bad({ ...good, queue: 'a b' })).toMatch(/record field queue/);
  });

  it('makes run ids that sort by time and match RUN_ID', () => {
    const id = newRunId();
    expect(id).toMatch(RUN_ID);
    expect(id.slice(0, 8)).toBe(new Date().toISOString().slice(0, 10).replace(/-/g, ''));
  });
});
