/**
 * Vitest global set-up: one real redis-server and one real Kafka broker for the whole
 * run, started side by side, handed to the suites with provide('redisUrl') and
 * provide('kafkaBrokers'). REDIS_URL / KAFKA_BROKERS point the suites at external
 * servers instead. Each suite uses its own random queue, topic and group names.
 */
import type { TestProject } from 'vitest/node';
import { startKafka } from './kafka.js';
import type { KafkaServer } from './kafka.js';
import { startRedis } from './redis.js';
import type { RedisServer } from './redis.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
    kafkaBrokers: string[];
  }
}

let redis: RedisServer | undefined;
let kafka: KafkaServer | undefined;

const external = (name: string): string | undefined => {
  const v = process.env[name];
  return v === undefined || v === '' ? undefined : v;
};

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const redisUrl = external('REDIS_URL');
  const kafkaBrokers = external('KAFKA_BROKERS');
  const [r, k] = await Promise.allSettled([
    redisUrl === undefined ? startRedis().then((s) => (redis = s)) : Promise.resolve(undefined),
    kafkaBrokers === undefined ? startKafka().then((s) => (kafka = s)) : Promise.resolve(undefined),
  ]);
  const teardown = async (): Promise<void> => {
    await Promise.allSettled([redis?.stop(), kafka?.destroy()]);
  };
  const failed = [r, k].find((x): x is PromiseRejectedResult => x.status === 'rejected');
  if (failed !== undefined) {
    await teardown();
    throw failed.reason;
  }
  project.provide('redisUrl', redisUrl ?? redis!.url);
  project.provide('kafkaBrokers', kafkaBrokers?.split(',') ?? kafka!.brokers);
  return teardown;
}
