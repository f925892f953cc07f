/**
 * The shared test servers, for integration suites: ask for the ones a suite needs, at the
 * top of the file or in beforeAll, and only those are started, once per run for all suites
 * (server-broker.ts, in the vitest main process, started by global-setup.ts):
 *
 *   const url = await redisServer();       // "redis://127.0.0.1:port"
 *   const brokers = await kafkaServer();   // ["127.0.0.1:port"]
 *   const webhdfs = await hdfsServer();    // "http://127.0.0.1:port" (WebHDFS)
 *
 * REDIS_URL, KAFKA_BROKERS (comma-separated) and WEBHDFS_URL point the suites at external
 * servers instead; then nothing is started. Each suite uses its own random queue, topic,
 * group and folder names. A suite that must stop or reconfigure a server starts its own
 * (startRedis, startKafka, startHdfs).
 */
import { inject } from 'vitest';
import { askBroker } from './server-broker.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The server broker's Unix socket (global-setup.ts). */
    testServers: string;
  }
}

export type ServerKind = 'redis' | 'kafka' | 'hdfs';

/** The environment variable that points the suites at an external server of each kind. */
export const EXTERNAL_ENV: Readonly<Record<ServerKind, string>> = { redis: 'REDIS_URL', kafka: 'KAFKA_BROKERS', hdfs: 'WEBHDFS_URL' };

/** The shared Redis's URL. */
export function redisServer(): Promise<string> {
  return serverAddress('redis');
}

/** The shared Kafka broker's addresses ("host:port"), for kafkajs `brokers`. */
export async function kafkaServer(): Promise<string[]> {
  return (await serverAddress('kafka')).split(',');
}

/** The shared HDFS's WebHDFS base URL. */
export function hdfsServer(): Promise<string> {
  return serverAddress('hdfs');
}

const asked = new Map<ServerKind, Promise<string>>();

function serverAddress(kind: ServerKind): Promise<string> {
  const external = process.env[EXTERNAL_ENV[kind]];
  if (external !== undefined && external !== '') return Promise.resolve(external);
  let pending = asked.get(kind);
  if (pending === undefined) {
    const socket = inject('testServers');
    pending =
      socket === undefined
        ? Promise.reject(new Error(`no ${kind} server here: test/infra/global-setup.ts runs only in the "integration" project (test/**/*.test.ts); move the suite there, or set ${EXTERNAL_ENV[kind]}`))
        : askBroker(socket, kind);
    asked.set(kind, pending);
  }
  return pending;
}
