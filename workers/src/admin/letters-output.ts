/** How dead letters are shown: table rows for `list`, a block of lines for `show`, JSON for scripts. */
import { decodeEnvelope, describe, printable } from '@inferq/shared';
import type { KafkaLetter } from './kafka-dead-letters.js';
import type { RedisLetter } from './redis-dead-letters.js';
import { age, renderTable } from './table.js';

const REASON_WIDTH = 70;

export function redisLetterTable(letters: readonly RedisLetter[], now = Date.now()): string {
  return renderTable(
    ['ENTRY', 'JOB', 'CODE', 'MODEL', 'ATTEMPTS', 'AGE', 'PAYLOAD', 'REASON'],
    letters.map((l) => [l.entry, l.id, l.code, l.version === '' ? l.model : `${l.model}:${l.version}`, l.attempts, age(l.ts, now), l.payload === '' ? '-' : `${l.payloadBytes ?? '?'} B`, l.reason]),
    REASON_WIDTH,
  );
}

export function kafkaLetterTable(letters: readonly KafkaLetter[], now = Date.now()): string {
  return renderTable(
    ['POSITION', 'JOB', 'CODE', 'MODEL', 'ATTEMPTS', 'AGE', 'BYTES', 'REASON'],
    letters.map((l) => [`${l.partition}:${l.offset}`, l.id, l.code, l.model, l.attempts, age(l.ts, now), l.bytes ?? '-', l.reason]),
    REASON_WIDTH,
  );
}

/** What a payload holds, for `show`: its envelope's header and tensors, or why it cannot be read. */
export interface PayloadSummary {
  readonly bytes?: number;
  /** Why there is no payload to show. */
  readonly missing?: string;
  /** Why the bytes are not a valid envelope. */
  readonly invalid?: string;
  readonly envelope?: {
    readonly id: string;
    readonly model: string;
    readonly version?: string | undefined;
    readonly rows: number;
    readonly tensors: readonly string[];
    readonly replyTo?: string | undefined;
    readonly sinks?: readonly string[] | undefined;
    readonly deadline?: string | undefined;
    readonly jobs?: number | undefined;
  };
}

export function summarizePayload(bytes: Uint8Array | string | undefined): PayloadSummary {
  if (bytes === undefined) return { missing: 'the message has no value' };
  if (typeof bytes === 'string') return { missing: bytes };
  try {
    const e = decodeEnvelope(bytes);
    return {
      bytes: bytes.byteLength,
      envelope: {
        id: e.id,
        model: e.model,
        version: e.version,
        rows: e.rows,
        tensors: Object.entries(e.tensors).map(([name, t]) => `${name} ${describe(t.dtype, t.shape)}`),
        replyTo: e.replyTo,
        sinks: e.sinks,
        deadline: e.deadline === undefined ? undefined : new Date(e.deadline).toISOString(),
        jobs: e.jobs?.length,
      },
    };
  } catch (err) {
    return { bytes: bytes.byteLength, invalid: (err as Error).message };
  }
}

/** "name: value" lines of a letter and its payload, every value escaped. */
export function showText(fields: Readonly<Record<string, string | number | boolean | undefined>>, payload: PayloadSummary): string {
  const lines: [string, string][] = Object.entries(fields).map(([k, v]) => [k, v === undefined || v === '' ? '-' : String(v)]);
  if (payload.missing !== undefined) lines.push(['payload', `none: ${payload.missing}`]);
  else if (payload.invalid !== undefined) lines.push(['payload', `${payload.bytes} bytes, not a valid envelope: ${payload.invalid}`]);
  else if (payload.envelope !== undefined) {
    const e = payload.envelope;
    lines.push(['payload', `${payload.bytes} bytes, envelope of job ${e.id}`]);
    lines.push(['  model', e.version === undefined ? e.model : `${e.model} version ${e.version}`]);
    lines.push(['  rows', String(e.rows)]);
    for (const t of e.tensors) lines.push(['  tensor', t]);
    if (e.replyTo !== undefined) lines.push(['  reply to', e.replyTo]);
    if (e.sinks !== undefined) lines.push(['  sinks', e.sinks.join(', ')]);
    if (e.deadline !== undefined) lines.push(['  deadline', `${e.deadline} (dropped by a replay)`]);
    if (e.jobs !== undefined) lines.push(['  packed jobs', String(e.jobs)]);
  }
  const width = Math.max(...lines.map(([k]) => k.length));
  return lines.map(([k, v]) => `${k.padEnd(width)}  ${printable(v, 4000)}`).join('\n') + '\n';
}

/** A Redis letter's fields for `show`. */
export function redisLetterFields(l: RedisLetter, stream: string): Record<string, string | number | boolean | undefined> {
  return {
    stream,
    entry: l.entry,
    job: l.id,
    'queue job': l.job === l.id ? undefined : l.job,
    code: l.code,
    retriable: l.retriable,
    kind: l.kind,
    model: l.model,
    version: l.version,
    attempts: l.attempts,
    time: l.ts === undefined ? undefined : new Date(l.ts).toISOString(),
    reason: l.reason,
  };
}

/** A Kafka letter's fields for `show`. */
export function kafkaLetterFields(l: KafkaLetter, topic: string): Record<string, string | number | boolean | undefined> {
  return {
    topic,
    position: `${l.partition}:${l.offset}`,
    job: l.id,
    key: l.key,
    code: l.code,
    retriable: l.retriable,
    kind: l.kind,
    model: l.model,
    attempts: l.attempts,
    time: l.ts === undefined ? undefined : new Date(l.ts).toISOString(),
    'came from': l.source,
    reason: l.reason,
  };
}
