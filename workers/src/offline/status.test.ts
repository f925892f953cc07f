import { describe, expect, it } from 'vitest';
import type { RunRecord } from './record.js';
import { formatStatus, statusOf } from './status.js';

const record: RunRecord = {
  runId: '20250102T030405Z-abcdef',
  v: '1',
  kind: 'precompute',
  mode: 'queue',
  queue: 'inferq-offline',
  params: '{}',
  units: 100,
  tasks: 50,
  totalRows: 100_000,
  lockTtlMs: 60_000,
  holds: 'table "t"',
  createdAt: '2025-01-02T03:00:00.000Z',
  launchedAt: '2025-01-02T03:04:00.000Z',
  launchUnits: 20,
  updatedAt: '2025-01-02T03:04:30.000Z',
  state: 'running',
};

describe('statusOf', () => {
  it('rows/s from the units done since the launch, ETA at that rate', () => {
    const s = statusOf(record, 60, Date.parse('2025-01-02T03:04:40.000Z'));
    expect(s.rowsDone).toBe(60_000);
    expect(s.rowsPerSecond).toBeCloseTo(1000, 6); // 40 chunks of 1000 rows in 40 s
    expect(s.etaSeconds).toBeCloseTo(40, 6);
    expect(formatStatus(s)).toBe(
      'run 20250102T030405Z-abcdef (precompute, table "t", 50 tasks on queue inferq-offline): running, 60/100 chunks (60 %), 60,000/100,000 rows, 1,000 rows/s, ETA 40 s, updated 2025-01-02T03:04:30.000Z',
    );
  });

  it('no ETA before a unit is done or once finished; a failed run shows its error', () => {
    expect(statusOf(record, 20, Date.parse('2025-01-02T03:05:00.000Z')).etaSeconds).toBeUndefined();
    const failed = statusOf({ ...record, state: 'failed', error: 'CONFIG: task x: not allowed' }, 30, Date.parse('2025-01-02T03:05:00.000Z'));
    expect(failed.etaSeconds).toBeUndefined();
    expect(formatStatus(failed)).toMatch(/: failed, 30\/100 chunks .* error: CONFIG: task x: not allowed$/);
    const done = statusOf({ ...record, state: 'complete', finishedAt: '2025-01-02T03:05:20.000Z' }, 100, Date.parse('2025-01-02T04:00:00.000Z'));
    expect(done.rowsDone).toBe(100_000);
    expect(done.rowsPerSecond).toBeCloseTo(1000, 6); // measured up to the finish, not to now
  });
});
