/** How many jobs a BullMQ queue holds in each state, and its dead letters. */
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { redisKeys } from '@inferq/shared';

/** The states counted, BullMQ's names. */
export const JOB_STATES = ['waiting', 'active', 'delayed', 'prioritized', 'waiting-children', 'completed', 'failed'] as const;
export type JobState = (typeof JOB_STATES)[number];

export interface QueueCounts {
  readonly jobs: Readonly<Record<JobState, number>>;
  /** Entries of the queue's dead-letter stream (`<prefix>:<queue>:dead`). */
  readonly deadLetters: number;
}

/** Counts of queue `queue` under `prefix`, read with `connection` (left open: the caller owns it). */
export async function queueCounts(connection: Redis, prefix: string, queue: string): Promise<QueueCounts> {
  const q = new Queue(queue, { connection, prefix });
  try {
    const [jobs, deadLetters] = await Promise.all([q.getJobCounts(...JOB_STATES), connection.xlen(redisKeys(prefix, queue).deadLetters)]);
    const counts = Object.fromEntries(JOB_STATES.map((s) => [s, jobs[s] ?? 0])) as Record<JobState, number>;
    return { jobs: counts, deadLetters };
  } finally {
    await q.close();
  }
}
