import { describe, expect, it } from 'vitest';
import { DEFAULT_RESTART_POLICY, RestartTracker, backoffMs } from './restarts.js';

describe('restart policy', () => {
  it('waits 1 s after the first exit, doubling up to 30 s', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 20].map((n) => backoffMs(n, DEFAULT_RESTART_POLICY))).toEqual([1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
  });

  it('gives up at the maxCrashes-th exit in a row', () => {
    const t = new RestartTracker({ ...DEFAULT_RESTART_POLICY, maxCrashes: 3 });
    expect(t.exited(0)).toEqual({ restart: true, delayMs: 1000, crashes: 1 });
    expect(t.exited(5000)).toEqual({ restart: true, delayMs: 2000, crashes: 2 });
    expect(t.exited(9000)).toEqual({ restart: false, crashes: 3 });
  });

  it('a child that served for stableMs starts a new row; a shorter run does not', () => {
    const t = new RestartTracker({ ...DEFAULT_RESTART_POLICY, maxCrashes: 3 });
    t.serving(0);
    expect(t.exited(1000)).toMatchObject({ restart: true, crashes: 1 });
    t.serving(2000);
    expect(t.exited(2000 + 59_999)).toMatchObject({ restart: true, delayMs: 2000, crashes: 2 }); // served just under a minute
    t.serving(70_000);
    expect(t.exited(70_000 + 60_000)).toEqual({ restart: true, delayMs: 1000, crashes: 1 }); // served a minute: a new row
    expect(t.exited(131_000)).toMatchObject({ crashes: 2 }); // exited again without serving
    expect(t.exited(140_000)).toEqual({ restart: false, crashes: 3 });
  });
});
