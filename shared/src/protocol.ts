/**
 * What travels over the queues besides the tensor envelope: key names, the
 * BullMQ job data, reply and dead-letter stream fields. Shared by the producer
 * SDK and the workers so both sides agree by construction.
 */

/** Names of the Redis keys of one inferq queue. BullMQ's own keys use the same prefix. */
export interface RedisKeys {
  /** Binary envelope of a job (payload mode "key"). */
  payload(jobId: string): string;
  /** Dead letters: a stream of { id, reason, kind, model, version, attempts, ts, payloadKey }. */
  readonly deadLetters: string;
  /** Default reply inbox of one producer instance (for predict()). */
  inbox(producerId: string): string;
}

export const DEFAULT_PREFIX = 'inferq';
export const DEFAULT_QUEUE = 'inferq';

export function redisKeys(prefix: string, queue: string): RedisKeys {
  const base = `${prefix}:${queue}`;
  return {
    payload: (jobId) => `${base}:payload:${jobId}`,
    deadLetters: `${base}:dead`,
    inbox: (producerId) => `${base}:inbox:${producerId}`,
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
  return d as unknown as JobData;
}

/** Fields of a reply stream entry. `env` (binary result envelope) on success, `error`/`kind` on failure. */
export const REPLY_FIELDS = { id: 'id', status: 'status', env: 'env', error: 'error', kind: 'kind', model: 'model', version: 'version' } as const;
