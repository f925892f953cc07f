/**
 * The Kafka worker loop (kafkajs).
 *
 * ```
 *  consumer group ─ eachBatch ─► take offset (OffsetTracker) ─► decode envelope ─► model pool ─► validate ─► batcher
 *        ▲            │ resolveOffset at once: the next fetch                                            │
 *        │            │ starts while this batch still runs                                               ▼
 *        │            └ in flight > limit: pause the topic;          reply topic / dead-letter topic ◄── outputs
 *        │              resume below half of it                          (one idempotent producer, sends coalesced)
 *        └── commitOffsets(first offset per partition not yet written) ◄── message done
 * ```
 *
 * Offsets are committed by hand, per partition, only up to the first message whose
 * results are not all written, however the batches finish (see offsets.ts). A
 * partition revoked by a rebalance is forgotten: its in-flight messages finish, but
 * nothing more is committed for it; the new owner starts from the last commit
 * (at least once: a message in flight across a rebalance or a crash is answered
 * again, with the same job id). A redelivery of an offset this worker already took
 * (a rebalance that kept the partition here) is skipped, not run twice.
 *
 * Bad messages (corrupt bytes, wrong shape or dtype, unknown model, oversized, expired)
 * go to the dead-letter topic with the reason and the original key and value, and an
 * error reply goes to the caller when the message names a reply topic; the
 * partition keeps moving. Other errors are retried in process with backoff, then
 * dead-lettered. A send that cannot reach the broker is retried until it can: the
 * offset is not committed before it is written.
 */
import { hostname } from 'node:os';
import { Kafka, logLevel as kafkaLogLevel } from 'kafkajs';
import type { Admin, Consumer, EachBatchPayload, IHeaders, KafkaConfig, KafkaMessage, LogEntry, Message, Producer, logCreator } from 'kafkajs';
import {
  ConfigError,
  ConnectionError,
  ConsumerRestarter,
  ENVELOPE_CONTENT_TYPE,
  InferqError,
  InvalidInputError,
  KAFKA_HEADERS,
  decodeEnvelope,
  encodeEnvelope,
  jobSuffix,
  kafkaDeadLetterTopic,
} from '@inferq/shared';
import type { Envelope, NonFinitePolicy } from '@inferq/shared';
import type { Logger } from '../logging.js';
import type { ModelPool } from '../models/model-pool.js';
import type { ParquetSink } from '../sinks/parquet-sink.js';
import { deadlineRace } from './deadline.js';
import { inferEnvelope } from './infer.js';
import type { Inference } from './infer.js';
import { isPermanentWriteError } from '../sinks/write-errors.js';
import { OffsetTracker, startedUpTo } from './offsets.js';
import type { TopicPartitionOffset } from './offsets.js';

export interface KafkaWorkerOptions {
  /** Bootstrap brokers, "host:port". */
  readonly brokers: readonly string[];
  /** TLS and SASL, handed to kafkajs as they are (the CLI builds them in cli/connections.ts). Default: plaintext. */
  readonly client?: Pick<KafkaConfig, 'ssl' | 'sasl'>;
  readonly topic: string;
  /** Consumer group: workers of one group share the topic's partitions. */
  readonly group: string;
  readonly clientId?: string;
  readonly models: Pick<ModelPool, 'get'>;
  readonly logger: Logger;
  /** Default `<topic>.dead`. */
  readonly deadLetterTopic?: string;
  /** Messages in flight before the topic is paused (resumed below half). Default 4096. */
  readonly maxInFlightMessages?: number;
  /** Rows in flight before the topic is paused. Default 262,144. */
  readonly maxInFlightRows?: number;
  /** Largest accepted message value. Default 64 MiB. */
  readonly maxPayloadBytes?: number;
  /** Tries for retriable failures (in process, with backoff) before a message is dead-lettered. Default 3. */
  readonly attempts?: number;
  /** A new group starts at the earliest offset (default true), so jobs enqueued before the first worker are served. */
  readonly fromBeginning?: boolean;
  readonly sessionTimeoutMs?: number;
  /** NaN/Inf in features. Default 'reject'. */
  readonly nonFinite?: NonFinitePolicy;
  /**
   * Parquet sinks every result is written to. With sinks, a partition's offset is committed
   * only after a roll has published the results of every message below it; rolls are
   * named by their offset range, and on assignment the worker skips messages a complete
   * roll already holds (a crash between a roll and its commit writes nothing twice).
   */
  readonly sinks?: readonly ParquetSink[];
  /**
   * Crashes of the consumer in a row, with no rejoin between them, that the worker restarts
   * itself when kafkajs will not (default 8, backoff from 0.5 s doubling to 30 s).
   */
  readonly maxConsumerRestarts?: number;
  /**
   * Called when the worker cannot go on: the consumer crashed more than `maxConsumerRestarts`
   * times in a row, or a sink refuses every write (the process should exit and be restarted).
   */
  readonly onFatal?: (err: Error) => void;
  /** Create the request topic with this many partitions when it does not exist. Default: a missing topic fails start(). */
  readonly createTopic?: { readonly partitions: number };
  /** How long start() waits for the brokers and the group (its rebalance) before it fails with ConnectionError. Default 60 s. */
  readonly connectTimeoutMs?: number;
}

export interface KafkaWorkerStats {
  readonly completed: number;
  readonly deadLettered: number;
  readonly retried: number;
  readonly skippedRedeliveries: number;
  readonly commits: number;
  /** Messages skipped on assignment because a published sink roll already held them. */
  readonly skippedWritten: number;
  /** Sink rolls published. */
  readonly rolls: number;
  /** Most messages in flight at once (bounded by maxInFlightMessages). */
  readonly peakInFlight: number;
  /** Times the topic was paused for backpressure. */
  readonly pauses: number;
  /** Consumer crashes kafkajs would not restart, restarted by the worker. */
  readonly consumerRestarts: number;
}

interface Outgoing {
  readonly topic: string;
  readonly message: Message;
}

/** Per partition, with sinks: where the next roll starts, a roll that failed half-way (retried with the same range), its recovery. */
interface SinkState {
  rollFrom: number | undefined;
  retry: { first: number; last: number } | undefined;
  readonly recovered: Promise<number>;
}

const MB = 1024 * 1024;
const WORKER_ID = `${hostname()}:${process.pid}`;

export class KafkaWorker {
  private readonly opts: KafkaWorkerOptions;
  private readonly log: Logger;
  private readonly kafka: Kafka;
  private readonly consumer: Consumer;
  private readonly producer: Producer;
  private readonly sender: CoalescingSender;
  private readonly tracker = new OffsetTracker();
  private readonly deadLetters: string;
  private readonly counters = { completed: 0, deadLettered: 0, retried: 0, skippedRedeliveries: 0, commits: 0, skippedWritten: 0, rolls: 0, peakInFlight: 0, pauses: 0 };
  private readonly sinks: readonly ParquetSink[];
  private readonly sinkState = new Map<string, SinkState>();
  private inFlightMessages = 0;
  private inFlightRows = 0;
  private paused = false;
  private draining = false;
  private commitRunning: Promise<void> | undefined;
  private commitAgain = false;
  private rebalancing = false;
  private idleWaiters: (() => void)[] = [];
  private closing: Promise<void> | undefined;
  private commitTimer: NodeJS.Timeout | undefined;
  private commitFailures = 0;
  private readonly restarter: ConsumerRestarter;
  private admin: Admin | undefined;
  /** Per partition, the highest offset taken by whoever held it before (from the committed offset's metadata). */
  private startedBefore: Promise<Map<number, number>> = Promise.resolve(new Map());
  private fatalReported = false;

  constructor(options: KafkaWorkerOptions) {
    this.opts = options;
    this.log = options.logger.child({ transport: 'kafka', topic: options.topic, group: options.group });
    this.deadLetters = options.deadLetterTopic ?? kafkaDeadLetterTopic(options.topic);
    this.sinks = options.sinks ?? [];
    this.kafka = new Kafka({
      clientId: options.clientId ?? `inferq-worker-${hostname()}-${process.pid}`,
      brokers: [...options.brokers],
      logLevel: kafkaLogLevel.WARN,
      logCreator: pinoLogCreator(this.log),
      retry: { initialRetryTime: 200, maxRetryTime: 5000, retries: 10 },
      ...options.client,
    });
    this.consumer = this.kafka.consumer({
      groupId: options.group,
      sessionTimeout: options.sessionTimeoutMs ?? 30_000,
      heartbeatInterval: Math.max(500, Math.floor((options.sessionTimeoutMs ?? 30_000) / 10)),
      maxBytesPerPartition: 16 * MB,
      maxBytes: 64 * MB,
      maxWaitTimeInMs: 100,
      allowAutoTopicCreation: false,
    });
    // Idempotent: a retried send is written once. One request in flight keeps kafkajs's sequence numbers in order.
    this.producer = this.kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: true });
    this.sender = new CoalescingSender(this.producer);
    // In-flight messages keep running while the consumer restarts; they are committed once it has rejoined.
    this.restarter = new ConsumerRestarter({
      run: () => this.runConsumer(),
      stopped: () => this.draining,
      ...(options.maxConsumerRestarts === undefined ? {} : { maxRestarts: options.maxConsumerRestarts }),
      onRestart: (err, attempt, delayMs) =>
        this.log.warn({ err, attempt, of: options.maxConsumerRestarts ?? 8, delayMs }, 'kafka consumer stopped and kafkajs will not restart it; restarting it'),
      onGiveUp: (err) => {
        this.log.error({ err }, 'kafka consumer keeps crashing; giving up');
        this.opts.onFatal?.(err);
      },
    });
  }

  get stats(): KafkaWorkerStats {
    return { ...this.counters, consumerRestarts: this.restarter.restarts };
  }

  /**
   * Checks the request topic, connects, joins the group and starts consuming. Resolves once
   * the first partitions are assigned; rejects with ConfigError when the topic does not exist
   * (unless `createTopic`), and with ConnectionError when the brokers or the group do not
   * answer within `connectTimeoutMs`.
   */
  async start(): Promise<void> {
    const timeoutMs = this.opts.connectTimeoutMs ?? 60_000;
    const starting = this.connect();
    starting.catch(() => undefined);
    if ((await deadlineRace(starting, Date.now() + timeoutMs)) === 'deadline') {
      const address = this.opts.brokers.join(',');
      throw new ConnectionError(`cannot reach Kafka at ${address} or join group "${this.opts.group}" (waited ${timeoutMs} ms)`, { address });
    }
    await starting;
    // A commit that failed (coordinator moving, broker restarting) is retried even when no further message
    // finishes; and every 5 s all positions are committed again (as Kafka's own auto-commit does), so one
    // acknowledged by a coordinator that then lost it is repaired.
    let ticks = 0;
    this.commitTimer = setInterval(() => {
      if (++ticks % 5 === 0) this.tracker.recommitAll();
      if (this.tracker.pending().length > 0) this.scheduleCommit();
    }, 1000);
    this.commitTimer.unref();
    this.log.info({ deadLetters: this.deadLetters }, 'kafka worker started');
  }

  private async connect(): Promise<void> {
    // A sink folder that can never be written stops the worker before it takes a message.
    for (const sink of this.sinks) await sink.probe();
    // Few retries: a wrong address or refused credentials fail the start at once, with kafkajs's reason.
    const admin = this.kafka.admin({ retry: { retries: 2 } });
    this.admin = admin;
    await admin.connect();
    await this.checkTopic(admin);
    await ensureTopic(admin, this.deadLetters);
    await this.producer.connect();
    await this.consumer.connect();
    const joined = new Promise<void>((resolve) => {
      this.consumer.on(this.consumer.events.GROUP_JOIN, (e) => {
        const assigned = new Map<string, number[]>(Object.entries(e.payload.memberAssignment));
        this.tracker.retain(assigned);
        this.assignSinks(assigned.get(this.opts.topic) ?? []);
        this.startedBefore = this.fetchStartedBefore();
        this.tracker.recommitAll();
        this.rebalancing = false;
        this.restarter.joined();
        // A consumer that kafkajs restarted after a crash starts unpaused: pause it again if it should be.
        if (this.paused || this.draining) this.applyPause(true);
        this.log.info({ assignment: e.payload.memberAssignment, assigner: e.payload.groupProtocol }, 'partitions assigned');
        this.scheduleCommit();
        resolve();
      });
    });
    this.consumer.on(this.consumer.events.REBALANCING, () => {
      // Commits fail while the group re-forms; the tracker keeps them until it has.
      this.rebalancing = true;
    });
    this.consumer.on(this.consumer.events.CRASH, (e) => this.onCrash(e.payload.error, e.payload.restart));
    await this.runConsumer();
    await joined;
  }

  /** The request topic must exist (a worker on a mistyped topic would wait forever); `createTopic` creates it. */
  private async checkTopic(admin: Admin): Promise<void> {
    if ((await admin.listTopics()).includes(this.opts.topic)) return;
    const create = this.opts.createTopic;
    if (create === undefined) {
      throw new ConfigError(`topic "${this.opts.topic}" does not exist on ${this.opts.brokers.join(',')}: create it, or start the worker with --create-topic --partitions N`);
    }
    await admin.createTopics({ topics: [{ topic: this.opts.topic, numPartitions: create.partitions }], waitForLeaders: true });
    this.log.info({ partitions: create.partitions }, 'request topic created');
  }

  /**
   * Per partition, the highest offset anyone had taken at the group's last commit: a message at
   * or below it may have been answered before a crash, so it is not failed for its deadline now.
   */
  private async fetchStartedBefore(): Promise<Map<number, number>> {
    try {
      const [entry] = await this.admin!.fetchOffsets({ groupId: this.opts.group, topics: [this.opts.topic] });
      return new Map((entry?.partitions ?? []).map((p) => [p.partition, startedUpTo(p.metadata)]));
    } catch (err) {
      this.log.warn({ err }, 'could not read the committed offsets\' metadata; deadlines apply to every message');
      return new Map();
    }
  }

  private async runConsumer(): Promise<void> {
    await this.consumer.subscribe({ topic: this.opts.topic, fromBeginning: this.opts.fromBeginning ?? true });
    await this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: (payload) => this.eachBatch(payload),
    });
  }

  /** A CRASH event: kafkajs restarts retriable ones itself; the rest go to the restarter (see ConsumerRestarter). */
  private onCrash(err: Error, kafkajsRestarts: boolean): void {
    if (kafkajsRestarts) {
      this.log.warn({ err }, 'kafka consumer crashed; kafkajs restarts it');
      return;
    }
    if (this.draining) return;
    this.rebalancing = true;
    this.restarter.crashed(err, false);
  }

  /** Stops taking messages, finishes and commits in-flight ones (up to `timeoutMs`), leaves the group. */
  close(timeoutMs = 30_000): Promise<void> {
    this.closing ??= this.doClose(timeoutMs);
    return this.closing;
  }

  private async doClose(timeoutMs: number): Promise<void> {
    this.draining = true;
    const deadline = Date.now() + timeoutMs;
    // Keep the last part of the time for the final commit and leaving the group.
    const soft = deadline - Math.min(3000, timeoutMs / 3);
    // Paused, the consumer stays in the group (so the final commit is accepted) but fetches nothing.
    this.applyPause(true);
    const drained = await this.waitIdle(Math.max(0, soft - Date.now()));
    if (!drained) this.log.warn({ inFlight: this.inFlightMessages, timeoutMs }, 'in-flight messages did not finish in time; they are not committed and the next owner runs them again');
    clearInterval(this.commitTimer);
    await deadlineRace(this.flushCommits(Math.max(500, deadline - 1000 - Date.now())), deadline - 1000);
    for (const client of [this.consumer, this.producer, this.admin]) {
      if (client === undefined) continue;
      if ((await deadlineRace(client.disconnect(), Math.min(deadline, Date.now() + 1000))) === 'deadline') this.log.warn('a Kafka client did not disconnect in time; leaving it');
    }
  }

  private waitIdle(timeoutMs: number): Promise<boolean> {
    if (this.inFlightMessages === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.idleWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /** On assignment: each new partition's sink recovery starts (eachBatch waits for it); revoked ones are dropped. */
  private assignSinks(partitions: readonly number[]): void {
    if (this.sinks.length === 0) return;
    const groups = new Set(partitions.map((p) => sinkGroup(this.opts.topic, p)));
    for (const group of this.sinkState.keys()) {
      if (!groups.has(group)) {
        this.sinkState.delete(group);
        for (const sink of this.sinks) sink.drop(group);
      }
    }
    for (const group of groups) this.addSinkGroup(group);
  }

  /** Starts tracking a newly assigned partition: its recovery (the watermark of its complete rolls) begins at once. */
  private addSinkGroup(group: string): void {
    if (this.sinkState.has(group)) return;
    const recovered = (async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          const marks = await Promise.all(this.sinks.map((sink) => sink.recover(group)));
          return Math.min(...marks);
        } catch (err) {
          this.log.warn({ err, group, attempt }, 'could not read the sink to recover; retrying');
          await sleep(Math.min(5000, 200 * 2 ** Math.min(attempt, 5)));
        }
      }
    })();
    this.sinkState.set(group, { rollFrom: undefined, retry: undefined, recovered });
  }

  private async eachBatch({ batch, resolveOffset, isRunning, isStale }: EachBatchPayload): Promise<void> {
    const { topic, partition } = batch;
    // Normally set up by the assignment (GROUP_JOIN); a batch that comes first sets it up here.
    if (this.sinks.length > 0) this.addSinkGroup(sinkGroup(topic, partition));
    const sinkState = this.sinks.length > 0 ? this.sinkState.get(sinkGroup(topic, partition)) : undefined;
    // Messages a published roll already holds were answered and written before it: not again.
    const written = sinkState === undefined ? -1 : await sinkState.recovered;
    const startedBefore = (await this.startedBefore).get(partition) ?? -1;
    for (const message of batch.messages) {
      if (this.draining || !isRunning() || isStale()) return;
      if (this.overLimit()) {
        // Backpressure: the rest of this batch is fetched again after resume (its offsets are not resolved).
        this.pause();
        return;
      }
      const offset = Number(message.offset);
      if (!this.tracker.take(topic, partition, offset)) {
        this.counters.skippedRedeliveries++;
        resolveOffset(message.offset);
        continue;
      }
      if (offset <= written) {
        this.counters.skippedWritten++;
        this.tracker.done(topic, partition, offset);
        this.scheduleCommit();
        resolveOffset(message.offset);
        continue;
      }
      if (sinkState !== undefined) sinkState.rollFrom ??= offset;
      const rows = Number(headerString(message.headers, KAFKA_HEADERS.rows) ?? 1);
      this.inFlightMessages++;
      if (this.inFlightMessages > this.counters.peakInFlight) this.counters.peakInFlight = this.inFlightMessages;
      this.inFlightRows += Number.isFinite(rows) && rows > 0 ? rows : 1;
      void this.handle(topic, partition, message, sinkState, offset <= startedBefore).finally(() => {
        this.inFlightMessages--;
        this.inFlightRows -= Number.isFinite(rows) && rows > 0 ? rows : 1;
        this.tracker.done(topic, partition, offset);
        this.scheduleCommit();
        this.maybeResume();
        if (this.inFlightMessages === 0) for (const w of this.idleWaiters.splice(0)) w();
      });
      resolveOffset(message.offset);
    }
  }

  private overLimit(): boolean {
    return this.inFlightMessages >= (this.opts.maxInFlightMessages ?? 4096) || this.inFlightRows >= (this.opts.maxInFlightRows ?? 262_144);
  }

  private pause(): void {
    if (!this.paused) this.counters.pauses++;
    this.paused = true;
    // Also when already paused: a consumer restarted after a crash may have lost the pause.
    this.applyPause(true);
  }

  private maybeResume(): void {
    if (!this.paused || this.draining) return;
    if (this.inFlightMessages * 2 <= (this.opts.maxInFlightMessages ?? 4096) && this.inFlightRows * 2 <= (this.opts.maxInFlightRows ?? 262_144)) {
      this.paused = false;
      this.applyPause(false);
    }
  }

  /**
   * Pauses or resumes the topic. Between a consumer crash and kafkajs's restart of it the
   * consumer has no group, and pause/resume throw: the wanted state is then applied when
   * the restarted consumer is assigned its partitions (GROUP_JOIN).
   */
  private applyPause(pause: boolean): void {
    try {
      if (pause) this.consumer.pause([{ topic: this.opts.topic }]);
      else this.consumer.resume([{ topic: this.opts.topic }]);
    } catch (err) {
      this.log.debug({ err, pause }, 'consumer not running (restarting after a crash?); the pause state is applied when it rejoins');
    }
  }

  /**
   * Runs one message to the end: its reply or its dead letter is written when this resolves.
   * Never rejects. A message some owner may have started before (`startedBefore`) is not
   * failed for its deadline: its first run may have answered already.
   */
  private async handle(topic: string, partition: number, message: KafkaMessage, sinkState: SinkState | undefined, startedBefore: boolean): Promise<void> {
    const attempts = this.opts.attempts ?? 3;
    let envelope: Envelope | undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        envelope ??= this.decode(message);
        const result = await inferEnvelope(this.opts.models, startedBefore ? { ...envelope, deadline: undefined } : envelope, this.opts.nonFinite ?? 'reject');
        if (envelope.replyTo !== undefined) await this.writeForever([this.reply(envelope, result)], envelope.id);
        // Buffered here; durable when the roll that covers this offset is published, before its commit.
        // Not when the partition was revoked meanwhile (its state replaced): the next owner writes it.
        const current = sinkState !== undefined && this.sinkState.get(sinkGroup(topic, partition)) === sinkState;
        for (const sink of current ? this.sinks : []) {
          sink.add(sinkGroup(topic, partition), {
            seq: Number(message.offset),
            jobId: envelope.id,
            rowIds: envelope.rowIds,
            outputs: result.outputs,
            rows: result.rows,
            model: result.model.name,
            version: result.model.version,
            ts: Date.now(),
          });
        }
        this.counters.completed++;
        return;
      } catch (err) {
        const retriable = !(err instanceof InferqError) || err.retriable;
        if (retriable && attempt < attempts && !this.draining) {
          this.counters.retried++;
          this.log.warn({ err, jobId: envelope?.id, attempt }, 'message failed; retrying');
          await sleep(200 * 2 ** (attempt - 1));
          continue;
        }
        await this.writeForever(this.deadLetter(topic, partition, message, envelope, err, attempt), envelope?.id ?? messageId(message));
        return;
      }
    }
  }

  private decode(message: KafkaMessage): Envelope {
    const id = messageId(message);
    const value = message.value;
    if (value === null) throw new InvalidInputError(`message has no value (a tombstone)${jobSuffix(id)}`, { jobId: id });
    const limit = this.opts.maxPayloadBytes ?? 64 * MB;
    if (value.byteLength > limit) throw new InvalidInputError(`message of ${value.byteLength} bytes exceeds the ${limit}-byte limit${jobSuffix(id)}`, { jobId: id });
    const envelope = decodeEnvelope(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
    if (envelope.jobs !== undefined) {
      throw new InvalidInputError(`envelope packs ${envelope.jobs.length} jobs; packed envelopes travel over Redis only (send one envelope per Kafka message)${jobSuffix(envelope.id)}`, { jobId: envelope.id });
    }
    if (envelope.sinks !== undefined && envelope.sinks.length > 0) {
      throw new InvalidInputError(`job sinks ${JSON.stringify(envelope.sinks)} are honoured by Redis workers only; this Kafka worker writes every result to its --sink folders${jobSuffix(envelope.id)}`, { jobId: envelope.id });
    }
    const headerId = headerString(message.headers, KAFKA_HEADERS.id);
    if (headerId !== undefined && headerId !== envelope.id) {
      throw new InvalidInputError(`envelope id "${envelope.id}" does not match the ${KAFKA_HEADERS.id} header "${headerId}"`, { jobId: headerId });
    }
    return envelope;
  }

  private reply(envelope: Envelope, result: Inference): Outgoing {
    const bytes = encodeEnvelope({ id: envelope.id, model: result.model.name, version: result.model.version, rowIds: envelope.rowIds }, result.outputs);
    return {
      topic: envelope.replyTo!,
      message: {
        key: envelope.id,
        value: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
        headers: {
          [KAFKA_HEADERS.id]: envelope.id,
          [KAFKA_HEADERS.status]: 'ok',
          [KAFKA_HEADERS.model]: result.model.name,
          [KAFKA_HEADERS.version]: result.model.version,
          [KAFKA_HEADERS.contentType]: ENVELOPE_CONTENT_TYPE,
          [KAFKA_HEADERS.worker]: WORKER_ID,
        },
      },
    };
  }

  private deadLetter(topic: string, partition: number, message: KafkaMessage, envelope: Envelope | undefined, err: unknown, attempts: number): Outgoing[] {
    const reason = err instanceof Error ? err.message : String(err);
    const kind = err instanceof Error ? err.constructor.name : 'Error';
    const id = envelope?.id ?? messageId(message);
    const model = envelope?.model ?? headerString(message.headers, KAFKA_HEADERS.model) ?? '';
    this.counters.deadLettered++;
    this.log.warn({ jobId: id, kind, reason, partition, offset: message.offset }, 'message dead-lettered');
    const out: Outgoing[] = [
      {
        topic: this.deadLetters,
        message: {
          key: message.key,
          value: message.value,
          headers: {
            ...stringHeaders(message.headers),
            [KAFKA_HEADERS.id]: id,
            [KAFKA_HEADERS.error]: reason,
            [KAFKA_HEADERS.kind]: kind,
            [KAFKA_HEADERS.model]: model,
            [KAFKA_HEADERS.sourceTopic]: topic,
            [KAFKA_HEADERS.sourcePartition]: String(partition),
            [KAFKA_HEADERS.sourceOffset]: message.offset,
            [KAFKA_HEADERS.attempts]: String(attempts),
            [KAFKA_HEADERS.ts]: String(Date.now()),
            [KAFKA_HEADERS.worker]: WORKER_ID,
          },
        },
      },
    ];
    const replyTo = envelope?.replyTo ?? headerString(message.headers, KAFKA_HEADERS.replyTo);
    if (replyTo !== undefined && replyTo !== '') {
      out.push({
        topic: replyTo,
        message: { key: id, value: null, headers: { [KAFKA_HEADERS.id]: id, [KAFKA_HEADERS.status]: 'error', [KAFKA_HEADERS.error]: reason, [KAFKA_HEADERS.kind]: kind, [KAFKA_HEADERS.model]: model } },
      });
    }
    return out;
  }

  /** Sends until the broker takes it: an offset is never committed past a message whose output is not written. */
  private async writeForever(out: Outgoing[], id: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.sender.send(out);
        return;
      } catch (err) {
        if (this.draining && attempt > 3) throw err;
        this.log.warn({ err, jobId: id, attempt }, 'could not write to Kafka; retrying');
        await sleep(Math.min(5000, 200 * 2 ** Math.min(attempt, 5)));
      }
    }
  }

  /** At most one commit in flight; whatever finished meanwhile goes in the next one. */
  private scheduleCommit(): void {
    if (this.commitRunning !== undefined) {
      this.commitAgain = true;
      return;
    }
    this.commitRunning = (async () => {
      do {
        this.commitAgain = false;
        await new Promise((r) => setImmediate(r));
        await this.commitOnce();
      } while (this.commitAgain && !this.rebalancing);
    })().finally(() => {
      this.commitRunning = undefined;
    });
  }

  private async commitOnce(): Promise<void> {
    if (this.rebalancing) return;
    let offsets = this.tracker.pending();
    if (offsets.length > 0 && this.sinks.length > 0) offsets = await this.rollSinks(offsets);
    if (offsets.length === 0) return;
    try {
      // A commit sent just before a broker went away can wait forever for its answer; give up on it instead.
      await withTimeout(this.consumer.commitOffsets(offsets), 10_000, 'offset commit');
      this.tracker.committed(offsets);
      this.counters.commits++;
      this.log.debug({ offsets }, 'offsets committed');
      this.commitFailures = 0;
    } catch (err) {
      // Not lost: the tracker still holds them; the next finished message, or the commit timer, commits again.
      this.commitFailures++;
      if (this.commitFailures % 10 === 3) this.log.warn({ err, offsets, failures: this.commitFailures }, 'offset commits keep failing; retrying');
      else this.log.debug({ err, offsets }, 'offset commit failed; will retry');
    }
  }

  /**
   * With sinks, an offset may be committed only once the results of every message below it
   * are published. For each partition with a commitable offset C: when a roll is due (rows,
   * bytes, age, or shutting down) the buffered results of [rollFrom, C-1] are published as
   * one roll, then C is committed; a partition whose roll is not due yet waits (its offset
   * stays pending); one with nothing buffered in the range commits at once. A roll that
   * failed is retried with the same range, so its file names do not change.
   */
  private async rollSinks(offsets: TopicPartitionOffset[]): Promise<TopicPartitionOffset[]> {
    const ok: TopicPartitionOffset[] = [];
    for (const o of offsets) {
      const group = sinkGroup(o.topic, o.partition);
      const st = this.sinkState.get(group);
      if (st === undefined) continue;
      const next = Number(o.offset);
      const range = st.retry ?? { first: st.rollFrom ?? next, last: next - 1 };
      const buffered = range.first <= range.last && this.sinks.some((sink) => sink.has(group, range.first, range.last));
      if (buffered) {
        if (st.retry === undefined && !this.draining && !this.sinks.some((sink) => sink.due(group))) {
          // Not due yet: the position stays where the unwritten results start, but the metadata moves on.
          ok.push({ ...o, offset: String(range.first) });
          continue;
        }
        st.retry = range;
        try {
          for (const sink of this.sinks) await sink.roll(group, range.first, range.last);
        } catch (err) {
          if (isPermanentWriteError(err)) this.sinkRefused(err as Error);
          else this.log.warn({ err, group, first: range.first, last: range.last }, 'sink roll failed; retrying (the offset waits)');
          continue;
        }
        st.retry = undefined;
        this.counters.rolls++;
      }
      st.rollFrom = range.last + 1;
      ok.push({ ...o, offset: String(range.last + 1) });
    }
    return ok;
  }

  /** A worker sink that refuses every write: nothing past it can ever be committed, so the worker stops (once). */
  private sinkRefused(err: Error): void {
    if (this.fatalReported) return;
    this.fatalReported = true;
    this.log.error({ err }, 'a sink refused the rows for good; the offsets cannot move past them');
    this.opts.onFatal?.(err);
  }

  private async flushCommits(timeoutMs: number): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      await this.commitRunning;
      if (this.tracker.pending().length === 0) return;
      await this.commitOnce();
      if (this.tracker.pending().length === 0) return;
      await sleep(100);
    }
    this.log.warn({ pending: this.tracker.pending() }, 'could not commit the last offsets; those messages run again on the next owner');
  }
}

/**
 * Coalesces sends: every message queued while one sendBatch is in flight goes into
 * the next one (kafkajs has no linger of its own); each caller learns the outcome
 * of the request that carried its messages.
 */
class CoalescingSender {
  private queue: { out: Outgoing[]; resolve: () => void; reject: (err: unknown) => void }[] = [];
  private running = false;

  constructor(private readonly producer: Producer) {}

  send(out: Outgoing[]): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ out, resolve, reject });
      if (!this.running) {
        this.running = true;
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const items = this.queue;
      this.queue = [];
      const byTopic = new Map<string, Message[]>();
      for (const item of items) {
        for (const o of item.out) {
          let list = byTopic.get(o.topic);
          if (list === undefined) byTopic.set(o.topic, (list = []));
          list.push(o.message);
        }
      }
      try {
        await this.producer.sendBatch({ acks: -1, topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })) });
        for (const item of items) item.resolve();
      } catch (err) {
        for (const item of items) item.reject(err);
      }
    }
    this.running = false;
  }
}

/** Creates a topic (broker defaults for partitions and replication) unless it exists. */
async function ensureTopic(admin: Admin, topic: string): Promise<void> {
  await admin.createTopics({ topics: [{ topic }], waitForLeaders: true });
}

/** A sink group: one Kafka partition (its roll files are named after it). */
const sinkGroup = (topic: string, partition: number): string => `${topic}-${partition}`;

function messageId(message: KafkaMessage): string {
  return headerString(message.headers, KAFKA_HEADERS.id) ?? message.key?.toString() ?? `offset ${message.offset}`;
}

function headerString(headers: IHeaders | undefined, name: string): string | undefined {
  const v = headers?.[name];
  if (v === undefined) return undefined;
  const first = Array.isArray(v) ? v[0] : v;
  return first === undefined ? undefined : first.toString();
}

function stringHeaders(headers: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of Object.keys(headers ?? {})) {
    const v = headerString(headers, name);
    if (v !== undefined) out[name] = v;
  }
  return out;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new InferqError(`${what} got no answer within ${ms} ms`, { retriable: true })), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Routes kafkajs's log lines into our pino logger. */
function pinoLogCreator(logger: Logger): logCreator {
  return () =>
    ({ namespace, level, log }: LogEntry) => {
      const { message, ...extra } = log;
      const fields = { kafkajs: namespace, ...extra };
      if (level === kafkaLogLevel.ERROR) logger.error(fields, message);
      else if (level === kafkaLogLevel.WARN) logger.warn(fields, message);
      else if (level === kafkaLogLevel.INFO) logger.info(fields, message);
      else logger.debug(fields, message);
    };
}
