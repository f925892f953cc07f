import type { KafkaMessage } from 'kafkajs';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { KAFKA_HEADERS, REPLY_FIELDS, encodeEnvelope } from '@inferq/shared';
import type { ErrorCode } from '@inferq/shared';
import { RemoteJobError } from './errors.js';
import { parseKafkaReply, parseReplies, settleWaiter } from './replies.js';
import type { Reply, ReplyWaiter } from './replies.js';

/** A Redis reply stream entry's flat [field, value, …] list. */
const entry = (fields: Record<string, string | Uint8Array>): Buffer[] => Object.entries(fields).flatMap(([k, v]) => [Buffer.from(k), Buffer.from(v)]);

/** A Kafka reply message with these headers and no value (an error reply). */
const kafkaMessage = (headers: Record<string, string>, value: Buffer | null = null): KafkaMessage => ({
  key: Buffer.from(headers[KAFKA_HEADERS.id] ?? ''),
  value,
  timestamp: '0',
  attributes: 0,
  offset: '7',
  headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, Buffer.from(v)])),
});

const redisError = (extra: Record<string, string>): Buffer[] =>
  entry({ [REPLY_FIELDS.id]: 'job-1', [REPLY_FIELDS.status]: 'error', [REPLY_FIELDS.error]: 'input "x": non-finite value NaN', [REPLY_FIELDS.model]: 'm', ...extra });
const kafkaError = (extra: Record<string, string>): KafkaMessage =>
  kafkaMessage({ [KAFKA_HEADERS.id]: 'job-1', [KAFKA_HEADERS.status]: 'error', [KAFKA_HEADERS.error]: 'input "x": non-finite value NaN', [KAFKA_HEADERS.model]: 'm', ...extra });

describe('error replies: code and retriable', () => {
  it('Redis: code, retriable and kind are read from the entry', () => {
    const [reply] = parseReplies(redisError({ [REPLY_FIELDS.code]: 'NON_FINITE', [REPLY_FIELDS.retriable]: 'false', [REPLY_FIELDS.kind]: 'InvalidInputError' }), '1-0');
    expect(reply).toMatchObject({ id: 'job-1', ok: false, model: 'm', entryId: '1-0' });
    expect(reply!.error).toEqual({ message: 'input "x": non-finite value NaN', code: 'NON_FINITE', retriable: false, kind: 'InvalidInputError' });
    const [retriable] = parseReplies(redisError({ [REPLY_FIELDS.code]: 'UNAVAILABLE', [REPLY_FIELDS.retriable]: 'true', [REPLY_FIELDS.kind]: 'ConnectionError' }));
    expect(retriable!.error).toMatchObject({ code: 'UNAVAILABLE', retriable: true });
  });

  it('Kafka: code, retriable and kind are read from the headers', () => {
    const reply = parseKafkaReply(kafkaError({ [KAFKA_HEADERS.code]: 'SINK_REFUSED', [KAFKA_HEADERS.retriable]: 'false', [KAFKA_HEADERS.kind]: 'SinkRefusedError' }));
    expect(reply).toMatchObject({ id: 'job-1', ok: false, model: 'm', entryId: '7' });
    expect(reply.error).toEqual({ message: 'input "x": non-finite value NaN', code: 'SINK_REFUSED', retriable: false, kind: 'SinkRefusedError' });
    expect(parseKafkaReply(kafkaError({ [KAFKA_HEADERS.code]: 'CLOSED', [KAFKA_HEADERS.retriable]: 'true' })).error).toMatchObject({ code: 'CLOSED', retriable: true, kind: 'Error' });
  });

  it('a reply from an older worker (no code, no retriable): the code its kind names, else INTERNAL; not retriable', () => {
    expect(parseReplies(redisError({ [REPLY_FIELDS.kind]: 'DeadlineExceededError' }))[0]!.error).toMatchObject({ code: 'DEADLINE', retriable: false, kind: 'DeadlineExceededError' });
    expect(parseReplies(redisError({ [REPLY_FIELDS.kind]: 'TypeError' }))[0]!.error).toMatchObject({ code: 'INTERNAL', retriable: false });
    expect(parseReplies(redisError({}))[0]!.error).toMatchObject({ code: 'INTERNAL', retriable: false, kind: 'Error' });
    expect(parseKafkaReply(kafkaError({ [KAFKA_HEADERS.kind]: 'EnvelopeError' })).error).toMatchObject({ code: 'BAD_ENVELOPE', retriable: false });
    expect(parseKafkaReply(kafkaError({})).error).toMatchObject({ code: 'INTERNAL', retriable: false, kind: 'Error' });
  });

  it('a code this SDK does not know reads as INTERNAL, whatever the kind; retriable is still the wire\'s', () => {
    expect(parseReplies(redisError({ [REPLY_FIELDS.code]: 'GPU_ON_FIRE', [REPLY_FIELDS.retriable]: 'true', [REPLY_FIELDS.kind]: 'DeadlineExceededError' }))[0]!.error).toMatchObject({
      code: 'INTERNAL',
      retriable: true,
      kind: 'DeadlineExceededError',
    });
    expect(parseKafkaReply(kafkaError({ [KAFKA_HEADERS.code]: 'non_finite', [KAFKA_HEADERS.retriable]: 'yes' })).error).toMatchObject({ code: 'INTERNAL', retriable: false });
  });

  it('a successful reply has no error', () => {
    const env = encodeEnvelope({ id: 'job-2', model: 'm', version: '3' }, { score: { dtype: 'float32', shape: [1, 1], data: new Float32Array([0.5]) } });
    const [ok] = parseReplies(entry({ [REPLY_FIELDS.id]: 'job-2', [REPLY_FIELDS.status]: 'ok', [REPLY_FIELDS.env]: env }));
    expect(ok).toMatchObject({ id: 'job-2', ok: true, version: '3', error: undefined });
    expect(parseKafkaReply(kafkaMessage({ [KAFKA_HEADERS.id]: 'job-2', [KAFKA_HEADERS.status]: 'ok' }, Buffer.from(env)))).toMatchObject({ ok: true, error: undefined });
  });
});

describe('settleWaiter', () => {
  /** Settles the one waiter of `reply.id` with `reply`; returns how it settled. */
  async function settle(reply: Reply): Promise<{ resolved?: Reply; rejected?: unknown; waiting: number }> {
    const waiters = new Map<string, ReplyWaiter>();
    const settled = new Promise<{ resolved?: Reply; rejected?: unknown }>((resolve) => {
      // predict()'s own timeout, which settleWaiter clears.
      const timer = setTimeout(() => resolve({ rejected: new Error('the waiter was never settled') }), 60_000).unref();
      waiters.set(reply.id, { resolve: (r) => resolve({ resolved: r }), reject: (err) => resolve({ rejected: err }), timer });
    });
    settleWaiter(waiters, reply);
    return { ...(await settled), waiting: waiters.size };
  }

  it('rejects with a RemoteJobError carrying the typed code, retriable and kind of the reply', async () => {
    const [reply] = parseReplies(redisError({ [REPLY_FIELDS.code]: 'NON_FINITE', [REPLY_FIELDS.retriable]: 'false', [REPLY_FIELDS.kind]: 'InvalidInputError', [REPLY_FIELDS.version]: '2' }));
    const { rejected, waiting } = await settle(reply!);
    expect(waiting).toBe(0);
    expect(rejected).toBeInstanceOf(RemoteJobError);
    const err = rejected as RemoteJobError;
    expectTypeOf(err.code).toEqualTypeOf<ErrorCode>();
    expect(err).toMatchObject({ code: 'NON_FINITE', retriable: false, kind: 'InvalidInputError', jobId: 'job-1', model: 'm', version: '2' });
    expect(err.message).toBe('job job-1 failed: input "x": non-finite value NaN');
  });

  it('a retriable failure stays retriable, and an older worker\'s reply gets the code of its kind', async () => {
    const retriable = parseKafkaReply(kafkaError({ [KAFKA_HEADERS.code]: 'UNAVAILABLE', [KAFKA_HEADERS.retriable]: 'true', [KAFKA_HEADERS.kind]: 'ConnectionError' }));
    expect((await settle(retriable)).rejected).toMatchObject({ code: 'UNAVAILABLE', retriable: true });
    const old = parseKafkaReply(kafkaError({ [KAFKA_HEADERS.kind]: 'UnknownModelError' }));
    expect((await settle(old)).rejected).toMatchObject({ code: 'UNKNOWN_MODEL', retriable: false, kind: 'UnknownModelError' });
  });
});
