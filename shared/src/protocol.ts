/**
 * What travels over the queues besides the tensor envelope: key names, the
 * BullMQ job data, reply and dead-letter stream fields. Shared by the
 * producer SDK and the workers so both sides agree by construction.
 */
import { crc32 } from './checksum.js';

/** Names of the Redis keys of one inferq queue. BullMQ's own keys use the same prefix. */
export interface RedisKeys {
  /** Binary envelope of a job (payload mode "key"). */
  payload(jobId: string): string;
  /** What every payload key of the queue starts with (a worker reads no other key a job names). */
  readonly payloadPrefix: string;
  /** Dead letters: a stream of { id, code, reason, retriable, kind, model, version, attempts, payloadKey, ts, job, payload, payloadBytes }. */
  readonly deadLetters: string;
  /** What the keys of dead letters' payload copies start with (`payload` of a dead letter; kept for replay, with a TTL). */
  readonly deadLetterPayloadPrefix: string;
  /** Default reply inbox of one producer instance (for predict()). */
  inbox(producerId: string): string;
  /**
   * One run of a job (`<job id>:<BullMQ creation time>`): a hash of the sink files holding its
   * rows (`sunk:<id>`, JSON, recorded before they are published) and whether its reply went out
   * (`replied`). A later job that reuses the id is another run, with a record of its own.
   */
  run(runId: string): string;
}

export const DEFAULT_PREFIX = 'inferq';
export const DEFAULT_QUEUE = 'inferq';

export function redisKeys(prefix: string, queue: string): RedisKeys {
  const base = `${prefix}:${queue}`;
  return {
    payload: (jobId) => `${base}:payload:${jobId}`,
    payloadPrefix: `${base}:payload:`,
    deadLetters: `${base}:dead`,
    deadLetterPayloadPrefix: `${base}:dead:payload:`,
    inbox: (producerId) => `${base}:inbox:${producerId}`,
    run: (runId) => `${base}:run:${runId}`,
  };
}

/**
 * BullMQ job data. The envelope travels either under a separate binary key
 * written in the same MULTI as the job (`key`), or base64 inside the job (`b64`).
 */
export interface JobData {
  /** Data format version. */
  readonly v: 1;
  readonly model: string;
  readonly version?: string | undefined;
  readonly rows: number;
  readonly bytes: number;
  readonly key?: string | undefined;
  readonly b64?: string | undefined;
  /** Set when the payload is a packed envelope of this many jobs (the producer's linger). */
  readonly bundle?: number | undefined;
}

/** Validates untrusted job data; returns a reason string when it is not JobData. */
export function checkJobData(value: unknown): JobData | string {
  if (typeof value !== 'object' || value === null) return `job data is ${value === null ? 'null' : typeof value}, expected an object`;
  const d = value as Record<string, unknown>;
  if (d['v'] !== 1) return `job data version ${JSON.stringify(d['v'])} is not supported (expected 1)`;
  if (typeof d['model'] !== 'string' || d['model'] === '') return `job data "model": expected a model name, got ${JSON.stringify(d['model'])}`;
  if (d['version'] !== undefined && typeof d['version'] !== 'string') return `job data "version": expected a string, got ${JSON.stringify(d['version'])}`;
  if (typeof d['bytes'] !== 'number' || !Number.isSafeInteger(d['bytes']) || d['bytes'] < 0) return `job data "bytes": expected a byte count, got ${JSON.stringify(d['bytes'])}`;
  if (typeof d['rows'] !== 'number' || !Number.isSafeInteger(d['rows']) || d['rows'] < 0) return `job data "rows": expected a row count, got ${JSON.stringify(d['rows'])}`;
  const hasKey = typeof d['key'] === 'string';
  const hasB64 = typeof d['b64'] === 'string';
  if (hasKey === hasB64) return 'job data must carry exactly one of "key" (payload key) or "b64" (inline payload)';
  if (d['bundle'] !== undefined && (typeof d['bundle'] !== 'number' || !Number.isSafeInteger(d['bundle']) || d['bundle'] < 1)) {
    return `job data "bundle": expected a count of packed jobs, got ${JSON.stringify(d['bundle'])}`;
  }
  return d as unknown as JobData;
}

/**
 * Fields of a reply stream entry. `env` (binary result envelope) on success; on failure
 * `error` (the message), `code` (an ErrorCode), `retriable` ("true"/"false", see
 * writeRetriable) and `kind` (the worker's error class: informational only).
 */
export const REPLY_FIELDS = {
  id: 'id',
  status: 'status',
  env: 'env',
  error: 'error',
  code: 'code',
  retriable: 'retriable',
  kind: 'kind',
  model: 'model',
  version: 'version',
  jobs: 'jobs',
} as const;


/** Content type of an inferq envelope (the `content-type` header of Kafka messages). */
export const ENVELOPE_CONTENT_TYPE = 'application/x-inferq-envelope';

/**
 * Kafka message headers. Requests: key = job id (or the caller's partition key), value =
 * the envelope, headers id/model/version/reply-to/content-type (the envelope stays the
 * authority; the headers let a worker name the job and answer its caller even when the
 * value is corrupt). Replies: key = job id, value = the result envelope, or empty with
 * status "error" and the error headers. Dead letters: the original key and value, with
 * the reason and where the message came from.
 */
export const KAFKA_HEADERS = {
  id: 'inferq-id',
  model: 'inferq-model',
  version: 'inferq-version',
  replyTo: 'inferq-reply-to',
  /** Row count of the request (lets a worker bound rows in flight before decoding). */
  rows: 'inferq-rows',
  contentType: 'content-type',
  status: 'inferq-status',
  error: 'inferq-error',
  /** The ErrorCode of an error reply or dead letter. */
  code: 'inferq-code',
  /** Whether a retry may help, "true" or "false" (see writeRetriable), on error replies and dead letters. */
  retriable: 'inferq-retriable',
  /** The worker's error class: informational only (classify by `code`). */
  kind: 'inferq-kind',
  sourceTopic: 'inferq-source-topic',
  sourcePartition: 'inferq-source-partition',
  sourceOffset: 'inferq-source-offset',
  attempts: 'inferq-attempts',
  ts: 'inferq-ts',
  /** The worker that answered (host:pid), on replies and dead letters. */
  worker: 'inferq-worker',
} as const;

/** Default dead-letter topic of a request topic. */
export const kafkaDeadLetterTopic = (topic: string): string => `${topic}.dead`;
/** Default reply topic of a producer's predict() calls on a request topic. */
export const kafkaReplyTopic = (topic: string): string => `${topic}.replies`;

/**
 * Redis keys of a precomputed lookup table. A run writes its rows into hash buckets of its
 * own version; readers follow `current` ("<runId>:<buckets>"), swapped in one write when a
 * run completes, so a reader never sees a partial or mixed table.
 */
export interface TableKeys {
  readonly current: string;
  /** The in-progress run (for resume). */
  readonly running: string;
  /** At most one run per table: a lock with an owner and an expiry. */
  readonly lock: string;
  bucket(runId: string, bucket: number): string;
  meta(runId: string): string;
  /** Chunk indices a run has finished (its checkpoint). */
  done(runId: string): string;
}

export function tableKeys(prefix: string, table: string): TableKeys {
  const base = `${prefix}:table:${table}`;
  return {
    current: `${base}:current`,
    running: `${base}:running`,
    lock: `${base}:lock`,
    bucket: (runId, bucket) => `${base}:${runId}:b${bucket}`,
    meta: (runId) => `${base}:${runId}:meta`,
    done: (runId) => `${base}:${runId}:done`,
  };
}

/** The hash bucket of a lookup key: CRC-32 of its UTF-8 bytes, modulo the run's bucket count. */
export function tableBucket(key: string, buckets: number): number {
  // ASCII keys (the usual case) are their own UTF-8 bytes: hash the char codes directly, no
  // encoding and no allocation (precompute hashes every key of the space).
  let c = 0xffffffff;
  for (let i = 0; i < key.length; i++) {
    const code = key.charCodeAt(i);
    if (code >= 0x80) return crc32(new TextEncoder().encode(key)) % buckets;
    c = CRC_TABLE[(c ^ code) & 0xff]! ^ (c >>> 8);
  }
  return ((c ^ 0xffffffff) >>> 0) % buckets;
}

/**
 * {@link tableBucket} of a key given as its UTF-8 bytes, `bytes[start … end)`: precompute
 * hashes keys it already holds as bytes, without a string per key.
 */
export function tableBucketOfBytes(bytes: Uint8Array, start: number, end: number, buckets: number): number {
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return ((c ^ 0xffffffff) >>> 0) % buckets;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** Parses a `current` pointer ("<runId>:<buckets>"); undefined when absent or malformed. */
export function parseTablePointer(value: string | null | undefined): { runId: string; buckets: number } | undefined {
  if (value === null || value === undefined) return undefined;
  const at = value.lastIndexOf(':');
  const buckets = Number(value.slice(at + 1));
  if (at <= 0 || !Number.isSafeInteger(buckets) || buckets < 1) return undefined;
  return { runId: value.slice(0, at), buckets };
}
