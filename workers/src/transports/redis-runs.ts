/**
 * What a Redis worker remembers about one run of a job, in a hash that lives as long as the
 * BullMQ job (deleted when it completes, expiring after `ttlSeconds` otherwise):
 *
 *   <prefix>:<queue>:run:<job id>:<created at>   sunk:<id> → JSON { sink key: [files] }   replied → 1
 *
 * A job delivered again (a crash, a stalled lock) is the same run: it finds its rows'
 * files and its reply recorded. A new job that reuses a completed job's id has another
 * creation time, so it is another run and starts clean.
 */
import type { ChainableCommander, Redis } from 'ioredis';
import { InferqError } from '@inferq/shared';
import type { RedisKeys } from '@inferq/shared';
import type { RollJournal, RollRecord, SinkJob } from '../sinks/roll-coordinator.js';

/** The run of a BullMQ job: its id and its creation time (kept by retries and stalled redeliveries). */
export const runOf = (job: { readonly id?: string | undefined; readonly timestamp: number }): string => `${job.id ?? ''}:${job.timestamp}`;

export class RedisRuns implements RollJournal {
  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly ttlSeconds = 7 * 86_400,
  ) {}

  async record(entries: readonly { readonly job: SinkJob; readonly files: RollRecord }[]): Promise<void> {
    const pipeline = this.redis.pipeline();
    for (const { job, files } of entries) {
      const key = this.keys.run(job.run);
      pipeline.hset(key, `sunk:${job.id}`, JSON.stringify(files));
      pipeline.expire(key, this.ttlSeconds);
    }
    await execAll(pipeline);
  }

  /** The recorded files of the job, parsed but unchecked (undefined when none or not JSON). */
  async lookup(job: SinkJob): Promise<unknown> {
    const text = await this.redis.hget(this.keys.run(job.run), `sunk:${job.id}`);
    if (text === null) return undefined;
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return { invalid: text.slice(0, 100) };
    }
  }

  async forget(jobs: readonly SinkJob[]): Promise<void> {
    if (jobs.length === 0) return;
    const pipeline = this.redis.pipeline();
    for (const job of jobs) pipeline.hdel(this.keys.run(job.run), `sunk:${job.id}`);
    await execAll(pipeline);
  }

  /** Queues the mark that the run's reply went out (in the transaction that writes the reply). */
  markReplied(tx: ChainableCommander, run: string): void {
    tx.hset(this.keys.run(run), 'replied', '1');
    tx.expire(this.keys.run(run), this.ttlSeconds);
  }

  async replied(run: string): Promise<boolean> {
    return (await this.redis.hexists(this.keys.run(run), 'replied')) === 1;
  }

  /** Forgets a completed run. */
  async done(run: string): Promise<void> {
    await this.redis.del(this.keys.run(run));
  }
}

/** Runs a pipeline or transaction and throws the first command error (so a failed write is never taken for an ack). */
export async function execAll(pipeline: ChainableCommander): Promise<void> {
  const results = await pipeline.exec();
  const failed = results?.find(([err]) => err !== null);
  if (results === null || failed !== undefined) {
    throw new InferqError(`redis write failed: ${failed?.[0]?.message ?? 'transaction aborted'}`, { retriable: true });
  }
}
