/** The connection an admin command works through: a Redis queue or a Kafka topic, opened within a timeout, closed within one. */
import type { Admin } from 'kafkajs';
import type { Redis } from 'ioredis';
import { deadlineRace } from '../deadline.js';
import { connectAdmin, connectRedis, kafkaClient } from './connect.js';
import type { KafkaTarget, RedisTarget } from './connect.js';

export interface RedisQueueSpec extends RedisTarget {
  readonly transport: 'redis';
  readonly prefix: string;
  readonly queue: string;
}

export interface KafkaTopicSpec extends KafkaTarget {
  readonly transport: 'kafka';
  /** The request topic. */
  readonly topic: string;
  /** Its dead-letter topic (the workers' --dead-letter-topic; default `<topic>.dead`). */
  readonly deadLetterTopic: string;
  /** Kafka reads stop when no message came for this long. */
  readonly idleMs: number;
}

export type QueueSpec = RedisQueueSpec | KafkaTopicSpec;

/** Runs `f` with a Redis connection, closed afterwards (within the timeout whatever the server does). */
export async function withRedis<T>(spec: RedisTarget, f: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = await connectRedis(spec);
  try {
    return await f(redis);
  } finally {
    if ((await deadlineRace(redis.quit(), Date.now() + spec.timeoutMs)) === 'deadline') redis.disconnect();
  }
}

/** Runs `f` with a kafkajs client and a connected admin, disconnected afterwards. */
export async function withKafka<T>(spec: KafkaTarget, f: (kafka: ReturnType<typeof kafkaClient>, admin: Admin) => Promise<T>): Promise<T> {
  const kafka = kafkaClient(spec);
  const admin = await connectAdmin(kafka, spec);
  try {
    return await f(kafka, admin);
  } finally {
    await deadlineRace(admin.disconnect(), Date.now() + spec.timeoutMs);
  }
}
