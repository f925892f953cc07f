/** What a Redis worker writes back: reply stream entries (a Sink) and dead letters. */
import { randomUUID } from 'node:crypto';
import type { Job } from 'bullmq';
import type { ChainableCommander, Redis } from 'ioredis';
import { REPLY_FIELDS, checkJobData, encodeEnvelope } from '@inferq/shared';
import type { RedisKeys } from '@inferq/shared';
import { DEAD_LETTER_PAYLOAD_DEFAULTS, deadPayloadPrefix, keptPayloads } from '../../admin/letter-payload.js';
import type { Sink, SinkJob, SinkResult, WriteOutcome } from '../../sinks/sink.js';
import type { DeadLetter } from '../source.js';
import { execAll } from './runs.js';
import type { RedisRuns } from './runs.js';

/** Approximate length cap of dead-letter streams (XADD MAXLEN ~). */
const DEAD_LETTER_MAX_LEN = '1000000';

/** Error codes whose job has no payload of ours to keep (missing, too large, or named by forged job data). */
const NO_PAYLOAD_CODES: ReadonlySet<string> = new Set(['BAD_JOB_DATA', 'PAYLOAD_MISSING', 'PAYLOAD_TOO_LARGE']);

/** How dead letters keep their job's payload for a replay (docs/dead-letters.md). */
export interface DeadLetterPayloadOptions {
  /** Expiry of a dead letter's payload copy. Default 7 days. */
  readonly ttlSeconds?: number;
  /** Payloads larger than this are not kept (the dead letter says so). Default 64 MiB. */
  readonly maxBytes?: number;
}

export class RedisReplies implements Sink {
  private readonly payloadTtlSeconds: number;
  private readonly payloadMaxBytes: number;

  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly runs: RedisRuns,
    private readonly maxLen: number,
    deadLetterPayloads: DeadLetterPayloadOptions = {},
  ) {
    this.payloadTtlSeconds = deadLetterPayloads.ttlSeconds ?? DEAD_LETTER_PAYLOAD_DEFAULTS.ttlSeconds;
    this.payloadMaxBytes = deadLetterPayloads.maxBytes ?? DEAD_LETTER_PAYLOAD_DEFAULTS.maxBytes;
  }

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

  /**
   * Dead letters in the queue's dead-letter stream, each with a copy of its own payload (a
   * packed job: its rows only) under a key that expires, and an error reply for each that asks
   * for one. The copy lets `inferq dead-letters replay` send the job again after the queue job
   * and its payload key are gone.
   */
  async deadLetter(job: Job, letters: readonly DeadLetter[]): Promise<void> {
    const raw = (typeof job.data === 'object' && job.data !== null ? job.data : {}) as { key?: unknown };
    const payloadKey = typeof raw.key === 'string' ? raw.key : '';
    const kept = await this.keptPayloads(job, letters);
    const tx = this.redis.pipeline();
    for (const l of letters) {
      const bytes = kept.get(l.id);
      let copy = '';
      if (bytes !== undefined) {
        copy = `${deadPayloadPrefix(this.keys)}${randomUUID()}`;
        tx.set(copy, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), 'EX', this.payloadTtlSeconds);
      }
      addDeadLetter(tx, this.keys, l, { payloadKey, payload: copy, payloadBytes: bytes?.byteLength, job: job.id ?? '' }, this.maxLen);
    }
    await execAll(tx);
  }

  /** The payload bytes each letter keeps (none for a payload that is not ours, is gone or is over the limit). */
  private async keptPayloads(job: Job, letters: readonly DeadLetter[]): Promise<Map<string, Uint8Array>> {
    const data = checkJobData(job.data);
    if (typeof data === 'string' || data.bytes > this.payloadMaxBytes || letters.every((l) => NO_PAYLOAD_CODES.has(l.code))) return new Map();
    let bytes: Uint8Array | null;
    if (data.b64 !== undefined) {
      bytes = data.b64.length > Math.ceil((this.payloadMaxBytes * 4) / 3) + 4 ? null : new Uint8Array(Buffer.from(data.b64, 'base64'));
    } else if (data.key!.startsWith(this.keys.payloadPrefix)) {
      bytes = await this.redis.getBuffer(data.key!);
    } else {
      bytes = null; // a key this queue does not own is never read
    }
    if (bytes === null || bytes.byteLength > this.payloadMaxBytes) return new Map();
    const ids = letters.filter((l) => !NO_PAYLOAD_CODES.has(l.code)).map((l) => l.id);
    return keptPayloads(bytes, job.id ?? '', ids);
  }
}

interface LetterPayload {
  /** The queue job's own payload key ('' for an inline payload). */
  readonly payloadKey: string;
  /** The dead letter's copy of its payload ('' when none is kept). */
  readonly payload: string;
  readonly payloadBytes: number | undefined;
  /** The queue job the letter comes from (a pack's id for a packed job). */
  readonly job: string;
}

function addDeadLetter(tx: ChainableCommander, keys: RedisKeys, l: DeadLetter, p: LetterPayload, replyMaxLen: number): void {
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
    'payloadKey', p.payloadKey,
    'ts', String(Date.now()),
    'job', p.job,
    'payload', p.payload,
    'payloadBytes', p.payloadBytes === undefined ? '' : String(p.payloadBytes),
  );
  if (l.reply && l.replyTo !== undefined) {
    tx.xadd(l.replyTo, 'MAXLEN', '~', String(replyMaxLen), '*', REPLY_FIELDS.id, l.id, REPLY_FIELDS.status, 'error', REPLY_FIELDS.error, l.reason, REPLY_FIELDS.code, l.code, REPLY_FIELDS.retriable, String(l.retriable), REPLY_FIELDS.kind, l.kind, REPLY_FIELDS.model, l.model);
  }
}
