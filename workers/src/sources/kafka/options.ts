/** Options of the Kafka source, with their defaults in one place and checked when a source is made. */
import type { KafkaConfig } from 'kafkajs';
import { z } from 'zod';
import { ConfigError } from '@inferq/shared';
import type { Logger } from '../../logging.js';

export interface KafkaSourceOptions {
  /** Bootstrap brokers, "host:port". */
  readonly brokers: readonly string[];
  /** TLS and SASL, handed to kafkajs as they are (the CLI builds them in cli/connections.ts). Default: plaintext. */
  readonly client?: Pick<KafkaConfig, 'ssl' | 'sasl'>;
  readonly topic: string;
  /** Consumer group: workers of one group share the topic's partitions. */
  readonly group: string;
  readonly clientId?: string;
  readonly logger: Logger;
  /** Default `<topic>.dead`. */
  readonly deadLetterTopic?: string;
  /** Jobs (messages) in flight at once; the topic is paused there and resumed below half of it. Default 256. */
  readonly concurrency?: number;
  /** Rows in flight before the topic is paused. Default 262,144. */
  readonly maxInFlightRows?: number;
  /** Largest accepted message value. Default 64 MiB. */
  readonly maxPayloadBytes?: number;
  /** Tries for retriable failures (in process, with backoff) before a message is dead-lettered. Default 3. */
  readonly attempts?: number;
  /** A new group starts at the earliest offset (default true), so jobs enqueued before the first worker are served. */
  readonly fromBeginning?: boolean;
  /** A worker silent this long leaves the group. Default 30 s. */
  readonly sessionTimeoutMs?: number;
  /** Crashes of the consumer in a row, with no rejoin between them, that the worker restarts itself when kafkajs will not. Default 8. */
  readonly maxConsumerRestarts?: number;
  /** Called when the consumer crashed for good (the process should exit and be restarted). */
  readonly onFatal?: (err: Error) => void;
  /** Create the request topic with this many partitions when it does not exist. Default: a missing topic fails start(). */
  readonly createTopic?: { readonly partitions: number };
  /** How long start() waits for the brokers and the group (its rebalance) before it fails with ConnectionError. Default 60 s. */
  readonly connectTimeoutMs?: number;
}

const MB = 1024 * 1024;

const DEFAULTS = {
  concurrency: 256,
  maxInFlightRows: 262_144,
  maxPayloadBytes: 64 * MB,
  attempts: 3,
  fromBeginning: true,
  sessionTimeoutMs: 30_000,
  maxConsumerRestarts: 8,
  connectTimeoutMs: 60_000,
};

const positive = z.number().int().positive();
const schema = z.object({
  brokers: z.array(z.string().regex(/^[^\s,]+:\d{1,5}$/, 'host:port')).min(1),
  topic: z.string().regex(/^[A-Za-z0-9._-]{1,249}$/, 'a topic name of letters, digits, ., _ and -'),
  group: z.string().min(1).max(255),
  concurrency: positive,
  maxInFlightRows: positive,
  maxPayloadBytes: positive,
  attempts: positive,
  sessionTimeoutMs: positive,
  maxConsumerRestarts: positive,
  connectTimeoutMs: positive,
  createTopic: z.object({ partitions: positive }).optional(),
});

export type ResolvedKafkaSourceOptions = KafkaSourceOptions & typeof DEFAULTS & { readonly deadLetterTopic: string };

/** Fills in the defaults and checks the values; a bad one is a ConfigError naming the option. */
export function resolveKafkaSourceOptions(options: KafkaSourceOptions): ResolvedKafkaSourceOptions {
  const out: Record<string, unknown> = { ...options };
  for (const [k, v] of Object.entries(DEFAULTS)) if (out[k] === undefined) out[k] = v;
  out['deadLetterTopic'] ??= `${options.topic}.dead`;
  const parsed = schema.safeParse(out);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(`kafka source option "${issue.path.join('.')}": ${issue.message}`);
  }
  return out as unknown as ResolvedKafkaSourceOptions;
}
