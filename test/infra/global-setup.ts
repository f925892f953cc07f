/**
 * Vitest global set-up: one real redis-server, one real Kafka broker and one real HDFS
 * (MiniDFSCluster with WebHDFS) for the whole run, started side by side, handed to the
 * suites with provide('redisUrl' | 'kafkaBrokers' | 'webhdfsUrl'). REDIS_URL /
 * KAFKA_BROKERS / WEBHDFS_URL point the suites at external servers instead. Each suite
 * uses its own random queue, topic, group and folder names.
 */
import type { TestProject } from 'vitest/node';
import { startHdfs } from './hdfs.js';
import type { HdfsServer } from './hdfs.js';
import { startKafka } from './kafka.js';
import type { KafkaServer } from './kafka.js';
import { startRedis } from './redis.js';
import type { RedisServer } from './redis.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
    kafkaBrokers: string[];
    webhdfsUrl: string;
  }
}

let redis: RedisServer | undefined;
let kafka: KafkaServer | undefined;
let hdfs: HdfsServer | undefined;

const external = (name: string): string | undefined => {
  const v = process.env[name];
  return v === undefined || v === '' ? undefined : v;
};

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const redisUrl = external('REDIS_URL');
  const kafkaBrokers = external('KAFKA_BROKERS');
  const webhdfsUrl = external('WEBHDFS_URL');
  const [r, k, h] = await Promise.allSettled([
    redisUrl === undefined ? startRedis().then((s) => (redis = s)) : Promise.resolve(undefined),
    kafkaBrokers === undefined ? startKafka().then((s) => (kafka = s)) : Promise.resolve(undefined),
    webhdfsUrl === undefined ? startHdfs().then((s) => (hdfs = s)) : Promise.resolve(undefined),
  ]);
  const teardown = async (): Promise<void> => {
    await Promise.allSettled([redis?.stop(), kafka?.destroy(), hdfs?.destroy()]);
  };
  const failed = [r, k, h].find((x): x is PromiseRejectedResult => x.status === 'rejected');
  if (failed !== undefined) {
    await teardown();
    throw failed.reason;
  }
  project.provide('redisUrl', redisUrl ?? redis!.url);
  project.provide('kafkaBrokers', kafkaBrokers?.split(',') ?? kafka!.brokers);
  project.provide('webhdfsUrl', webhdfsUrl ?? hdfs!.url);
  return teardown;
}
