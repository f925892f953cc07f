/** Replies as the workers write them: Redis reply stream entries (see REPLY_FIELDS) and Kafka reply messages (KAFKA_HEADERS). */
import type { KafkaMessage } from 'kafkajs';
import { KAFKA_HEADERS, REPLY_FIELDS, decodeEnvelope, readErrorCode, readRetriable, unpackJobs } from '@inferq/shared';
import type { TensorMap } from '@inferq/shared';
import { RemoteJobError } from './errors.js';
import type { RemoteFailure } from './errors.js';

/** Why a job failed, as its error reply says: the message, its code and whether a retry may help. */
export interface ReplyError extends RemoteFailure {
  readonly message: string;
}

export interface Reply {
  /** Job id (correlation id). */
  readonly id: string;
  readonly ok: boolean;
  readonly model: string;
  readonly version: string | undefined;
  /** Model outputs, rows in the job's order (empty when the job failed). */
  readonly outputs: TensorMap;
  readonly rowIds: readonly string[] | undefined;
  /** Why the job failed (undefined when it succeeded). */
  readonly error: ReplyError | undefined;
  /** The stream entry id, when read from a stream (the replies of one packed entry share it). */
  readonly entryId?: string;
}

/**
 * Parses a reply entry's flat [field, value, …] list into the replies it holds: one, or
 * one per job when a worker answered a packed envelope (the producer's linger) in one entry.
 */
export function parseReplies(fields: readonly Buffer[], entryId?: string): Reply[] {
  const get = (name: string): Buffer | undefined => {
    for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i]!.toString() === name) return fields[i + 1];
    return undefined;
  };
  const id = get(REPLY_FIELDS.id)?.toString() ?? '';
  const ok = get(REPLY_FIELDS.status)?.toString() === 'ok';
  const model = get(REPLY_FIELDS.model)?.toString() ?? '';
  const version = get(REPLY_FIELDS.version)?.toString();
  const env = get(REPLY_FIELDS.env);
  const entry = entryId === undefined ? {} : { entryId };
  if (ok && env !== undefined) {
    const e = decodeEnvelope(new Uint8Array(env.buffer, env.byteOffset, env.byteLength));
    return unpackJobs(e).map((part) => ({ id: part.id, ok, model: e.model, version: e.version, outputs: part.tensors, rowIds: part.rowIds, error: undefined, ...entry }));
  }
  return [
    {
      id,
      ok: false,
      model,
      version,
      outputs: {},
      rowIds: undefined,
      error: replyError((name) => get(name)?.toString(), REPLY_FIELDS),
      ...entry,
    },
  ];
}

/** A predict() call waiting for its reply. */
export interface ReplyWaiter {
  resolve(reply: Reply): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/** Hands a reply to the predict() call waiting for it, if any: its outputs, or a RemoteJobError. */
export function settleWaiter(waiters: Map<string, ReplyWaiter>, reply: Reply): void {
  const w = waiters.get(reply.id);
  if (w === undefined) return;
  waiters.delete(reply.id);
  clearTimeout(w.timer);
  if (reply.ok) w.resolve(reply);
  else {
    const failure: ReplyError = reply.error ?? { message: 'unknown error', code: 'INTERNAL', retriable: false, kind: 'Error' };
    w.reject(new RemoteJobError(`job ${reply.id} failed: ${failure.message}`, failure, { jobId: reply.id, model: reply.model, version: reply.version }));
  }
}

/**
 * The error of an error reply, from its fields (Redis) or headers (Kafka), all untrusted: a
 * reply from a worker older than `code` gets the code its `kind` names (see readErrorCode).
 */
function replyError(read: (name: string) => string | undefined, names: { readonly error: string; readonly code: string; readonly retriable: string; readonly kind: string }): ReplyError {
  const kind = read(names.kind);
  return {
    message: read(names.error) ?? 'unknown error',
    code: readErrorCode(read(names.code), kind),
    retriable: readRetriable(read(names.retriable)),
    kind: kind ?? 'Error',
  };
}

/**
 * The replies of a reply message: one, or one per job when a worker answered a packed envelope
 * (the producer's linger) in one message (see KAFKA_HEADERS in @inferq/shared).
 */
export function parseKafkaReplies(message: KafkaMessage): Reply[] {
  const value = message.value;
  const ok = message.headers?.[KAFKA_HEADERS.status]?.toString() === 'ok';
  if (!ok || value === null) return [parseKafkaReply(message)];
  const e = decodeEnvelope(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
  if (e.jobs === undefined) return [parseKafkaReply(message)];
  return unpackJobs(e).map((part) => ({ id: part.id, ok: true, model: e.model, version: e.version, outputs: part.tensors, rowIds: part.rowIds, error: undefined, entryId: message.offset }));
}

/** A reply message of one job as the workers write it (see KAFKA_HEADERS in @inferq/shared); parseKafkaReplies() also splits packs. */
export function parseKafkaReply(message: KafkaMessage): Reply {
  const header = (name: string): string | undefined => {
    const v = message.headers?.[name];
    const first = Array.isArray(v) ? v[0] : v;
    return first === undefined ? undefined : first.toString();
  };
  const id = header(KAFKA_HEADERS.id) ?? message.key?.toString() ?? '';
  const value = message.value;
  if (header(KAFKA_HEADERS.status) === 'ok' && value !== null) {
    const e = decodeEnvelope(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
    return { id, ok: true, model: e.model, version: e.version, outputs: e.tensors, rowIds: e.rowIds, error: undefined, entryId: message.offset };
  }
  return {
    id,
    ok: false,
    model: header(KAFKA_HEADERS.model) ?? '',
    version: header(KAFKA_HEADERS.version),
    outputs: {},
    rowIds: undefined,
    error: replyError(header, KAFKA_HEADERS),
    entryId: message.offset,
  };
}
