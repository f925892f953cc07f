import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '@inferq/shared';
import { parseTask, taskJobId } from './queue.js';

const run = '20250102T030405Z-abcdef';

describe('parseTask', () => {
  it('accepts a task whose job id is <run>.<index>', () => {
    expect(parseTask({ v: 1, kind: 'predict', run, index: 3, payload: { a: 1 } }, `${run}.3`)).toEqual({ v: 1, kind: 'predict', run, index: 3, payload: { a: 1 } });
    expect(taskJobId(run, 12)).toBe(`${run}.12`);
  });

  it('refuses other data with a stable code, and a job id that is not the data’s', () => {
    const code = (data: unknown, id: string): [string, string] => {
      try {
        parseTask(data, id);
      } catch (err) {
        expect(err).toBeInstanceOf(InvalidInputError);
        return [(err as InvalidInputError).code, (err as Error).message];
      }
      throw new Error('accepted');
    };
    expect(code({ v: 1, kind: 'precompute', run, index: 1, extra: true }, `${run}.1`)[0]).toBe('BAD_JOB_DATA');
    expect(code({ v: 1, kind: 'precompute', run: '../../etc', index: 1 }, `x`)).toEqual(['BAD_JOB_DATA', 'task x: run: a run id']);
    expect(code({ v: 1, kind: 'precompute', run, index: -1 }, `${run}.-1`)[0]).toBe('BAD_JOB_DATA');
    expect(code({ v: 2, kind: 'precompute', run, index: 1 }, `${run}.1`)[0]).toBe('BAD_JOB_DATA');
    expect(code('not an object', `${run}.1`)[0]).toBe('BAD_JOB_DATA');
    expect(code({ v: 1, kind: 'precompute', run, index: 1 }, `${run}.2`)).toEqual(['ID_MISMATCH', `task ${run}.2: its data names task ${run}.1`]);
  });
});
