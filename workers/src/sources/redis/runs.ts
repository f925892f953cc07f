/**
 * What a Redis worker remembers about one run of a job, in a hash that lives as long as the
 * BullMQ job (deleted when it completes, expiring after `ttlSeconds` otherwise):
 *
 *   <prefix>:<queue>:run:<job id>:<created at>   sunk:<id> → JSON { sink key: [files] }   replied → 1
 *
 * A job delivered again (a crash, a stalled lock, a hand-back) is the same run: it finds its
 * rows' files and its reply recorded. A new job that reuses a completed job's id has another
 * creation time, so it is another run and starts clean.
 */
import type { ChainableCommander, Redis } from 'ioredis';
import { InferqError, printable } from '@inferq/shared';
import type { RedisKeys } from '@inferq/shared';
import type { Logger } from '../../logging.js';
import type { ParquetSink } from '../../sinks/parquet-sink.js';
import type { RollJournal, RollRecord, SinkJob } from '../../sinks/sink.js';
import type { SinkSet } from '../../sinks/sink-set.js';

/** The run of a BullMQ job: its id and its creation time (kept by retries, stalled redeliveries and hand-backs). */
export const runOf = (job: { readonly id?: string | undefined; readonly timestamp: number }): string => `${job.id ?? ''}:${job.timestamp}`;

export class RedisRuns implements RollJournal {
  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly log: Logger,
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

  /** The sinks whose recorded files of this run all exist; a record naming anything else is ignored (it may be forged). */
  async written(job: SinkJob, targets: readonly { readonly key: string; readonly sink: ParquetSink }[], sinks: SinkSet): Promise<Set<string>> {
    const done = new Set<string>();
    const text = await this.redis.hget(this.keys.run(job.run), `sunk:${job.id}`);
    if (text === null) return done;
    let record: unknown;
    try {
      record = JSON.parse(text);
    } catch {
      record = undefined;
    }
    if (typeof record !== 'object' || record === null || Array.isArray(record)) {
      this.log.warn({ jobId: printable(job.id), run: printable(job.run) }, 'ignoring a roll record that is not an object');
      return done;
    }
    for (const [key, files] of Object.entries(record as Record<string, unknown>)) {
      if (!targets.some((t) => t.key === key)) continue;
      const checked = await sinks.recordedFiles(key, files, job.id);
      if (checked === undefined) {
        this.log.warn({ jobId: printable(job.id), run: printable(job.run), sink: printable(key) }, 'ignoring a roll record that names files outside the sinks this worker may write');
        continue;
      }
      const present = await Promise.all(checked.files.map((f) => checked.sink.location.store.exists(f)));
      if (present.every(Boolean)) done.add(key);
    }
    return done;
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
}

/** Runs a pipeline or transaction and throws the first command error (so a failed write is never taken for an ack). */
export async function execAll(pipeline: ChainableCommander): Promise<void> {
  const results = await pipeline.exec();
  const failed = results?.find(([err]) => err !== null);
  if (results === null || failed !== undefined) {
    throw new InferqError(`redis write failed: ${failed?.[0]?.message ?? 'transaction aborted'}`, { retriable: true, code: 'UNAVAILABLE' });
  }
}
