/** The topics a Kafka worker needs, and what the group's last commit says about earlier owners. */
import type { Admin } from 'kafkajs';
import { ConfigError } from '@inferq/shared';
import type { Logger } from '../../logging.js';
import { startedUpTo } from './offsets.js';

/** The request topic must exist (a worker on a mistyped topic would wait forever); `create` makes it. */
export async function checkTopic(admin: Admin, topic: string, brokers: readonly string[], create: { readonly partitions: number } | undefined, log: Logger): Promise<void> {
  if ((await admin.listTopics()).includes(topic)) return;
  if (create === undefined) {
    throw new ConfigError(`topic "${topic}" does not exist on ${brokers.join(',')}: create it, or start the worker with --create-topic --partitions N`);
  }
  await admin.createTopics({ topics: [{ topic, numPartitions: create.partitions }], waitForLeaders: true });
  log.info({ topic, partitions: create.partitions }, 'request topic created');
}

/** Creates a topic (broker defaults for partitions and replication) unless it exists. */
export async function ensureTopic(admin: Admin, topic: string): Promise<void> {
  await admin.createTopics({ topics: [{ topic }], waitForLeaders: true });
}

/**
 * Per partition, the highest offset anyone had taken at the group's last commit (its
 * metadata): a message at or below it may have been answered before a crash.
 */
export async function startedBefore(admin: Admin, group: string, topic: string, log: Logger): Promise<Map<number, number>> {
  try {
    const [entry] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
    return new Map((entry?.partitions ?? []).map((p) => [p.partition, startedUpTo(p.metadata)]));
  } catch (err) {
    log.warn({ err }, "could not read the committed offsets' metadata; deadlines apply to every message");
    return new Map();
  }
}
