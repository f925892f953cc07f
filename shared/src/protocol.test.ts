import { describe, expect, it } from 'vitest';
import { checkJobData } from './protocol.js';

describe('job data', () => {
  it('job data is checked field by field', () => {
    expect(checkJobData({ v: 1, model: 'm', rows: 1, bytes: 10, key: 'k' })).toEqual({ v: 1, model: 'm', rows: 1, bytes: 10, key: 'k' });
    expect(checkJobData({ v: 2 })).toMatch(/version 2 is not supported/);
    expect(checkJobData({ v: 1, model: 'm', rows: 1, bytes: 10 })).toMatch(/exactly one of "key"/);
    expect(checkJobData({ v: 1, model: 'm', rows: 1, bytes: 10, key: 'k', bundle: 0 })).toMatch(/"bundle"/);
    expect(checkJobData(null)).toMatch(/job data is null/);
  });
});
