/** Helpers for suites that run against the real Kafka broker started by test/infra. */
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import type { Admin, Consumer, KafkaMessage } from 'kafkajs';
import { ConsumerRestarter } from '@inferq/shared';

/** A fresh topic name per test: suites never see each other's messages. */
export function topicName(prefix = 't'): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

export function testKafka(brokers: string[]): Kafka {
  return new Kafka({ clientId: 'inferq-test', brokers, logLevel: logLevel.NOTHING, retry: { initialRetryTime: 100, retries: 20 } });
}

export async function withAdmin<T>(brokers: string[], f: (admin: Admin) => Promise<T>): Promise<T> {
  const admin = testKafka(brokers).admin();
  await admin.connect();
  try {
    return await f(admin);
  } finally {
    await admin.disconnect();
  }
}

export async function createTopic(brokers: string[], topic: string, partitions = 1): Promise<void> {
  await withAdmin(brokers, async (admin) => {
    await admin.createTopics({ topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }], waitForLeaders: true });
  });
}

/** Sum over partitions of the group's committed offsets on `topic` (-1 offsets count as 0). */
export async function committedTotal(brokers: string[], group: string, topic: string): Promise<number> {
  return withAdmin(brokers, async (admin) => {
    const [t] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
    return (t?.partitions ?? []).reduce((n, p) => n + Math.max(0, Number(p.offset)), 0);
  });
}

/** Reads a topic from its beginning into `messages`, live, until stop(). */
export interface TopicReader {
  readonly messages: KafkaMessage[];
  /** Consumer crashes seen (kafkajs restarts it after a retriable one), for failure messages. */
  readonly crashes: string[];
  stop(): Promise<void>;
}

export async function readTopic(brokers: string[], topic: string): Promise<TopicReader> {
  const consumer: Consumer = testKafka(brokers).consumer({ groupId: `reader-${randomUUID()}`, maxWaitTimeInMs: 50 });
  const messages: KafkaMessage[] = [];
  const crashes: string[] = [];
  let stopped = false;
  const run = async (): Promise<void> => {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({ autoCommit: false, eachMessage: async ({ message }) => void messages.push(message) });
  };
  // Readers live through broker restarts in some tests: the same restart policy as the SDK's consumers.
  const restarter = new ConsumerRestarter({ run, stopped: () => stopped });
  consumer.on(consumer.events.CRASH, (e) => {
    crashes.push(`${e.payload.error.message} (restart: ${e.payload.restart})`);
    restarter.crashed(e.payload.error, e.payload.restart);
  });
  consumer.on(consumer.events.GROUP_JOIN, () => restarter.joined());
  await withAdmin(brokers, (admin) => admin.createTopics({ topics: [{ topic }], waitForLeaders: true }));
  await consumer.connect();
  await run();
  return {
    messages,
    crashes,
    stop: () => {
      stopped = true;
      return consumer.disconnect();
    },
  };
}

export function header(m: KafkaMessage, name: string): string | undefined {
  const v = m.headers?.[name];
  const first = Array.isArray(v) ? v[0] : v;
  return first === undefined ? undefined : first.toString();
}
