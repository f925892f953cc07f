/**
 * Jobs from a Kafka topic (kafkajs).
 *
 * ```
 *  consumer group ─ eachBatch ─► take offset (OffsetTracker) ─► Delivery ─► pipeline ─► outcome
 *        ▲            │ resolveOffset at once: the next fetch          done / failed ─► offset done
 *        │            │ starts while this batch still runs             retry ─► again here, with backoff
 *        │            └ in flight ≥ concurrency: pause; resume below half      handBack ─► never committed
 *        └── commitOffsets(first offset per partition not yet done, metadata: highest taken) ◄── Committer
 * ```
 *
 * Offsets are committed per partition only up to the first message whose results are not all
 * durable, however messages finish (offsets.ts). A partition revoked by a rebalance is
 * forgotten: its in-flight messages finish, but nothing more is committed for it, and its
 * buffered Parquet rows are dropped (the new owner starts from the last commit: at least once,
 * same job ids). A message some owner may have started before (at or below the highest offset
 * taken at the group's last commit) is not failed for its deadline.
 */
import { hostname } from 'node:os';
import { Kafka, logLevel as kafkaLogLevel } from 'kafkajs';
import type { Admin, Consumer, EachBatchPayload, KafkaMessage, Producer } from 'kafkajs';
import { ClosedError, ConnectionError, ConsumerRestarter, InvalidInputError, KAFKA_HEADERS, jobSuffix } from '@inferq/shared';
import { deadlineRace } from '../../deadline.js';
import type { Logger } from '../../logging.js';
import type { SinkSet } from '../../sinks/sink-set.js';
import type { Delivery, Handler, Outcome, Source, SourceDepth, SourceHealth } from '../source.js';
import { Committer } from './commits.js';
import { headerString, messageId } from './headers.js';
import { KafkaRolls, sinkGroup } from './journal.js';
import { consumerLag } from './lag.js';
import { pinoLogCreator } from './log-bridge.js';
import { OffsetTracker } from './offsets.js';
import { resolveKafkaSourceOptions } from './options.js';
import type { KafkaSourceOptions, ResolvedKafkaSourceOptions } from './options.js';
import { KafkaReplies } from './replies.js';
import { KafkaSender } from './sender.js';
import { checkTopic, ensureTopic, startedBefore } from './topics.js';

const MB = 1024 * 1024;

export class KafkaSource implements Source {
  readonly name = 'kafka';
  readonly replies: KafkaReplies;
  readonly journal: KafkaRolls;
  readonly concurrency: number;
  onRevoked: ((groups: readonly string[]) => void) | undefined;
  private readonly opts: ResolvedKafkaSourceOptions;
  private readonly log: Logger;
  private readonly kafka: Kafka;
  private readonly consumer: Consumer;
  private readonly producer: Producer;
  private readonly tracker = new OffsetTracker();
  private readonly committer: Committer;
  private readonly restarter: ConsumerRestarter;
  private readonly counters = { skippedRedeliveries: 0, skippedWritten: 0, peakInFlight: 0, pauses: 0 };
  private admin: Admin | undefined;
  private handler: Handler | undefined;
  /** The worker's sinks, for skipping messages a complete roll already holds (set by the worker). */
  sinks: SinkSet | undefined;
  private assigned = new Set<string>();
  private started: Promise<Map<number, number>> = Promise.resolve(new Map());
  private inFlightMessages = 0;
  private inFlightRows = 0;
  private paused = false;
  private draining = false;
  /** Why the consumer is not in its group now (undefined while it is): readiness. */
  private outOfGroup: string | undefined = 'not joined yet';
  private idleWaiters: (() => void)[] = [];
  private handBack!: (reason: Error) => void;
  private readonly handingBack: Promise<Outcome>;

  constructor(options: KafkaSourceOptions) {
    this.opts = resolveKafkaSourceOptions(options);
    this.log = options.logger.child({ transport: 'kafka', topic: this.opts.topic, group: this.opts.group });
    this.concurrency = this.opts.concurrency;
    this.kafka = new Kafka({
      clientId: options.clientId ?? `inferq-worker-${hostname()}-${process.pid}`,
      brokers: [...options.brokers],
      logLevel: kafkaLogLevel.WARN,
      logCreator: pinoLogCreator(this.log),
      retry: { initialRetryTime: 200, maxRetryTime: 5000, retries: 10 },
      ...options.client,
    });
    this.consumer = this.kafka.consumer({
      groupId: this.opts.group,
      sessionTimeout: this.opts.sessionTimeoutMs,
      heartbeatInterval: Math.max(500, Math.floor(this.opts.sessionTimeoutMs / 10)),
      maxBytesPerPartition: 16 * MB,
      maxBytes: 64 * MB,
      maxWaitTimeInMs: 100,
      allowAutoTopicCreation: false,
    });
    // Idempotent: a retried send is written once. One request in flight keeps kafkajs's sequence numbers in order.
    this.producer = this.kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: true });
    this.replies = new KafkaReplies(new KafkaSender(this.producer, this.log, () => this.draining), this.opts.deadLetterTopic);
    this.journal = new KafkaRolls(this.tracker, this.log);
    this.committer = new Committer(this.consumer, this.tracker, this.log);
    // In-flight messages keep running while the consumer restarts; they are committed once it has rejoined.
    this.restarter = new ConsumerRestarter({
      run: () => this.runConsumer(),
      stopped: () => this.draining,
      maxRestarts: this.opts.maxConsumerRestarts,
      onRestart: (err, attempt, delayMs) => this.log.warn({ err, attempt, of: this.opts.maxConsumerRestarts, delayMs }, 'kafka consumer stopped and kafkajs will not restart it; restarting it'),
      onGiveUp: (err) => {
        this.log.error({ err }, 'kafka consumer keeps crashing; giving up');
        this.opts.onFatal?.(err);
      },
    });
    this.handingBack = new Promise<Outcome>((resolve) => (this.handBack = (err) => resolve({ kind: 'handBack', err })));
  }

  stats(): Record<string, number> {
    return { ...this.counters, commits: this.committer.commits, consumerRestarts: this.restarter.restarts };
  }

  /** Connected while the consumer is in its group: not between a crash and its rejoin, nor after it stopped. */
  health(): SourceHealth {
    return this.outOfGroup === undefined ? { connected: true } : { connected: false, reason: `kafka consumer of group "${this.opts.group}": ${this.outOfGroup}` };
  }

  /** The group's lag per partition of the topic, and the messages kept in the dead-letter topic. */
  async depth(): Promise<SourceDepth | undefined> {
    const admin = this.admin;
    if (admin === undefined || this.draining) return undefined;
    const [partitions, dead] = await Promise.all([consumerLag(admin, this.opts.group, this.opts.topic), admin.fetchTopicOffsets(this.opts.deadLetterTopic)]);
    const deadLetters = dead.reduce((n, p) => n + Math.max(0, Number(p.high) - Number(p.low)), 0);
    return { kind: 'topic', transport: this.name, topic: this.opts.topic, group: this.opts.group, partitions: partitions.map((p) => ({ partition: p.partition, lag: p.lag })), deadLetters };
  }

  /**
   * Checks the request topic, connects, joins the group and starts consuming. Resolves once the
   * first partitions are assigned; rejects with ConfigError when the topic does not exist
   * (unless `createTopic`), and with ConnectionError when the brokers or the group do not
   * answer within `connectTimeoutMs`.
   */
  async start(handler: Handler): Promise<void> {
    this.handler = handler;
    const starting = this.connect();
    starting.catch(() => undefined);
    if ((await deadlineRace(starting, Date.now() + this.opts.connectTimeoutMs)) === 'deadline') {
      const address = this.opts.brokers.join(',');
      throw new ConnectionError(`cannot reach Kafka at ${address} or join group "${this.opts.group}" (waited ${this.opts.connectTimeoutMs} ms)`, { address });
    }
    await starting;
    this.committer.start();
    this.log.info({ deadLetters: this.opts.deadLetterTopic, concurrency: this.opts.concurrency }, 'kafka source started');
  }

  private async connect(): Promise<void> {
    // Few retries: a wrong address or refused credentials fail the start at once, with kafkajs's reason.
    const admin = this.kafka.admin({ retry: { retries: 2 } });
    this.admin = admin;
    await admin.connect();
    await checkTopic(admin, this.opts.topic, this.opts.brokers, this.opts.createTopic, this.log);
    await ensureTopic(admin, this.opts.deadLetterTopic);
    await this.producer.connect();
    await this.consumer.connect();
    const joined = new Promise<void>((resolve) => {
      this.consumer.on(this.consumer.events.GROUP_JOIN, (e) => {
        this.outOfGroup = undefined;
        this.onAssigned(new Map<string, number[]>(Object.entries(e.payload.memberAssignment)));
        this.log.info({ assignment: e.payload.memberAssignment, assigner: e.payload.groupProtocol }, 'partitions assigned');
        resolve();
      });
    });
    this.consumer.on(this.consumer.events.REBALANCING, () => (this.committer.rebalancing = true));
    this.consumer.on(this.consumer.events.CRASH, (e) => {
      this.outOfGroup = `crashed (${e.payload.error.message})`;
      this.onCrash(e.payload.error, e.payload.restart);
    });
    this.consumer.on(this.consumer.events.STOP, () => (this.outOfGroup ??= 'stopped'));
    await this.runConsumer();
    await joined;
  }

  /** A (re)assignment: revoked partitions are forgotten and their buffered rows dropped; positions are committed again. */
  private onAssigned(assignment: Map<string, number[]>): void {
    this.tracker.retain(assignment);
    const now = new Set((assignment.get(this.opts.topic) ?? []).map((p) => this.journal.assign(this.opts.topic, p)));
    const revoked = [...this.assigned].filter((g) => !now.has(g));
    for (const g of revoked) this.journal.revoke(g);
    if (revoked.length > 0) this.onRevoked?.(revoked);
    this.assigned = now;
    this.started = startedBefore(this.admin!, this.opts.group, this.opts.topic, this.log);
    this.tracker.recommitAll();
    this.committer.rebalancing = false;
    this.restarter.joined();
    // A consumer that kafkajs restarted after a crash starts unpaused: pause it again if it should be.
    if (this.paused || this.draining) this.applyPause(true);
    this.committer.schedule();
  }

  private async runConsumer(): Promise<void> {
    await this.consumer.subscribe({ topic: this.opts.topic, fromBeginning: this.opts.fromBeginning });
    await this.consumer.run({ autoCommit: false, eachBatchAutoResolve: false, partitionsConsumedConcurrently: 1, eachBatch: (payload) => this.eachBatch(payload) });
  }

  /** A CRASH event: kafkajs restarts retriable ones itself; the rest go to the restarter (see ConsumerRestarter). */
  private onCrash(err: Error, kafkajsRestarts: boolean): void {
    if (kafkajsRestarts) {
      this.log.warn({ err }, 'kafka consumer crashed; kafkajs restarts it');
      return;
    }
    if (this.draining) return;
    this.committer.rebalancing = true;
    this.restarter.crashed(err, false);
  }

  /**
   * Stops taking messages, lets in-flight ones finish and commits them, until the deadline;
   * what is not finished then is left uncommitted (the next owner runs it). Leaves the group.
   */
  async close(deadline: number): Promise<void> {
    this.draining = true;
    // Paused, the consumer stays in the group (so the final commit is accepted) but fetches nothing.
    this.applyPause(true);
    const soft = deadline - Math.min(3000, Math.max(0, deadline - Date.now()) / 3);
    if (!(await this.waitIdle(soft))) {
      this.log.warn({ inFlight: this.inFlightMessages }, 'in-flight messages did not finish in time; they are not committed and the next owner runs them again');
      this.handBack(new ClosedError('the shutdown deadline passed'));
    }
    this.committer.stop();
    await this.committer.flush(deadline - 1000);
    for (const client of [this.consumer, this.producer, this.admin]) {
      if (client === undefined) continue;
      if ((await deadlineRace(client.disconnect(), Math.min(deadline, Date.now() + 1000))) === 'deadline') this.log.warn('a Kafka client did not disconnect in time; leaving it');
    }
  }

  private waitIdle(deadline: number): Promise<boolean> {
    if (this.inFlightMessages === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
      this.idleWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  private async eachBatch({ batch, resolveOffset, isRunning, isStale }: EachBatchPayload): Promise<void> {
    const { topic, partition } = batch;
    const group = sinkGroup(topic, partition);
    // Messages a published roll already holds were answered and written before it: not again
    // (only when jobs cannot name sinks of their own, whose rolls may stand elsewhere).
    const written = this.sinks !== undefined && !this.sinks.allowsJobSinks ? await this.journal.skipUpTo(group, this.sinks) : -1;
    const startedUpTo = (await this.started).get(partition) ?? -1;
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
        this.committer.schedule();
        resolveOffset(message.offset);
        continue;
      }
      const rows = Number(headerString(message.headers, KAFKA_HEADERS.rows) ?? 1);
      const weight = Number.isFinite(rows) && rows > 0 ? rows : 1;
      this.inFlightMessages++;
      this.inFlightRows += weight;
      this.counters.peakInFlight = Math.max(this.counters.peakInFlight, this.inFlightMessages);
      void this.run(topic, partition, message, offset <= startedUpTo).finally(() => {
        this.inFlightMessages--;
        this.inFlightRows -= weight;
        this.maybeResume();
        if (this.inFlightMessages === 0) for (const w of this.idleWaiters.splice(0)) w();
      });
      resolveOffset(message.offset);
    }
  }

  /** Runs one message until its outcome is settled; retries in process. Never rejects. */
  private async run(topic: string, partition: number, message: KafkaMessage, startedBefore: boolean): Promise<void> {
    const offset = Number(message.offset);
    for (let attempt = 1; ; attempt++) {
      const outcome = await Promise.race([this.handler!(this.delivery(topic, partition, message, attempt, startedBefore)), this.handingBack]);
      if (outcome.kind === 'retry' && !this.draining) {
        await new Promise((r) => setTimeout(r, outcome.delayMs));
        continue;
      }
      if (outcome.kind === 'done' || outcome.kind === 'failed') {
        this.tracker.done(topic, partition, offset);
        this.committer.schedule();
      }
      return;
    }
  }

  private delivery(topic: string, partition: number, message: KafkaMessage, attempt: number, startedBefore: boolean): Delivery {
    const id = messageId(message);
    const header = (name: string): string | undefined => headerString(message.headers, name);
    return {
      id,
      expectedId: header(KAFKA_HEADERS.id),
      run: `${topic}:${partition}:${message.offset}`,
      // The journal of a Kafka worker is its file names: looking there is cheap, so every message does.
      rerun: true,
      attempt,
      maxAttempts: this.opts.attempts,
      position: { group: sinkGroup(topic, partition), seq: Number(message.offset) },
      enqueuedAt: Number(message.timestamp),
      hints: { model: header(KAFKA_HEADERS.model), version: header(KAFKA_HEADERS.version), replyTo: header(KAFKA_HEADERS.replyTo) },
      payload: async () => {
        const value = message.value;
        if (value === null) throw new InvalidInputError(`message has no value (a tombstone)${jobSuffix(id)}`, { jobId: id, code: 'BAD_JOB_DATA' });
        if (value.byteLength > this.opts.maxPayloadBytes) {
          throw new InvalidInputError(`message of ${value.byteLength} bytes exceeds the ${this.opts.maxPayloadBytes}-byte limit${jobSuffix(id)}`, { jobId: id, code: 'PAYLOAD_TOO_LARGE' });
        }
        return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
      },
      answered: async () => (startedBefore ? 'maybe' : 'no'),
      deadLetter: (letters) => this.replies.deadLetter({ topic, partition }, message, letters),
      rowsBuffered: () => this.tracker.ready(topic, partition, Number(message.offset)),
    };
  }

  private overLimit(): boolean {
    return this.inFlightMessages >= this.opts.concurrency || this.inFlightRows >= this.opts.maxInFlightRows;
  }

  private pause(): void {
    if (!this.paused) this.counters.pauses++;
    this.paused = true;
    // Also when already paused: a consumer restarted after a crash may have lost the pause.
    this.applyPause(true);
  }

  private maybeResume(): void {
    if (!this.paused || this.draining) return;
    if (this.inFlightMessages * 2 <= this.opts.concurrency && this.inFlightRows * 2 <= this.opts.maxInFlightRows) {
      this.paused = false;
      this.applyPause(false);
    }
  }

  /**
   * Pauses or resumes the topic. Between a consumer crash and kafkajs's restart of it the
   * consumer has no group, and pause/resume throw: the wanted state is then applied when the
   * restarted consumer is assigned its partitions (GROUP_JOIN).
   */
  private applyPause(pause: boolean): void {
    try {
      if (pause) this.consumer.pause([{ topic: this.opts.topic }]);
      else this.consumer.resume([{ topic: this.opts.topic }]);
    } catch (err) {
      this.log.debug({ err, pause }, 'consumer not running (restarting after a crash?); the pause state is applied when it rejoins');
    }
  }
}
