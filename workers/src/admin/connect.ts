/**
 * Connections of the admin tools (`inferq queue`, `inferq dead-letters`): each is made within
 * a timeout and fails with one ConnectionError naming the server, so a command against a
 * server that is down ends with one clear line instead of retrying forever.
 */
import { randomUUID } from 'node:crypto';
import kafkajs from 'kafkajs';
import type { Admin, KafkaConfig } from 'kafkajs';
import { Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import { ConnectionError } from '@inferq/shared';
import { deadlineRace } from '../deadline.js';
import type { Logger } from '../logging.js';
import { connectionFailure } from '../sources/redis/connection.js';

const { Kafka, logLevel } = kafkajs;
type Kafka = InstanceType<typeof Kafka>;

export interface RedisTarget {
  readonly url: string;
  /** TLS files, user and password (cli/connections.ts). */
  readonly client: Pick<RedisOptions, 'tls' | 'username' | 'password'>;
  /** How long to wait for the server, and for each command's answer. */
  readonly timeoutMs: number;
}

/** A Redis connection that is ready, or ConnectionError after `timeoutMs`; commands unanswered for `timeoutMs` fail. */
export async function connectRedis(t: RedisTarget): Promise<Redis> {
  let last: Error | undefined;
  const client = new Redis(t.url, {
    ...t.client,
    lazyConnect: true,
    connectTimeout: t.timeoutMs,
    commandTimeout: t.timeoutMs,
    maxRetriesPerRequest: 1,
    // One attempt a second until the deadline below gives up: a server restarting may still answer in time.
    retryStrategy: () => 1000,
  });
  client.on('error', (err: Error) => (last = err));
  const connecting = client.connect();
  connecting.catch((err: unknown) => (last ??= err as Error));
  if ((await deadlineRace(connecting, Date.now() + t.timeoutMs)) === 'deadline' || client.status !== 'ready') {
    client.disconnect();
    throw connectionFailure(client, last, t.timeoutMs);
  }
  return client;
}

export interface KafkaTarget {
  readonly brokers: readonly string[];
  /** TLS and SASL (cli/connections.ts). */
  readonly client: Pick<KafkaConfig, 'ssl' | 'sasl'>;
  /** How long to wait for the brokers, and for each request. */
  readonly timeoutMs: number;
  readonly logger: Logger;
}

/** A kafkajs client whose retries give up within about `timeoutMs`; its log goes to `logger`. */
export function kafkaClient(t: KafkaTarget): Kafka {
  return new Kafka({
    clientId: `inferq-cli-${randomUUID().slice(0, 8)}`,
    brokers: [...t.brokers],
    connectionTimeout: Math.min(t.timeoutMs, Math.max(1000, Math.round(t.timeoutMs / 2))),
    requestTimeout: t.timeoutMs,
    retry: { initialRetryTime: 100, maxRetryTime: 1000, retries: 2 },
    logLevel: logLevel.WARN,
    // kafkajs logs each retry as an error; the command reports the outcome in one line, so they are debug here.
    logCreator:
      () =>
      ({ namespace, log }) => {
        const { message, ...extra } = log;
        t.logger.debug({ kafkajs: namespace, ...extra }, message);
      },
    ...t.client,
  });
}

/** A connected admin client, or the kafkajs error (for kafkaStartFailure) / ConnectionError after `timeoutMs`. */
export async function connectAdmin(kafka: Kafka, t: KafkaTarget): Promise<Admin> {
  const admin = kafka.admin({ retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 1000 } });
  let failure: unknown;
  const connecting = admin.connect().catch((err: unknown) => {
    failure = err;
  });
  if ((await deadlineRace(connecting, Date.now() + t.timeoutMs)) === 'deadline') {
    void admin.disconnect().catch(() => undefined);
    throw new ConnectionError(`kafka ${t.brokers.join(',')}: no answer within ${t.timeoutMs} ms`, { address: t.brokers.join(',') });
  }
  if (failure !== undefined) throw failure;
  return admin;
}

/** `p`, or ConnectionError naming `what` when it takes longer than `timeoutMs`. */
export async function within<T>(p: Promise<T>, timeoutMs: number, address: string, what: string): Promise<T> {
  p.catch(() => undefined);
  if ((await deadlineRace(p, Date.now() + timeoutMs)) === 'deadline') throw new ConnectionError(`${address}: ${what}: no answer within ${timeoutMs} ms`, { address });
  return p;
}
