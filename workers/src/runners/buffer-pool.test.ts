import { describe, expect, it } from 'vitest';
import { BUFFER_POOL_DEFAULTS, BufferPool } from './buffer-pool.js';

describe('BufferPool', () => {
  it('hands back a returned buffer of the same size, keeps at most perSize per size and maxBytes in all', () => {
    const pool = BufferPool.plain({ perSize: 2, maxBytes: 100 });
    const a = pool.take(40);
    expect(a.byteLength).toBe(40);
    expect(pool.give(a)).toBe(true);
    expect(pool.heldBytes).toBe(40);
    expect(pool.take(40)).toBe(a);
    expect(pool.take(40)).not.toBe(a); // none left: a new one
    expect(pool.heldBytes).toBe(0);
    expect([0, 1, 2].map(() => pool.give(new ArrayBuffer(20)))).toEqual([true, true, false]); // two of one size
    expect(pool.heldBytes).toBe(40);
    expect(pool.give(new ArrayBuffer(50))).toBe(true);
    expect(pool.heldBytes).toBe(90);
    expect(pool.give(new ArrayBuffer(30))).toBe(false); // over maxBytes: dropped
    expect(pool.heldBytes).toBe(90);
    expect(pool.take(30).byteLength).toBe(30); // a size it does not hold: a new one, nothing taken from the others
    expect(pool.heldBytes).toBe(90);
  });

  it('keeps no empty buffer, and a kept buffer comes back with what it held (not zeroed)', () => {
    const pool = BufferPool.plain();
    expect(pool.give(new ArrayBuffer(0))).toBe(false);
    expect(pool.heldBytes).toBe(0);
    const b = pool.take(8);
    new Uint8Array(b).set([1, 2, 3, 4, 5, 6, 7, 8]);
    pool.give(b);
    expect(Array.from(new Uint8Array(pool.take(8)))).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('defaults to 4 buffers a size and 64 MiB in all', () => {
    expect(BUFFER_POOL_DEFAULTS).toEqual({ perSize: 4, maxBytes: 64 * 1024 * 1024 });
    const pool = BufferPool.plain();
    expect(Array.from({ length: 5 }, () => pool.give(new ArrayBuffer(1024)))).toEqual([true, true, true, true, false]);
    const mb16 = 16 * 1024 * 1024;
    expect(Array.from({ length: 4 }, () => pool.give(new ArrayBuffer(mb16)))).toEqual([true, true, true, false]); // 4 KiB + 48 MiB held: a fourth 16 MiB is over
    expect(pool.heldBytes).toBe(4 * 1024 + 3 * mb16);
  });

  it('plain() makes ArrayBuffers and shared() SharedArrayBuffers', () => {
    expect(BufferPool.plain().take(16)).toBeInstanceOf(ArrayBuffer);
    const shared = BufferPool.shared();
    const s = shared.take(16);
    expect(s).toBeInstanceOf(SharedArrayBuffer);
    shared.give(s);
    expect(shared.take(16)).toBe(s);
  });
});
