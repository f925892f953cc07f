/** The cache lock: one-time work (jar fetches, apt, the venv) runs once however many ask at once. */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { onceUnderLock } from './lock.js';

async function setup(): Promise<{ lock: string; marker: string; done: () => Promise<boolean> }> {
  const dir = await mkdtemp(join(tmpdir(), 'inferq-lock-test-'));
  const marker = join(dir, 'done');
  return { lock: join(dir, 'work.lock'), marker, done: () => Promise.resolve(existsSync(marker)) };
}

describe('onceUnderLock', () => {
  it('runs the work once when several ask at the same time, and not at all once it is done', async () => {
    const { lock, marker, done } = await setup();
    let runs = 0;
    const work = async (): Promise<void> => {
      runs++;
      for (let i = 0; i < 20; i++) await tick(); // the others ask while this holds the lock
      await writeFile(marker, 'ok');
    };
    await Promise.all(Array.from({ length: 5 }, () => onceUnderLock(lock, { done, waitMs: 10_000 }, work)));
    expect(runs).toBe(1);
    await onceUnderLock(lock, { done, waitMs: 10_000 }, work);
    expect(runs).toBe(1);
    expect(existsSync(lock)).toBe(false);
  });

  it('takes over a lock whose holder is gone', async () => {
    const { lock, marker, done } = await setup();
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    await mkdir(lock);
    await writeFile(join(lock, 'pid'), String(dead));
    await onceUnderLock(lock, { done, waitMs: 10_000 }, () => writeFile(marker, 'ok'));
    expect(existsSync(marker)).toBe(true);
  });

  it('gives up on a live holder after waitMs, naming the lock and the holder', async () => {
    const { lock, done } = await setup();
    await mkdir(lock);
    await writeFile(join(lock, 'pid'), String(process.pid));
    await expect(onceUnderLock(lock, { done, waitMs: 300 }, () => Promise.resolve())).rejects.toThrow(`lock ${lock} still held by pid ${process.pid} after 0.3 s`);
  });

  it('releases the lock when the work fails, so a later call can retry', async () => {
    const { lock, marker, done } = await setup();
    await expect(onceUnderLock(lock, { done, waitMs: 10_000 }, () => Promise.reject(new Error('mvn: Maven Central unreachable')))).rejects.toThrow('Maven Central unreachable');
    expect(existsSync(lock)).toBe(false);
    await onceUnderLock(lock, { done, waitMs: 10_000 }, () => writeFile(marker, 'ok'));
    expect(existsSync(marker)).toBe(true);
  });
});
