/** What a Redis worker writes back: reply stream entries (a Sink) and dead letters. */
import type { Job } from 'bullmq';
import type { ChainableCommander, Redis } from 'ioredis';
import { REPLY_FIELDS, encodeEnvelope } from '@inferq/shared';
import type { JobData, RedisKeys } from '@inferq/shared';
import type { Sink, SinkJob, SinkResult, WriteOutcome } from '../../sinks/sink.js';
import type { DeadLetter } from '../source.js';
import { execAll } from './runs.js';
import type { RedisRuns } from './runs.js';

/** Approximate length cap of dead-letter streams (XADD MAXLEN ~). */
const DEAD_LETTER_MAX_LEN = '1000000';

export class RedisReplies implements Sink {
  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly runs: RedisRuns,
    private readonly maxLen: number,
  ) {}

  /**
   * One reply entry in the job's reply stream — for a pack, one entry for all its jobs (the
   * result envelope lists them, `jobs` counts them) — written with the run's "replied" mark.
   */
  async write(job: SinkJob, result: SinkResult): Promise<WriteOutcome> {
    if (job.replyTo === undefined) return 'written';
    const bytes = encodeEnvelope({ id: job.id, model: result.model, version: result.version, rowIds: job.rowIds, jobs: job.jobs }, result.outputs);
    const fields: (string | Buffer)[] = [REPLY_FIELDS.status, 'ok', REPLY_FIELDS.env, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)];
    if (job.jobs !== undefined) fields.push(REPLY_FIELDS.jobs, String(job.jobs.length));
    const tx = this.redis.multi();
    tx.xadd(job.replyTo, 'MAXLEN', '~', String(this.maxLen), '*', REPLY_FIELDS.id, job.id, ...fields);
    this.runs.markReplied(tx, job.run);
    await execAll(tx);
    return 'written';
  }

  /** Nothing is buffered: every reply is written when write() is called. */
  async flush(): Promise<boolean> {
    return true;
  }

  /** Dead letters in the queue's dead-letter stream, and an error reply for each that asks for one. */
  async deadLetter(job: Job, letters: readonly DeadLetter[]): Promise<void> {
    const data = (typeof job.data === 'object' && job.data !== null ? job.data : {}) as Partial<JobData>;
    const tx = this.redis.pipeline();
    for (const l of letters) addDeadLetter(tx, this.keys, l, typeof data.key === 'string' ? data.key : '', this.maxLen);
    await execAll(tx);
  }
}

function addDeadLetter(tx: ChainableCommander, keys: RedisKeys, l: DeadLetter, payloadKey: string, replyMaxLen: number): void {
  tx.xadd(
    keys.deadLetters,
    'MAXLEN', '~', DEAD_LETTER_MAX_LEN,
    '*',
    'id', l.id,
    'code', l.code,
    'reason', l.reason,
    'retriable', String(l.retriable),
    'kind', l.kind,
    'model', l.model,
    'version', l.version,
    'attempts', String(l.attempts),
    'payloadKey', payloadKey,
    'ts', String(Date.now()),
  );
  if (l.reply && l.replyTo !== undefined) {
    tx.xadd(l.replyTo, 'MAXLEN', '~', String(replyMaxLen), '*', REPLY_FIELDS.id, l.id, REPLY_FIELDS.status, 'error', REPLY_FIELDS.error, l.reason, REPLY_FIELDS.code, l.code, REPLY_FIELDS.retriable, String(l.retriable), REPLY_FIELDS.kind, l.kind, REPLY_FIELDS.model, l.model);
  }
}
