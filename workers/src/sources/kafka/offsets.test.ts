/** The Kafka worker's commit rule: never past a message whose results are not written, however messages finish. */
import { describe, expect, it } from 'vitest';
import { OffsetTracker, startedUpTo } from './offsets.js';

const pending = (t: OffsetTracker): Record<string, string> => Object.fromEntries(t.pending().map((o) => [`${o.topic}/${o.partition}`, o.offset]));

describe('OffsetTracker', () => {
  it('commits up to the first unfinished offset when messages finish out of order', () => {
    const t = new OffsetTracker();
    for (let o = 10; o <= 15; o++) expect(t.take('a', 0, o)).toBe(true);
    t.done('a', 0, 11);
    t.done('a', 0, 13);
    expect(pending(t)).toEqual({ 'a/0': '10' }); // 10 still running: nothing past it may be committed
    t.done('a', 0, 10);
    expect(pending(t)).toEqual({ 'a/0': '12' });
    t.done('a', 0, 14);
    t.done('a', 0, 12);
    expect(pending(t)).toEqual({ 'a/0': '15' });
    t.done('a', 0, 15);
    expect(pending(t)).toEqual({ 'a/0': '16' });
  });

  it('keeps partitions apart, handles gaps in offsets, and reports only offsets that moved since the last commit', () => {
    const t = new OffsetTracker();
    for (const o of [3, 7, 8]) t.take('a', 1, o); // compaction left gaps
    for (const o of [0, 1]) t.take('a', 2, o);
    t.done('a', 2, 1);
    t.done('a', 1, 3);
    expect(pending(t)).toEqual({ 'a/1': '7', 'a/2': '0' });
    t.committed(t.pending());
    expect(pending(t)).toEqual({});
    t.done('a', 1, 8);
    t.done('a', 1, 7);
    t.done('a', 2, 0);
    expect(pending(t)).toEqual({ 'a/1': '9', 'a/2': '2' });
  });

  it('a redelivered offset is refused (not run twice); a revoked partition is forgotten and never committed again', () => {
    const t = new OffsetTracker();
    for (let o = 0; o < 5; o++) t.take('a', 0, o);
    t.take('a', 1, 0);
    expect(t.take('a', 0, 2)).toBe(false);
    expect(t.take('a', 0, 5)).toBe(true);
    t.committed(t.pending());
    t.retain(new Map([['a', [0]]]));
    t.done('a', 1, 0);
    expect(t.partitions()).toEqual([{ topic: 'a', partition: 0 }]);
    expect(pending(t)).toEqual({});
    // Reassigned later, it starts fresh from what Kafka redelivers.
    expect(t.take('a', 1, 0)).toBe(true);
    // After a rebalance every position is offered again, even unchanged ones.
    for (let o = 0; o <= 5; o++) t.done('a', 0, o);
    t.committed(t.pending());
    expect(pending(t)).toEqual({});
    t.recommitAll();
    expect(pending(t)).toEqual({ 'a/0': '6', 'a/1': '0' }); // partition 1: taken again, nothing done, so its start
  });

  it('each commit carries the highest offset taken, and offers it again when only that moved', () => {
    const t = new OffsetTracker();
    for (let o = 0; o <= 3; o++) t.take('a', 0, o);
    t.done('a', 0, 0);
    expect(t.pending()).toEqual([{ topic: 'a', partition: 0, offset: '1', metadata: '3' }]);
    t.committed(t.pending());
    expect(t.pending()).toEqual([]);
    // Message 1 is still running while 4..9 are taken (and may be answered): the metadata moves on its own.
    for (let o = 4; o <= 9; o++) t.take('a', 0, o);
    expect(t.pending()).toEqual([{ topic: 'a', partition: 0, offset: '1', metadata: '9' }]);
    t.committed(t.pending());
    expect(t.pending()).toEqual([]);
    expect(startedUpTo('9')).toBe(9);
    for (const bad of [null, undefined, '', 'x', '-1', '1e3', ' 7']) expect(startedUpTo(bad)).toBe(-1);
  });

  it('stays correct over a long run with random completion order (compaction of its arrays included)', () => {
    const t = new OffsetTracker();
    const n = 20_000;
    for (let o = 0; o < n; o++) t.take('a', 0, o);
    const order = Array.from({ length: n }, (_, i) => i);
    let seed = 7;
    for (let i = n - 1; i > 0; i--) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const j = seed % (i + 1);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const doneSet = new Set<number>();
    let first = 0;
    t.committed(t.pending()); // position 0, highest taken n - 1
    let lastCommitted = 0;
    for (const o of order) {
      t.done('a', 0, o);
      doneSet.add(o);
      while (doneSet.has(first)) first++;
      const p = t.pending()[0];
      if (first > lastCommitted) expect(p?.offset).toBe(String(first));
      else expect(p).toBeUndefined();
      if (p !== undefined && o % 97 === 0) {
        t.committed([p]);
        lastCommitted = Number(p.offset);
      }
    }
    expect(first).toBe(n);
  });
});
