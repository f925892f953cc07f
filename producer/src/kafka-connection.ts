/**
 * How the Kafka SDK talks to its brokers: the kafkajs client settings derived from
 * `connectTimeoutMs`, kafkajs's log routed to the SDK logger, and kafkajs errors turned into
 * ConnectionError (naming the broker and the cause: ECONNREFUSED, ETIMEDOUT,
 * SASL_AUTHENTICATION_FAILED…).
 */
import kafkajs from 'kafkajs';
import type { Kafka, KafkaConfig, RetryOptions, logCreator } from 'kafkajs';
import { ConnectionError } from '@inferq/shared';
import { RateLimitedLog, within } from './connection.js';
import type { SdkLogger } from './connection.js';

// kafkajs's error classes exist at run time on its CommonJS export only (not as ES named exports).
const { KafkaJSConnectionError, KafkaJSProtocolError, KafkaJSRequestTimeoutError, KafkaJSSASLAuthenticationError, logLevel } = kafkajs;

/** Retries of the SDK's consumers (their outages are ridden out by ConsumerRestarter too). */
export const CONSUMER_RETRY: RetryOptions = { initialRetryTime: 200, retries: 10 };

/** Broker error types that mean the broker refused our credentials. */
const SASL_TYPES = new Set(['SASL_AUTHENTICATION_FAILED', 'ILLEGAL_SASL_STATE', 'UNSUPPORTED_SASL_MECHANISM']);

/**
 * Client-wide retries (connecting, producing, admin) whose delays — 100 ms, doubling — add
 * up to about half of `connectTimeoutMs`, so kafkajs gives up with its own cause before
 * the SDK's deadline does.
 */
export function connectRetry(connectTimeoutMs: number): RetryOptions {
  let retries = 0;
  for (let total = 0, delay = 100; retries < 10 && total + delay <= connectTimeoutMs / 2; delay *= 2) {
    total += delay;
    retries++;
  }
  return { initialRetryTime: 100, retries: Math.max(1, retries), maxRetryTime: connectTimeoutMs };
}

/** The kafkajs client options the SDK sets from its own (the caller's ssl and sasl as they are). */
export function kafkaConfig(
  options: { brokers: readonly string[]; clientId?: string | undefined; ssl?: KafkaConfig['ssl']; sasl?: KafkaConfig['sasl'] },
  connectTimeoutMs: number,
  link: KafkaLink,
): KafkaConfig {
  return {
    clientId: options.clientId ?? 'inferq-producer',
    brokers: [...options.brokers],
    connectionTimeout: Math.min(connectTimeoutMs, Math.max(1000, Math.round(connectTimeoutMs / 2))),
    requestTimeout: connectTimeoutMs,
    retry: connectRetry(connectTimeoutMs),
    logLevel: logLevel.WARN,
    logCreator: link.logCreator,
    ...(options.ssl === undefined ? {} : { ssl: options.ssl }),
    ...(options.sasl === undefined ? {} : { sasl: options.sasl }),
  };
}

/** What the SDK knows of its brokers: their names, the last connection failure kafkajs logged, and how to report it. */
export class KafkaLink {
  /** The bootstrap brokers, "host:port,host:port" (or "kafkajs client" for a client the caller made). */
  readonly address: string;
  readonly connectTimeoutMs: number;
  private readonly log: RateLimitedLog;
  private lastCause: { broker: string; message: string; at: number } | undefined;

  constructor(brokers: readonly string[] | undefined, connectTimeoutMs: number, logger: SdkLogger | undefined) {
    this.address = brokers === undefined ? 'kafkajs client' : brokers.join(',');
    this.connectTimeoutMs = connectTimeoutMs;
    this.log = new RateLimitedLog(logger, { server: 'kafka', address: this.address });
  }

  /** kafkajs's logger: its errors to the SDK logger's warn (a message at most once a minute), its warnings to debug. */
  readonly logCreator: logCreator = () => (entry) => {
    const { message, timestamp: _t, logger: _l, stack: _s, retryCount: _c, retryTime: _r, ...extra } = entry.log;
    const text = `kafkajs ${entry.namespace}: ${String(message)}`;
    if (entry.level === logLevel.ERROR) {
      if (typeof extra['broker'] === 'string') this.lastCause = { broker: extra['broker'], message: String(message), at: Date.now() };
      this.log.log('warn', text, { namespace: entry.namespace, ...extra }, text);
    } else {
      this.log.debug({ namespace: entry.namespace, ...extra }, text);
    }
  };

  /** An error a caller does not hear of (an unreadable reply): logged, at most once a minute per message. */
  report(err: Error, what: string): void {
    this.log.log('error', `${what}: ${err.message}`, { err: err.message }, `kafka: ${what}: ${err.message}`);
  }

  /** `work`, or a ConnectionError when it has not settled within `ms` (see within()); its own kafkajs connection errors become ConnectionError too. */
  async within<T>(work: Promise<T>, what: string, ms = this.connectTimeoutMs): Promise<T> {
    try {
      return await within(work, ms, () => this.timeout(what, ms));
    } catch (err) {
      throw this.classify(err, what) ?? err;
    }
  }

  /** The ConnectionError for a wait of `ms` that ran out: the failure kafkajs logged meanwhile, if any, is its cause. */
  timeout(what: string, ms: number): ConnectionError {
    const last = this.lastCause !== undefined && Date.now() - this.lastCause.at <= ms ? this.lastCause : undefined;
    const why = last === undefined ? 'no answer' : last.message;
    const code = (last === undefined ? undefined : /\b(E[A-Z]{3,})\b/.exec(last.message)?.[1]) ?? 'ETIMEDOUT';
    return new ConnectionError(`kafka ${last?.broker ?? this.address}: ${what} within ${ms} ms: ${why}`, { address: last?.broker ?? this.address, causeCode: code });
  }

  /** A kafkajs error (or one it wraps) that says the brokers could not be reached or refused us, as a ConnectionError; else undefined. */
  classify(err: unknown, what: string): ConnectionError | undefined {
    if (err instanceof ConnectionError) return err;
    for (let e: unknown = err; e instanceof Error; e = e.cause) {
      let code: string | undefined;
      let broker: string | undefined;
      if (e instanceof KafkaJSSASLAuthenticationError) code = 'SASL_AUTHENTICATION_FAILED';
      else if (e instanceof KafkaJSProtocolError && SASL_TYPES.has(e.type)) code = e.type;
      else if (e instanceof KafkaJSConnectionError) {
        broker = e.broker;
        const socketCode = (e as { code?: unknown }).code; // the socket's (kafkajs sets it; its types omit it)
        code = typeof socketCode === 'string' ? socketCode : /timeout/i.test(e.message) ? 'ETIMEDOUT' : 'ECONNRESET';
      } else if (e instanceof KafkaJSRequestTimeoutError) {
        broker = e.broker;
        code = 'ETIMEDOUT';
      }
      if (code !== undefined) {
        const address = broker ?? this.address;
        return new ConnectionError(`kafka ${address}: ${what}: ${e.message}`, { address, causeCode: code, cause: err });
      }
    }
    return undefined;
  }
}

/** Creates a topic (broker defaults for partitions and replication) unless it exists, so a consumer can subscribe at once. */
export async function ensureTopic(kafka: Kafka, topic: string): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}
