/**
 * Locks in Redis with an owner and an expiry: at most one run of a table (or of an output
 * folder) at a time. A process holds its lock under its own name and renews it while it works;
 * a distributed run holds it under the run's name, so any worker of the run renews it, and it
 * expires once no one works on the run.
 */
import type { Redis } from 'ioredis';

const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`;
const UNLOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;
// Renews the lock for its owner, or takes it when it is free (a run whose lock expired while no one worked on it).
const CLAIM = `local h = redis.call('GET', KEYS[1])
if h == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return '' end
if not h then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return '' end
return h`;

/** The lock value of a distributed run. */
export const runLockValue = (runId: string): string => `run:${runId}`;

/** Takes a free lock; returns the holder when it is not free. */
export async function acquireLock(redis: Redis, key: string, owner: string, ttlMs: number): Promise<string | undefined> {
  if ((await redis.set(key, owner, 'PX', ttlMs, 'NX')) === 'OK') return undefined;
  return (await redis.get(key)) ?? 'another process';
}

export async function renewLock(redis: Redis, key: string, owner: string, ttlMs: number): Promise<void> {
  await redis.eval(RENEW, 1, key, owner, String(ttlMs));
}

export async function releaseLock(redis: Redis, key: string, owner: string): Promise<void> {
  await redis.eval(UNLOCK, 1, key, owner);
}

/** Renews the lock for `owner`, or takes it when free; returns the other holder when someone else has it. */
export async function claimLock(redis: Redis, key: string, owner: string, ttlMs: number): Promise<string | undefined> {
  const holder = (await redis.eval(CLAIM, 1, key, owner, String(ttlMs))) as string;
  return holder === '' ? undefined : holder;
}
