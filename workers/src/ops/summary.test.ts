/** The periodic throughput line: rates over the interval, from running totals. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { captureLogger } from '../../../test/helpers/models.js';
import type { Totals } from './metrics.js';
import { startSummary, summaryLine } from './summary.js';

const zero: Totals = { jobs: 0, rows: 0, deadLetters: 0, retried: 0, batches: 0, batchRows: 0, pendingRows: 0 };

afterEach(() => {
  vi.useRealTimers();
});

describe('summary line', () => {
  it('gives the interval’s rates, counts and mean batch, and the pending rows now', () => {
    const prev: Totals = { jobs: 10, rows: 1000, deadLetters: 1, retried: 0, batches: 4, batchRows: 1000, pendingRows: 7 };
    const cur: Totals = { jobs: 70, rows: 7000, deadLetters: 4, retried: 2, batches: 10, batchRows: 7000, pendingRows: 33 };
    expect(summaryLine(prev, cur, 30_000)).toEqual({ seconds: 30, jobsPerSec: 2, rowsPerSec: 200, deadLetters: 3, retried: 2, batches: 6, meanBatchRows: 1000, pendingRows: 33 });
    expect(summaryLine(cur, cur, 2000)).toEqual({ seconds: 2, jobsPerSec: 0, rowsPerSec: 0, deadLetters: 0, retried: 0, batches: 0, meanBatchRows: 0, pendingRows: 33 });
  });

  it('logs one info line per interval with the deltas since the previous line, and stops', () => {
    vi.useFakeTimers();
    const { logger, lines } = captureLogger();
    let totals: Totals = zero;
    let clock = 0;
    const s = startSummary({ intervalMs: 1000, totals: () => totals, logger, now: () => clock });
    totals = { ...zero, jobs: 5, rows: 50, batches: 2, batchRows: 50 };
    clock = 1000;
    vi.advanceTimersByTime(1000);
    totals = { ...totals, jobs: 8, rows: 80, deadLetters: 1, pendingRows: 3 };
    clock = 2000;
    vi.advanceTimersByTime(1000);
    s.stop();
    vi.advanceTimersByTime(5000);
    expect(lines.map((l) => [l['level'], l['msg'], l['jobsPerSec'], l['rowsPerSec'], l['deadLetters'], l['meanBatchRows'], l['pendingRows']])).toEqual([
      [30, 'throughput', 5, 50, 0, 25, 0],
      [30, 'throughput', 3, 30, 1, 0, 3],
    ]);
  });

  it('0 means no line', () => {
    vi.useFakeTimers();
    const { logger, lines } = captureLogger();
    startSummary({ intervalMs: 0, totals: () => zero, logger }).stop();
    vi.advanceTimersByTime(60_000);
    expect(lines).toEqual([]);
  });
});
