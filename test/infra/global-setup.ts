/**
 * Vitest global set-up: one real redis-server for the whole run (unless REDIS_URL
 * points at an external one), handed to the suites with provide('redisUrl').
 * Each suite uses its own random queue names and cleans up after itself.
 */
import type { TestProject } from 'vitest/node';
import { startRedis } from './redis.js';
import type { RedisServer } from './redis.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

let redis: RedisServer | undefined;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const external = process.env['REDIS_URL'];
  if (external !== undefined && external !== '') {
    project.provide('redisUrl', external);
  } else {
    redis = await startRedis();
    project.provide('redisUrl', redis.url);
  }
  return async () => {
    await redis?.stop();
  };
}
