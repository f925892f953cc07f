/**
 * A lock between processes for one-time work in the shared cache (a venv, Maven jars, an
 * apt install): a directory made with mkdir (atomic) holding the holder's pid. A lock whose
 * holder is gone is taken over.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

const POLL_MS = 250;

export interface LockOptions {
  /** Says the work is done (another holder finished it): then the lock is not taken. */
  readonly done: () => Promise<boolean>;
  /** How long to wait for another holder before failing. */
  readonly waitMs: number;
}

/** Takes the lock directory, or returns undefined once `done()` says another holder finished the work. */
export async function acquireLock(lockDir: string, options: LockOptions): Promise<(() => Promise<void>) | undefined> {
  const deadline = Date.now() + options.waitMs;
  for (;;) {
    try {
      await mkdir(lockDir);
      await writeFile(join(lockDir, 'pid'), String(process.pid));
      return () => rm(lockDir, { recursive: true, force: true });
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw err;
    }
    if (await options.done()) return undefined;
    const holder = Number.parseInt((await readText(join(lockDir, 'pid'))) ?? '', 10);
    if (Number.isInteger(holder) && !isAlive(holder)) {
      await rm(lockDir, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new Error(`lock ${lockDir} still held by pid ${Number.isNaN(holder) ? '?' : holder} after ${options.waitMs / 1000} s`);
    }
    await delay(POLL_MS);
  }
}

/**
 * Runs `work` once across processes: returns at once when `done()` is true, else under the
 * lock (re-checking `done()` there, since another holder may have finished meanwhile).
 */
export async function onceUnderLock(lockDir: string, options: LockOptions, work: () => Promise<void>): Promise<void> {
  if (await options.done()) return;
  const release = await acquireLock(lockDir, options);
  if (release === undefined) return;
  try {
    if (!(await options.done())) await work();
  } finally {
    await release();
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return isErrno(err, 'EPERM');
  }
}

export async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

export function isErrno(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}
