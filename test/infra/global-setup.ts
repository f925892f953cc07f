/**
 * Vitest global set-up of the "integration" project: starts no server itself, only the
 * broker that starts each shared server the first time a suite asks for it (servers.ts:
 * redisServer(), kafkaServer(), hdfsServer()), and stops what was started at the end of the
 * run. A run of suites that need no server starts nothing.
 */
import type { TestProject } from 'vitest/node';
import { startHdfs } from './hdfs.js';
import { startKafka } from './kafka.js';
import { startRedis } from './redis.js';
import { startServerBroker } from './server-broker.js';
import type { Starter } from './server-broker.js';
import type { ServerKind } from './servers.js';

const starters: Readonly<Record<ServerKind, Starter>> = {
  redis: async () => {
    const s = await startRedis();
    return { address: s.url, stop: () => s.stop() };
  },
  kafka: async () => {
    const s = await startKafka();
    return { address: s.brokers.join(','), stop: () => s.destroy() };
  },
  hdfs: async () => {
    const s = await startHdfs();
    return { address: s.url, stop: () => s.destroy() };
  },
};

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const broker = await startServerBroker(starters);
  project.provide('testServers', broker.socket);
  return () => broker.close();
}
