/**
 * The inferq producer SDK over Kafka (kafkajs): the same calls as the Redis `Producer`.
 *
 * ```
 *  enqueue(model, batch) ── toTensors ─► encodeEnvelope ─► message { key: job id | partitionKey,
 *                                                          value: envelope, headers: id, model, version,
 *                                                          reply-to, rows, content-type }
 *     with linger: calls of one window that share model, version, replyTo, sinks, partition key and
 *     input signature are packed into one envelope (linger.ts), one message; messages of the same
 *     tick go out in one send; resolves when the broker has it (acks=all, idempotent producer)
 *  predict(...)  = enqueue(replyTo = the reply topic) + wait for the reply with that job id, read by
 *                  this instance's own consumer group (it reads every reply and keeps its own)
 *  subscribe(topic, handler, { group }) = a consumer group on a reply topic; offsets are committed
 *                  after the handler returns, so a restarted subscriber resumes where it stopped
 * ```
 *
 * Every call settles: reaching the brokers (connecting, creating a topic) is bounded by
 * `connectTimeoutMs`, a send handed to kafkajs by twice that; past them a call rejects with
 * ConnectionError (see kafka-connection.ts). kafkajs's own log goes to the SDK `logger`, never to stderr.
 */
import { randomUUID } from 'node:crypto';
import { Kafka, Partitioners } from 'kafkajs';
import type { IHeaders, KafkaConfig, Message, Producer as KafkaJsProducer } from 'kafkajs';
import { ClosedError, DEFAULT_QUEUE, ENVELOPE_CONTENT_TYPE, InferqError, KAFKA_HEADERS, encodeEnvelope, kafkaReplyTopic } from '@inferq/shared';
import type { JobData, TensorMap } from '@inferq/shared';
import { afterWait, connectTimeout, handled, settlesWithin } from './connection.js';
import { KafkaInbox } from './kafka-inbox.js';
import { Packer } from './linger.js';
import type { LingerOptions, PackOptions } from './linger.js';
import type { SdkLogger } from './connection.js';
import { KafkaLink, kafkaConfig } from './kafka-connection.js';
import { subscribeTopic } from './kafka-subscription.js';
import type { KafkaSubscribeOptions, ReplySubscription } from './kafka-subscription.js';
import { toTensors } from './features.js';
import type { FeatureBatch } from './features.js';
import { PredictTimeoutError } from './errors.js';
import type { EnqueueOptions } from './producer.js';
import type { Reply, ReplyWaiter } from './replies.js';

export interface KafkaProducerOptions {
  /**
   * Bootstrap brokers ("host:port"), or a kafkajs client to use as it is (then its own
   * logging, timeouts, ssl and sasl apply, and `clientId`, `ssl`, `sasl` here are ignored).
   */
  readonly brokers: readonly string[] | Kafka;
  /**
   * How long a call may take to reach the brokers before it rejects with ConnectionError; a send
   * handed to kafkajs gets twice that. kafkajs's connection timeout (half of it, at least 1 s),
   * request timeout (all of it) and retries (delays adding up to about half of it) are set from it.
   * Default 5000 ms.
   */
  readonly connectTimeoutMs?: number;
  /** Where kafkajs's errors (warn, at most once a minute per message) and warnings (debug) go; pino or console fit. Default: nowhere. */
  readonly logger?: SdkLogger;
  /** Request topic (the workers' `--topic`). Default "inferq". */
  readonly topic?: string;
  readonly clientId?: string;
  /** Topic predict() replies come back on. Default `<topic>.replies`. */
  readonly replyTopic?: string;
  /**
   * Producer-side batching, as the Redis `Producer` does it: enqueue() and predict() calls within
   * `ms` that share model, version, replyTo, sinks, partition key and input names/dtypes/row shape
   * are packed into one envelope — one message, one batcher entry and one reply message, which
   * the SDK splits back into one reply per job (parseKafkaReplies). A pack is sent at `maxJobs`
   * (default 1000) or `maxBytes` of features (default 1 MiB), or when the window ends.
   * Default: off; messages made in the same event-loop turn are still sent in one request.
   */
  readonly linger?: LingerOptions;
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

/** Redis's options less those Kafka cannot honour: per-message priority, delay and broker-side retries. */
export interface KafkaEnqueueOptions extends Omit<EnqueueOptions, 'priority' | 'delay' | 'attempts' | 'backoff'> {
  /** Message key (chooses the partition; ordering holds per key). Default: the job id. */
  readonly partitionKey?: string;
}

export interface KafkaPredictOptions extends Omit<KafkaEnqueueOptions, 'replyTo'> {
  /** How long to wait for the reply. Default 30 s. Also the job's deadline unless one is given. */
  readonly timeoutMs?: number;
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
  private readonly link: KafkaLink;
  private readonly producer: KafkaJsProducer;
  private connected: Promise<void> | undefined;
  private readonly options: KafkaProducerOptions;
  private pending: Pending[] = [];
  private pendingBytes = 0;
  private flushTimer: NodeJS.Immediate | undefined;
  private readonly sending = new Set<Promise<void>>();
  private readonly waiters = new Map<string, ReplyWaiter>();
  private readonly inbox: KafkaInbox;
  private readonly packer: Packer | undefined;
  private readonly subscriptions = new Set<ReplySubscription>();
  private closing: Promise<void> | undefined;

  constructor(options: KafkaProducerOptions) {
    this.options = options;
    this.topic = options.topic ?? DEFAULT_QUEUE;
    this.replyTopic = options.replyTopic ?? kafkaReplyTopic(this.topic);
    const ms = connectTimeout(options.connectTimeoutMs);
    const brokers = options.brokers instanceof Kafka ? undefined : options.brokers;
    this.link = new KafkaLink(brokers, ms, options.logger);
    this.kafka = brokers === undefined ? (options.brokers as Kafka) : new Kafka(kafkaConfig({ ...options, brokers }, ms, this.link));
    // Idempotent: a send retried after a lost ack is written once. The partitioner named, as kafkajs asks (its v2 default).
    this.producer = this.kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: true, createPartitioner: Partitioners.DefaultPartitioner });
    this.inbox = new KafkaInbox(this.kafka, this.link, this.replyTopic, this.waiters, () => this.closing !== undefined);
    const linger = options.linger;
    if (linger !== undefined && linger.ms > 0) this.packer = new Packer(linger, (id, meta, payload, pack) => this.produce(this.message(id, meta, payload, pack), payload.byteLength));
  }

  /** The producer's connection: one attempt at a time; a failed one is forgotten, so the next call tries again. */
  private connect(): Promise<void> {
    if (this.connected === undefined) {
      const attempt = this.producer.connect();
      this.connected = attempt;
      attempt.catch(() => {
        if (this.connected === attempt) this.connected = undefined;
      });
    }
    return this.connected;
  }

  /**
   * Enqueues a feature batch for `model`; resolves with the job id once the broker has it.
   * Rejects with ConnectionError when the brokers cannot be reached within connectTimeoutMs,
   * or do not take the message within twice that once it is sent.
   */
  enqueue(model: string, batch: FeatureBatch, options: KafkaEnqueueOptions = {}): Promise<string> {
    return handled(
      (async () => {
        this.assertOpen();
        const id = options.jobId ?? randomUUID();
        await this.submit(id, model, toTensors(batch, options.input), options);
        return id;
      })(),
    );
  }

  /** Packs a job (with linger) or sends it alone; resolves once the broker has it. Throws bad input at once. */
  private submit(id: string, model: string, tensors: TensorMap, options: KafkaEnqueueOptions): Promise<unknown> {
    const pack = { version: options.version, replyTo: options.replyTo, sinks: options.sinks, rowIds: options.rowIds, group: options.partitionKey };
    const packed = this.packer?.offer(id, model, { ...pack, deadline: options.deadline }, tensors);
    if (packed !== undefined) return packed;
    const envelope = encodeEnvelope({ id, model, version: options.version, rowIds: options.rowIds, replyTo: options.replyTo, sinks: options.sinks, deadline: options.deadline }, tensors);
    const rows = Object.values(tensors)[0]?.shape[0] ?? 0;
    return this.produce(this.message(id, { v: 1, model, version: options.version, rows, bytes: envelope.byteLength }, envelope, pack), envelope.byteLength);
  }

  /** The message of one envelope (a job or a pack): key, value and the headers that name it before it is decoded. */
  private message(id: string, meta: Omit<JobData, 'key' | 'b64'>, envelope: Uint8Array, pack: PackOptions): Message {
    const headers: IHeaders = {
      [KAFKA_HEADERS.id]: id,
      [KAFKA_HEADERS.model]: meta.model,
      [KAFKA_HEADERS.rows]: String(meta.rows),
      [KAFKA_HEADERS.contentType]: ENVELOPE_CONTENT_TYPE,
    };
    if (meta.version !== undefined) headers[KAFKA_HEADERS.version] = meta.version;
    if (pack.replyTo !== undefined) headers[KAFKA_HEADERS.replyTo] = pack.replyTo;
    return { key: pack.group ?? id, value: Buffer.from(envelope.buffer, envelope.byteOffset, envelope.byteLength), headers };
  }

  /** Connects (once) and sends `message` with the others of its tick (flush() bounds the send). */
  private async produce(message: Message, bytes: number): Promise<void> {
    await this.link.within(this.connect(), 'connecting');
    await new Promise<void>((resolve, reject) => this.add({ message, bytes, resolve, reject }));
  }

  private add(item: Pending): void {
    this.pending.push(item);
    this.pendingBytes += item.bytes;
    if (this.pending.length >= 1000 || this.pendingBytes >= 8 * 1024 * 1024) this.flush();
    else this.flushTimer ??= setImmediate(() => this.flush());
  }

  /** Sends what waits as one produce request; each enqueue() in it settles with it. */
  private flush(): void {
    if (this.flushTimer !== undefined) {
      clearImmediate(this.flushTimer);
      this.flushTimer = undefined;
    }
    const items = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    if (items.length === 0) return;
    const what = `sending to topic "${this.topic}"`;
    // Twice the bound: sends go one at a time (maxInFlightRequests 1), so a batch may wait for the one before it.
    const bound = 2 * this.link.connectTimeoutMs;
    const cancel = afterWait(bound, () => {
      const late = this.link.timeout(what, bound);
      items.forEach((i) => i.reject(late));
    });
    const sent = this.producer.send({ topic: this.topic, acks: -1, timeout: this.link.connectTimeoutMs, messages: items.map((i) => i.message) }).then(
      () => {
        cancel();
        items.forEach((i) => i.resolve());
      },
      (err: Error) => {
        cancel();
        const wrapped = this.link.classify(err, what) ?? new InferqError(`enqueue to topic "${this.topic}" failed: ${err.message}`, { retriable: true, cause: err });
        items.forEach((i) => i.reject(wrapped));
      },
    );
    this.sending.add(sent);
    void sent.then(() => this.sending.delete(sent)); // sent never rejects
  }

  /**
   * Enqueues and waits for the reply; settles within `timeoutMs` (the first call also starts
   * this producer's reply reader). Rejects with ConnectionError when the brokers cannot be
   * reached (within connectTimeoutMs), PredictTimeoutError, or RemoteJobError when the job failed.
   */
  predict(model: string, batch: FeatureBatch, options: KafkaPredictOptions = {}): Promise<Reply> {
    return handled(this.startPredict(model, batch, options));
  }

  private async startPredict(model: string, batch: FeatureBatch, options: KafkaPredictOptions): Promise<Reply> {
    this.assertOpen();
    const timeoutMs = options.timeoutMs ?? 30_000;
    const id = options.jobId ?? randomUUID();
    const tensors = toTensors(batch, options.input);
    const jobOptions = { ...options, replyTo: this.replyTopic, deadline: options.deadline ?? Date.now() + timeoutMs };
    let waiter: ReplyWaiter | undefined;
    const reply = new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.waiters.get(id) === waiter) this.waiters.delete(id);
        reject(new PredictTimeoutError(`no reply for job ${id} (model ${model}) within ${timeoutMs} ms`, { jobId: id, model }));
      }, timeoutMs);
      waiter = { resolve, reject, timer };
      this.waiters.set(id, waiter);
    });
    const w = waiter!;
    const send = async (): Promise<void> => {
      const inbox = this.inbox.ensure();
      await this.link.within(inbox.connected, 'connecting the reply reader');
      await inbox.ready; // bounded by this call's timer: a job is sent only once its reply cannot be missed
      if (this.waiters.get(id) !== w) return; // timed out (or closed) meanwhile: nobody waits for a reply
      await this.submit(id, model, tensors, jobOptions);
    };
    // A job that could not be sent fails this call now, with the reason (its timer and waiter go with it).
    send().catch((err: unknown) => {
      clearTimeout(w.timer);
      if (this.waiters.get(id) !== w) return;
      this.waiters.delete(id);
      const reason = err as Error;
      w.reject(err instanceof InferqError ? err : (this.link.classify(err, 'starting the reply reader') ?? new InferqError(`predict of job ${id}: ${reason.message}`, { jobId: id, model, retriable: true, cause: err })));
    });
    return reply;
  }

  /**
   * Consumes a reply topic through a consumer group: instances with the same group share
   * its partitions; offsets are committed after the handler returns, so a restarted
   * subscriber resumes after the last reply it handled (at least once). Its `ready` rejects
   * with ConnectionError when the brokers cannot be reached within connectTimeoutMs; once
   * ready it rides out outages until ConsumerRestarter gives up (then `done` rejects).
   */
  subscribe(topic: string, handler: (reply: Reply) => Promise<void> | void, options: KafkaSubscribeOptions): ReplySubscription {
    this.assertOpen();
    const sub = subscribeTopic(this.kafka, this.link, topic, handler, options);
    this.subscriptions.add(sub);
    const forget = (): void => void this.subscriptions.delete(sub);
    sub.done.then(forget, forget);
    return sub;
  }

  /**
   * Sends what lingers, stops subscriptions and the reply reader, fails pending predict() calls.
   * Idempotent. Settles within a few connectTimeoutMs even when the brokers are gone.
   */
  close(): Promise<void> {
    this.closing ??= handled(this.doClose());
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const bound = this.link.connectTimeoutMs;
    await settlesWithin(this.packer?.flush() ?? Promise.resolve(), bound);
    this.flush();
    await settlesWithin(Promise.all(this.sending), bound);
    await Promise.all([...this.subscriptions].map((s) => s.close()));
    for (const [id, w] of this.waiters) {
      clearTimeout(w.timer);
      w.reject(new ClosedError(`producer closed while waiting for job ${id}`, { jobId: id }));
    }
    this.waiters.clear();
    await this.inbox.close(bound);
    if (this.connected !== undefined) await settlesWithin(this.producer.disconnect(), bound);
  }

  private assertOpen(): void {
    if (this.closing !== undefined) throw new ClosedError('producer is closed');
  }
}
