/** What a Redis worker writes back: reply stream entries and dead letters, queued on a pipeline or transaction. */
import type { Job } from 'bullmq';
import type { ChainableCommander } from 'ioredis';
import { REPLY_FIELDS, encodeEnvelope } from '@inferq/shared';
import type { Envelope, JobData, RedisKeys } from '@inferq/shared';
import type { Inference } from './infer.js';

/** Approximate length cap of dead-letter streams (XADD MAXLEN ~). */
const DEAD_LETTER_MAX_LEN = '1000000';

/** One reply entry; for a pack, one entry for all its jobs (the result envelope lists them, `jobs` counts them). */
export function addReply(tx: ChainableCommander, envelope: Envelope, result: Inference, maxLen: number): void {
  const jobs = envelope.jobs?.map((j) => ({ id: j.id, rows: j.rows }));
  const bytes = encodeEnvelope({ id: envelope.id, model: result.model.name, version: result.model.version, rowIds: envelope.rowIds, jobs }, result.outputs);
  const fields: (string | Buffer)[] = [REPLY_FIELDS.status, 'ok', REPLY_FIELDS.env, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)];
  if (jobs !== undefined) fields.push(REPLY_FIELDS.jobs, String(jobs.length));
  tx.xadd(envelope.replyTo!, 'MAXLEN', '~', String(maxLen), '*', REPLY_FIELDS.id, envelope.id, ...fields);
}

export interface DeadLetter {
  readonly job: Job;
  /** The failed job's id (a packed job's own). */
  readonly id: string;
  readonly envelope: Envelope | undefined;
  readonly err: unknown;
  /** Also answer the caller with an error reply (not when an ok reply already went out). Default true. */
  readonly reply?: boolean;
}

/** Queues the dead letter (and an error reply when the caller waits for one); written before the job is failed. */
export function addDeadLetter(tx: ChainableCommander, keys: RedisKeys, d: DeadLetter, replyMaxLen: number): void {
  const message = d.err instanceof Error ? d.err.message : String(d.err);
  const kind = d.err instanceof Error ? d.err.constructor.name : 'Error';
  const data = (typeof d.job.data === 'object' && d.job.data !== null ? d.job.data : {}) as Partial<JobData>;
  tx.xadd(
    keys.deadLetters,
    'MAXLEN', '~', DEAD_LETTER_MAX_LEN,
    '*',
    'id', d.id,
    'reason', message,
    'kind', kind,
    'model', String(d.envelope?.model ?? data.model ?? ''),
    'version', String(d.envelope?.version ?? data.version ?? ''),
    'attempts', String(d.job.attemptsMade + 1),
    'payloadKey', String(data.key ?? ''),
    'ts', String(Date.now()),
  );
  if (d.envelope?.replyTo !== undefined && d.reply !== false) {
    tx.xadd(d.envelope.replyTo, 'MAXLEN', '~', String(replyMaxLen), '*', REPLY_FIELDS.id, d.id, REPLY_FIELDS.status, 'error', REPLY_FIELDS.error, message, REPLY_FIELDS.kind, kind, REPLY_FIELDS.model, d.envelope.model);
  }
}
