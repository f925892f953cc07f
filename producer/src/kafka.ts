/**
 * The inferq producer SDK over Kafka (kafkajs): the same calls as the Redis `Producer`.
 *
 * ```
 *  enqueue(model, batch) ── toTensors ─► encodeEnvelope ─► message { key: job id | partitionKey,
 *                                                          value: envelope, headers: id, model, version,
 *                                                          reply-to, rows, content-type }
 *                           calls in the same tick (or within linger.ms) go out in one send;
 *                           resolves when the broker has it (acks=all, idempotent producer)
 *  predict(...)  = enqueue(replyTo = the reply topic) + wait for the reply with that job id, read by
 *                  this instance's own consumer group (it reads every reply and keeps its own)
 *  subscribe(topic, handler, { group }) = a consumer group on a reply topic; offsets are committed
 *                  after the handler returns, so a restarted subscriber resumes where it stopped
 * ```
 */
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import type { Consumer, EachMessagePayload, IHeaders, KafkaConfig, KafkaMessage, Message, Producer as KafkaJsProducer } from 'kafkajs';
import { ClosedError, ConsumerRestarter, DEFAULT_QUEUE, ENVELOPE_CONTENT_TYPE, InferqError, KAFKA_HEADERS, decodeEnvelope, encodeEnvelope, kafkaReplyTopic } from '@inferq/shared';
import { toTensors } from './features.js';
import type { FeatureBatch } from './features.js';
import { PredictTimeoutError } from './errors.js';
import type { EnqueueOptions } from './producer.js';
import { settleWaiter } from './replies.js';
import type { Reply, ReplyWaiter } from './replies.js';

export interface KafkaProducerOptions {
  /** Bootstrap brokers ("host:port"), or a kafkajs client to use. */
  readonly brokers: readonly string[] | Kafka;
  /** Request topic (the workers' `--topic`). Default "inferq". */
  readonly topic?: string;
  readonly clientId?: string;
  /** Topic predict() replies come back on. Default `<topic>.replies`. */
  readonly replyTopic?: string;
  /**
   * Like Kafka's linger.ms: enqueue() calls within `ms` go out in one produce request.
   * Default 0: calls made in the same event-loop turn are sent together.
   */
  readonly linger?: { readonly ms: number; readonly maxJobs?: number; readonly maxBytes?: number };
  /**
   * TLS to the brokers, handed to kafkajs as it is: `true`, or `tls.connect()` options
   * (`ca`, `cert`, `key`, `servername`…). Ignored when `brokers` is a kafkajs client. Default: plaintext.
   */
  readonly ssl?: KafkaConfig['ssl'];
  /**
   * SASL authentication, handed to kafkajs as it is, e.g. `{ mechanism: 'scram-sha-512', username,
   * password }` (read the password from the environment or a file). Ignored when `brokers` is a
   * kafkajs client. Default: none.
   */
  readonly sasl?: KafkaConfig['sasl'];
}

/** Kafka has no per-message priority, delay or broker-side retry: those Redis options do not exist here. */
/** Redis's options less those Kafka cannot honour: per-message priority, delay and retries, and job sinks (the Kafka worker writes to its own). */
export interface KafkaEnqueueOptions extends Omit<EnqueueOptions, 'priority' | 'delay' | 'attempts' | 'backoff' | 'sinks'> {
  /** Message key (chooses the partition; ordering holds per key). Default: the job id. */
  readonly partitionKey?: string;
}

export interface KafkaPredictOptions extends Omit<KafkaEnqueueOptions, 'replyTo'> {
  /** How long to wait for the reply. Default 30 s. Also the job's deadline unless one is given. */
  readonly timeoutMs?: number;
}

export interface KafkaSubscribeOptions {
  /** Consumer group: instances in one group share the reply topic's partitions. */
  readonly group: string;
  /** A new group starts at the earliest reply (default true), so replies written before it are not skipped. */
  readonly fromBeginning?: boolean;
  /** Called when the handler throws (kafkajs then retries the reply). */
  readonly onError?: (err: unknown, reply: Reply) => void;
}

/** A running subscription (either transport). */
export interface ReplySubscription {
  /** Settles when the subscription has stopped. */
  readonly done: Promise<void>;
  close(): Promise<void>;
}

interface Pending {
  readonly message: Message;
  readonly bytes: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

export class KafkaProducer {
  readonly topic: string;
  readonly replyTopic: string;
  private readonly kafka: Kafka;
  private readonly producer: KafkaJsProducer;
  private connected: Promise<void> | undefined;
  private readonly options: KafkaProducerOptions;
  private pending: Pending[] = [];
  private pendingBytes = 0;
  private flushTimer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  private readonly sending = new Set<Promise<void>>();
  private readonly waiters = new Map<string, ReplyWaiter>();
  private inbox: { consumer: Consumer; ready: Promise<void> } | undefined;
  private readonly subscriptions = new Set<ReplySubscription>();
  private closing: Promise<void> | undefined;

  constructor(options: KafkaProducerOptions) {
    this.options = options;
    this.topic = options.topic ?? DEFAULT_QUEUE;
    this.replyTopic = options.replyTopic ?? kafkaReplyTopic(this.topic);
    this.kafka =
      options.brokers instanceof Kafka
        ? options.brokers
        : new Kafka({
            clientId: options.clientId ?? 'inferq-producer',
            brokers: [...options.brokers],
            logLevel: logLevel.ERROR,
            retry: { initialRetryTime: 200, retries: 10 },
            ...(options.ssl === undefined ? {} : { ssl: options.ssl }),
            ...(options.sasl === undefined ? {} : { sasl: options.sasl }),
          });
    // Idempotent: a send retried after a lost ack is written once.
    this.producer = this.kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: true });
  }

  private connect(): Promise<void> {
    this.connected ??= this.producer.connect();
    return this.connected;
  }

  /** Enqueues a feature batch for `model`; resolves with the job id once the broker has it. */
  async enqueue(model: string, batch: FeatureBatch, options: KafkaEnqueueOptions = {}): Promise<string> {
    this.assertOpen();
    const id = options.jobId ?? randomUUID();
    const tensors = toTensors(batch, options.input);
    const envelope = encodeEnvelope(
      { id, model, version: options.version, rowIds: options.rowIds, replyTo: options.replyTo, deadline: options.deadline },
      tensors,
    );
    const rows = Object.values(tensors)[0]?.shape[0] ?? 0;
    const headers: IHeaders = {
      [KAFKA_HEADERS.id]: id,
      [KAFKA_HEADERS.model]: model,
      [KAFKA_HEADERS.rows]: String(rows),
      [KAFKA_HEADERS.contentType]: ENVELOPE_CONTENT_TYPE,
    };
    if (options.version !== undefined) headers[KAFKA_HEADERS.version] = options.version;
    if (options.replyTo !== undefined) headers[KAFKA_HEADERS.replyTo] = options.replyTo;
    const message: Message = { key: options.partitionKey ?? id, value: Buffer.from(envelope.buffer, envelope.byteOffset, envelope.byteLength), headers };
    await this.connect();
    await new Promise<void>((resolve, reject) => this.add({ message, bytes: envelope.byteLength, resolve, reject }));
    return id;
  }

  private add(item: Pending): void {
    this.pending.push(item);
    this.pendingBytes += item.bytes;
    const linger = this.options.linger;
    if (this.pending.length >= (linger?.maxJobs ?? 1000) || this.pendingBytes >= (linger?.maxBytes ?? 8 * 1024 * 1024)) {
      this.flush();
    } else if (this.flushTimer === undefined) {
      this.flushTimer = linger !== undefined && linger.ms > 0 ? setTimeout(() => this.flush(), linger.ms) : setImmediate(() => this.flush());
    }
  }

  /** Sends what waits as one produce request; each enqueue() in it settles with it. */
  private flush(): void {
    if (this.flushTimer !== undefined) {
      clearTimeout(this.flushTimer as NodeJS.Timeout);
      clearImmediate(this.flushTimer as NodeJS.Immediate);
      this.flushTimer = undefined;
    }
    const items = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    if (items.length === 0) return;
    const sent = this.producer.send({ topic: this.topic, acks: -1, messages: items.map((i) => i.message) }).then(
      () => items.forEach((i) => i.resolve()),
      (err: Error) => {
        const wrapped = new InferqError(`enqueue to topic "${this.topic}" failed: ${err.message}`, { retriable: true, cause: err });
        items.forEach((i) => i.reject(wrapped));
      },
    );
    this.sending.add(sent);
    void sent.finally(() => this.sending.delete(sent));
  }

  /** Enqueues and waits for the reply. Rejects with PredictTimeoutError, or RemoteJobError when the job failed. */
  async predict(model: string, batch: FeatureBatch, options: KafkaPredictOptions = {}): Promise<Reply> {
    this.assertOpen();
    const timeoutMs = options.timeoutMs ?? 30_000;
    const id = options.jobId ?? randomUUID();
    await this.ensureInbox();
    const reply = new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new PredictTimeoutError(`no reply for job ${id} (model ${model}) within ${timeoutMs} ms`, { jobId: id, model }));
      }, timeoutMs);
      this.waiters.set(id, { resolve, reject, timer });
    });
    try {
      await this.enqueue(model, batch, { ...options, jobId: id, replyTo: this.replyTopic, deadline: options.deadline ?? Date.now() + timeoutMs });
    } catch (err) {
      const w = this.waiters.get(id);
      if (w !== undefined) {
        clearTimeout(w.timer);
        this.waiters.delete(id);
      }
      throw err;
    }
    return reply;
  }

  /**
   * This instance's reader of the reply topic: its own consumer group, starting at the
   * end of the topic, and ready only after its first fetch has fixed that position —
   * so no reply to a request sent after this resolves can be skipped.
   */
  private ensureInbox(): Promise<void> {
    if (this.inbox !== undefined) return this.inbox.ready;
    const consumer = this.kafka.consumer({ groupId: `inferq-inbox-${randomUUID()}`, maxWaitTimeInMs: 50, allowAutoTopicCreation: true });
    const run = async (): Promise<void> => {
      await consumer.subscribe({ topic: this.replyTopic, fromBeginning: false });
      await consumer.run({
        autoCommit: false,
        eachMessage: async ({ message }: EachMessagePayload) => settleWaiter(this.waiters, parseKafkaReply(message)),
      });
    };
    const inbox = { consumer, ready: Promise.resolve() };
    // Through broker outages (see ConsumerRestarter); if it gives up, waiting calls fail now and the next predict() opens a new reader.
    const restarter = new ConsumerRestarter({
      run,
      stopped: () => this.closing !== undefined || this.inbox !== inbox,
      onGiveUp: (err) => {
        this.inbox = undefined;
        for (const [id, w] of this.waiters) {
          clearTimeout(w.timer);
          w.reject(new InferqError(`the reply reader of topic "${this.replyTopic}" stopped while waiting for job ${id}: ${err.message}`, { jobId: id, retriable: true, cause: err }));
        }
        this.waiters.clear();
        void consumer.disconnect().catch(() => undefined);
      },
    });
    consumer.on(consumer.events.CRASH, (e) => restarter.crashed(e.payload.error, e.payload.restart));
    consumer.on(consumer.events.GROUP_JOIN, () => restarter.joined());
    inbox.ready = (async () => {
      await ensureTopic(this.kafka, this.replyTopic);
      await consumer.connect();
      // Ready only after the first fetch has fixed the position at the end of the topic.
      const fetched = new Promise<void>((resolve) => {
        const off = consumer.on(consumer.events.FETCH, () => {
          off();
          resolve();
        });
      });
      await run();
      await Promise.race([fetched, restarter.failed]);
    })();
    // A reader that could not start is dropped (and disconnected), so the next predict() tries a new one.
    inbox.ready.catch(() => {
      if (this.inbox === inbox) this.inbox = undefined;
      void consumer.disconnect().catch(() => undefined);
    });
    this.inbox = inbox;
    return inbox.ready;
  }

  /**
   * Consumes a reply topic through a consumer group: instances with the same group share
   * its partitions; offsets are committed after the handler returns, so a restarted
   * subscriber resumes after the last reply it handled (at least once).
   */
  subscribe(topic: string, handler: (reply: Reply) => Promise<void> | void, options: KafkaSubscribeOptions): ReplySubscription {
    this.assertOpen();
    const consumer = this.kafka.consumer({ groupId: options.group, maxWaitTimeInMs: 100, allowAutoTopicCreation: true });
    let closed = false;
    let stop: () => void = () => undefined;
    const stopped = new Promise<void>((resolve) => (stop = resolve));
    const run = async (): Promise<void> => {
      await consumer.subscribe({ topic, fromBeginning: options.fromBeginning ?? true });
      await consumer.run({
        eachMessage: async ({ message }: EachMessagePayload) => {
          const reply = parseKafkaReply(message);
          try {
            await handler(reply);
          } catch (err) {
            options.onError?.(err, reply);
            throw err;
          }
        },
      });
    };
    // Through broker outages (see ConsumerRestarter); when it gives up, `done` rejects with the consumer's error.
    const restarter = new ConsumerRestarter({ run, stopped: () => closed });
    consumer.on(consumer.events.CRASH, (e) => restarter.crashed(e.payload.error, e.payload.restart));
    consumer.on(consumer.events.GROUP_JOIN, () => restarter.joined());
    const done = (async () => {
      try {
        await ensureTopic(this.kafka, topic);
        await consumer.connect();
        await run();
        await Promise.race([stopped, restarter.failed]);
      } finally {
        closed = true;
        await consumer.disconnect().catch(() => undefined);
      }
    })();
    const sub: ReplySubscription = {
      done,
      close: async () => {
        closed = true;
        stop();
        await done.catch(() => undefined);
      },
    };
    this.subscriptions.add(sub);
    void done.catch(() => undefined).finally(() => this.subscriptions.delete(sub));
    return sub;
  }

  /** Sends what lingers, stops subscriptions and the reply reader, fails pending predict() calls. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.flush();
    await Promise.allSettled(this.sending);
    await Promise.allSettled([...this.subscriptions].map((s) => s.close()));
    for (const [id, w] of this.waiters) {
      clearTimeout(w.timer);
      w.reject(new ClosedError(`producer closed while waiting for job ${id}`, { jobId: id }));
    }
    this.waiters.clear();
    if (this.inbox !== undefined) {
      await this.inbox.ready.catch(() => undefined);
      await this.inbox.consumer.disconnect().catch(() => undefined);
    }
    if (this.connected !== undefined) await this.producer.disconnect();
  }

  private assertOpen(): void {
    if (this.closing !== undefined) throw new ClosedError('producer is closed');
  }
}

/** Creates a topic (broker defaults for partitions and replication) unless it exists, so a consumer can subscribe at once. */
async function ensureTopic(kafka: Kafka, topic: string): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

/** A reply message as the workers write it (see KAFKA_HEADERS in @inferq/shared). */
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
    error: { message: header(KAFKA_HEADERS.error) ?? 'unknown error', kind: header(KAFKA_HEADERS.kind) ?? 'Error' },
    entryId: message.offset,
  };
}
