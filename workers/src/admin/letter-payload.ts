/**
 * What a dead letter keeps of its job's payload, so that it can be replayed exactly, and
 * what a replay sends again. Shared by the worker (which writes dead letters) and the
 * `inferq dead-letters` tools (which read them).
 *
 * ```
 *  a job on its own            ─► its envelope's bytes, as they were
 *  a packed job (linger)       ─► an envelope of its own rows only (id, rows, row ids, deadline)
 *  an undecodable envelope     ─► its bytes, kept for inspection (a replay refuses them)
 *  a payload that was missing, too large or not ours ─► nothing
 * ```
 */
import { decodeEnvelope, encodeEnvelope, unpackJobs } from '@inferq/shared';
import type { Envelope, RedisKeys, TensorMap } from '@inferq/shared';

/** Defaults of the Redis dead-letter payload copies: how long they are kept, and the largest one kept. */
export const DEAD_LETTER_PAYLOAD_DEFAULTS = { ttlSeconds: 7 * 86_400, maxBytes: 64 * 1024 * 1024 } as const;

/** What every dead-letter payload key of a queue starts with: `<prefix>:<queue>:dead:payload:`. */
export const deadPayloadPrefix = (keys: RedisKeys): string => keys.deadLetterPayloadPrefix;

/**
 * The bytes each dead letter keeps, by job id, from the payload of the queue job `jobId`
 * (a pack's own id for a pack). Letters whose id names no job of this payload keep nothing.
 */
export function keptPayloads(bytes: Uint8Array, jobId: string, letterIds: readonly string[]): Map<string, Uint8Array> {
  const wanted = new Set(letterIds);
  const out = new Map<string, Uint8Array>();
  let envelope: Envelope | undefined;
  try {
    envelope = decodeEnvelope(bytes);
  } catch {
    envelope = undefined; // not an envelope: kept as it is for inspection below
  }
  if (envelope?.jobs !== undefined) {
    for (const part of unpackJobs(envelope)) {
      if (wanted.has(part.id) && part.id !== jobId) out.set(part.id, encodeEnvelope(metaOf(part, part.id, part.deadline), part.tensors));
    }
  }
  if (wanted.has(jobId)) out.set(jobId, bytes);
  return out;
}

/** One job a replay enqueues: the model, the tensors and the enqueue options the SDK takes. */
export interface ReplayJob {
  /** The job id the dead letter names (kept unless a new one is asked for). */
  readonly id: string;
  readonly model: string;
  readonly tensors: TensorMap;
  readonly options: { readonly version?: string; readonly replyTo?: string; readonly sinks?: readonly string[]; readonly rowIds?: readonly string[] };
}

/**
 * The jobs a replay of dead letter `letterId` enqueues from its payload: the job itself, or
 * from a pack its own rows (a letter naming the pack itself replays each of its jobs). The
 * deadline is dropped: it had passed, or the caller waiting for it has gone. Returns them with
 * the envelope's own id (a pack's id for a pack), or a reason string when the payload cannot be replayed.
 */
export function replayJobs(bytes: Uint8Array, letterId: string): { readonly envelopeId: string; readonly jobs: ReplayJob[] } | string {
  let envelope: Envelope;
  try {
    envelope = decodeEnvelope(bytes);
  } catch (err) {
    return `its payload is not a valid envelope: ${(err as Error).message}`;
  }
  const parts = unpackJobs(envelope);
  const chosen = envelope.jobs === undefined ? (envelope.id === letterId ? parts : []) : envelope.id === letterId ? parts : parts.filter((p) => p.id === letterId);
  if (chosen.length === 0) return `its payload is the envelope of job "${envelope.id}"${envelope.jobs === undefined ? '' : ` (a pack of ${envelope.jobs.length})`}, not of job "${letterId}"`;
  const jobs = chosen.map((p) => ({
    id: p.id,
    model: p.model,
    tensors: p.tensors,
    options: {
      ...(p.version === undefined ? {} : { version: p.version }),
      ...(p.replyTo === undefined ? {} : { replyTo: p.replyTo }),
      ...(p.sinks === undefined ? {} : { sinks: p.sinks }),
      ...(p.rowIds === undefined ? {} : { rowIds: p.rowIds }),
    },
  }));
  return { envelopeId: envelope.id, jobs };
}

function metaOf(e: Envelope, id: string, deadline: number | undefined): Parameters<typeof encodeEnvelope>[0] {
  return { id, model: e.model, version: e.version, rowIds: e.rowIds, replyTo: e.replyTo, sinks: e.sinks, deadline };
}
