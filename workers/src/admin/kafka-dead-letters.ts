/**
 * Dead letters of a Kafka topic (`<topic>.dead`): list, show, replay, purge.
 *
 * ```
 *  read     admin: each partition's [low, high) now ─► a consumer of a throw-away group (never
 *           commits) reads from low until every partition reaches its high, or nothing came
 *           for idleMs; the visitor decides what to keep (never the whole topic in memory)
 *  replay   the letter's value (the original envelope; a pack's letter: its job's rows) ─►
 *           KafkaProducer.enqueue to the request topic, keeping job id and partition key
 *  purge    admin.deleteRecords: everything below an offset of a partition (Kafka deletes no
 *           single message)
 * ```
 */
import { randomUUID } from 'node:crypto';
import type kafkajs from 'kafkajs';
import type { Admin, KafkaMessage } from 'kafkajs';
import { KafkaProducer } from '@inferq/producer';
import { ConfigError, KAFKA_HEADERS } from '@inferq/shared';
import { deadlineRace } from '../deadline.js';
import { headerString } from '../sources/kafka/headers.js';
import { replayJobs } from './letter-payload.js';
import type { KafkaTarget } from './connect.js';

type Kafka = InstanceType<typeof kafkajs.Kafka>;

/** One dead-letter message, as the worker wrote it (sources/kafka/replies.ts). */
export interface KafkaLetter {
  readonly partition: number;
  readonly offset: string;
  /** The failed job's id (a packed job's own). */
  readonly id: string;
  readonly code: string;
  readonly reason: string;
  readonly retriable: boolean;
  readonly kind: string;
  readonly model: string;
  readonly attempts: number;
  /** When it was written (epoch ms). */
  readonly ts: number | undefined;
  /** Where the original message was: topic, partition, offset. */
  readonly source: string;
  /** The original message's key. */
  readonly key: string | undefined;
  /** Size of the original value (the envelope); undefined for a message that had none. */
  readonly bytes: number | undefined;
}

/** A dead-letter message's headers as a letter; missing headers are empty (messages are untrusted). */
export function parseKafkaLetter(partition: number, m: KafkaMessage): KafkaLetter {
  const h = (name: string): string => headerString(m.headers, name) ?? '';
  const n = (v: string): number | undefined => (/^\d+$/.test(v) ? Number(v) : undefined);
  const sourceTopic = h(KAFKA_HEADERS.sourceTopic);
  return {
    partition,
    offset: m.offset,
    id: h(KAFKA_HEADERS.id),
    code: h(KAFKA_HEADERS.code),
    reason: h(KAFKA_HEADERS.error),
    retriable: h(KAFKA_HEADERS.retriable) === 'true',
    kind: h(KAFKA_HEADERS.kind),
    model: h(KAFKA_HEADERS.model),
    attempts: n(h(KAFKA_HEADERS.attempts)) ?? 0,
    ts: n(h(KAFKA_HEADERS.ts)),
    source: sourceTopic === '' ? '' : `${sourceTopic}:${h(KAFKA_HEADERS.sourcePartition)}:${h(KAFKA_HEADERS.sourceOffset)}`,
    key: m.key === null ? undefined : m.key.toString(),
    bytes: m.value === null ? undefined : m.value.byteLength,
  };
}

/** A letter with the message it came from (its value is the payload a replay sends). */
export interface KafkaLetterMessage {
  readonly letter: KafkaLetter;
  readonly message: KafkaMessage;
}

/** A position in the dead-letter topic: "<partition>:<offset>". */
export const POSITION = /^(\d+):(\d+)$/;

export interface ReadResult {
  /** Whether every partition was read to the end it had when the read started (false: stopped by the visitor or idle). */
  readonly complete: boolean;
  /** Messages in the topic when the read started. */
  readonly total: number;
}

export interface ReadOptions {
  /** Stop when no message came for this long. */
  readonly idleMs: number;
  /** Read only these partitions (default: all). */
  readonly partitions?: ReadonlySet<number>;
}

export class KafkaDeadLetters {
  constructor(
    private readonly kafka: Kafka,
    private readonly admin: Admin,
    readonly topic: string,
  ) {}

  /** The topic's partitions with their first and next offsets; ConfigError when it does not exist. */
  async ranges(): Promise<{ partition: number; low: number; high: number }[]> {
    if (!(await this.admin.listTopics()).includes(this.topic)) throw new ConfigError(`dead-letter topic "${this.topic}" does not exist (no dead letter was written yet, or another --topic / --dead-letter-topic)`);
    const offsets = await this.admin.fetchTopicOffsets(this.topic);
    return offsets.map((o) => ({ partition: o.partition, low: Number(o.low), high: Number(o.high) })).sort((a, b) => a.partition - b.partition);
  }

  /**
   * Reads the letters that exist now, oldest first per partition, handing each to `visit`
   * (which returns false to stop). Nothing is committed: the group is a throw-away one.
   */
  async read(visit: (l: KafkaLetterMessage) => Promise<boolean> | boolean, o: ReadOptions): Promise<ReadResult> {
    const all = await this.ranges();
    const ranges = all.filter((r) => o.partitions === undefined || o.partitions.has(r.partition));
    const total = ranges.reduce((n, r) => n + r.high - r.low, 0);
    const pending = new Map(ranges.filter((r) => r.high > r.low).map((r) => [r.partition, r.high]));
    if (pending.size === 0) return { complete: true, total };
    const consumer = this.kafka.consumer({ groupId: `inferq-dead-letters-cli-${randomUUID()}`, maxWaitTimeInMs: 200, retry: { retries: 2 } });
    let finish!: (complete: boolean) => void;
    const finished = new Promise<boolean>((resolve) => (finish = resolve));
    let idle: NodeJS.Timeout | undefined;
    const touch = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => finish(false), o.idleMs);
    };
    let stopped = false;
    // Partitions with nothing to read (or left out by the filter) are paused.
    const others = all.map((r) => r.partition).filter((p) => !pending.has(p));
    try {
      await consumer.connect();
      await consumer.subscribe({ topic: this.topic, fromBeginning: true });
      touch();
      await consumer.run({
        autoCommit: false,
        eachMessage: async ({ partition, message }) => {
          const end = pending.get(partition);
          if (stopped || end === undefined || Number(message.offset) >= end) return;
          touch();
          if (!(await visit({ letter: parseKafkaLetter(partition, message), message }))) {
            stopped = true;
            finish(false);
            return;
          }
          if (Number(message.offset) + 1 >= end) pending.delete(partition);
          if (pending.size === 0) {
            stopped = true;
            finish(true);
          }
        },
      });
      if (others.length > 0) consumer.pause([{ topic: this.topic, partitions: others }]);
      return { complete: await finished, total };
    } finally {
      stopped = true;
      clearTimeout(idle);
      await deadlineRace(consumer.disconnect(), Date.now() + o.idleMs);
    }
  }

  /** Deletes every message below `offset` in each partition given. */
  async purge(upTo: ReadonlyMap<number, number>): Promise<void> {
    await this.admin.deleteTopicRecords({ topic: this.topic, partitions: [...upTo].map(([partition, offset]) => ({ partition, offset: String(offset) })) });
  }
}

/** What became of one letter in a replay. */
export interface KafkaReplayResult {
  readonly letter: KafkaLetter;
  readonly ok: boolean;
  readonly enqueued: readonly string[];
  readonly reason?: string;
}

/** Sends dead letters back to a request topic through the SDK (KafkaProducer). */
export class KafkaReplayer {
  private readonly producer: KafkaProducer;

  constructor(target: KafkaTarget, topic: string) {
    this.producer = new KafkaProducer({ brokers: target.brokers, topic, connectTimeoutMs: target.timeoutMs, ...target.client });
  }

  /**
   * Re-enqueues one letter's job: its id (unless `newId`) and its partition key when it had one
   * of its own (a key other than the job's or pack's id).
   */
  async replay(m: KafkaLetterMessage, newId: boolean): Promise<KafkaReplayResult> {
    const l = m.letter;
    if (m.message.value === null) return { letter: l, ok: false, enqueued: [], reason: 'the message has no value (nothing to replay)' };
    const value = m.message.value;
    const replay = replayJobs(new Uint8Array(value.buffer, value.byteOffset, value.byteLength), l.id);
    if (typeof replay === 'string') return { letter: l, ok: false, enqueued: [], reason: replay };
    // The SDK keys a message by its job's (or pack's) id unless the caller gave a partition key.
    const partitionKey = l.key !== undefined && l.key !== replay.envelopeId ? l.key : undefined;
    const enqueued: string[] = [];
    for (const j of replay.jobs) {
      enqueued.push(await this.producer.enqueue(j.model, j.tensors, { ...j.options, jobId: newId ? randomUUID() : j.id, ...(partitionKey === undefined ? {} : { partitionKey }) }));
    }
    return { letter: l, ok: true, enqueued };
  }

  close(): Promise<void> {
    return this.producer.close();
  }
}
