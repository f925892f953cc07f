/**
 * The on-demand server broker: each kind is started the first time some process asks and
 * never otherwise, every asker gets the same address, and close() stops what was started.
 * The starters here are counters (the real ones are in global-setup.ts).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { askBroker, startServerBroker } from './server-broker.js';
import type { ServerBroker, StartedServer, Starter } from './server-broker.js';
import { hdfsServer, kafkaServer } from './servers.js';

const BROKER_MODULE = fileURLToPath(new URL('./server-broker.ts', import.meta.url));

interface Counted {
  readonly starter: Starter;
  readonly starts: () => number;
  readonly stops: () => number;
}

/** A starter that counts its starts and stops; `gate` holds each start until it resolves. */
function counted(kind: string, gate: Promise<void> = Promise.resolve()): Counted {
  let starts = 0;
  let stops = 0;
  const starter = async (): Promise<StartedServer> => {
    const n = ++starts;
    await gate;
    return { address: `${kind}-${n}`, stop: async () => void stops++ };
  };
  return { starter, starts: () => starts, stops: () => stops };
}

/** askBroker from a separate node process, as a test file's worker would. */
function askFromChild(socket: string, kind: string): Promise<string> {
  const code = `const { askBroker } = await import(${JSON.stringify(BROKER_MODULE)}); process.stdout.write(await askBroker(process.argv[1], process.argv[2]));`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code, socket, kind], { cwd: dirname(BROKER_MODULE), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => (status === 0 ? resolve(out) : reject(new Error(`child exited ${status}: ${err}`))));
  });
}

const brokers: ServerBroker[] = [];
const brokerWith = async (starters: Record<string, Starter>): Promise<ServerBroker> => {
  const b = await startServerBroker(starters, { log: () => undefined });
  brokers.push(b);
  return b;
};

afterEach(async () => {
  await Promise.allSettled(brokers.splice(0).map((b) => b.close()));
});

describe('server broker', () => {
  it('starts a kind once for every process that asks, and never a kind nobody asks for', async () => {
    const redis = counted('redis');
    const kafka = counted('kafka');
    const hdfs = counted('hdfs');
    const broker = await brokerWith({ redis: redis.starter, kafka: kafka.starter, hdfs: hdfs.starter });
    const answers = await Promise.all([askFromChild(broker.socket, 'redis'), askFromChild(broker.socket, 'redis'), askBroker(broker.socket, 'redis'), askBroker(broker.socket, 'redis')]);
    expect(answers).toEqual(['redis-1', 'redis-1', 'redis-1', 'redis-1']);
    expect(await askBroker(broker.socket, 'kafka')).toBe('kafka-1');
    expect([redis.starts(), kafka.starts(), hdfs.starts()]).toEqual([1, 1, 0]);
    expect(broker.asked).toEqual(['redis', 'kafka']);

    await broker.close();
    expect([redis.stops(), kafka.stops(), hdfs.stops()]).toEqual([1, 1, 0]);
    expect(existsSync(dirname(broker.socket))).toBe(false);
    await expect(askBroker(broker.socket, 'redis')).rejects.toThrow(/did not answer for redis/);
  });

  it('gives every asker the same start failure, without starting again', async () => {
    let starts = 0;
    const broker = await brokerWith({
      kafka: async () => {
        starts++;
        throw new Error('the Kafka broker exited during start-up');
      },
    });
    await expect(askBroker(broker.socket, 'kafka')).rejects.toThrow('kafka did not start: the Kafka broker exited during start-up');
    await expect(askFromChild(broker.socket, 'kafka')).rejects.toThrow('kafka did not start: the Kafka broker exited during start-up');
    expect(starts).toBe(1);
    await broker.close(); // nothing to stop, nothing to report again
  });

  it('refuses a kind it does not know, naming the ones it does', async () => {
    const broker = await brokerWith({ redis: counted('redis').starter });
    await expect(askBroker(broker.socket, 'zookeeper')).rejects.toThrow('no test server "zookeeper" (known: redis)');
    await expect(askBroker(broker.socket, 'constructor')).rejects.toThrow('no test server "constructor"');
  });

  it('close() waits for a start in progress and stops that server too', async () => {
    let finishStart = (): void => undefined;
    const hdfs = counted('hdfs', new Promise<void>((resolve) => (finishStart = resolve)));
    const broker = await brokerWith({ hdfs: hdfs.starter });
    const asking = askBroker(broker.socket, 'hdfs');
    asking.catch(() => undefined); // close() cuts this connection; only the stop matters here
    await vi.waitFor(() => expect(hdfs.starts()).toBe(1));
    const closing = broker.close();
    finishStart();
    await closing;
    expect(hdfs.stops()).toBe(1);
  });

  it('close() reports a server that fails to stop', async () => {
    const broker = await brokerWith({
      redis: async () => ({
        address: 'redis-1',
        stop: async () => {
          throw new Error('redis-server ignored SIGTERM');
        },
      }),
    });
    await askBroker(broker.socket, 'redis');
    await expect(broker.close()).rejects.toThrow('stopping redis: redis-server ignored SIGTERM');
  });
});

describe('servers.ts outside the integration project', () => {
  it('an external server from the environment is used as is', async () => {
    vi.stubEnv('KAFKA_BROKERS', '10.0.0.1:9092,10.0.0.2:9092');
    try {
      expect(await kafkaServer()).toEqual(['10.0.0.1:9092', '10.0.0.2:9092']);
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it('without one, asking says the suite belongs in the integration project', async () => {
    vi.stubEnv('WEBHDFS_URL', '');
    try {
      await expect(hdfsServer()).rejects.toThrow(/no hdfs server here: .*"integration" project.*set WEBHDFS_URL/);
    } finally {
      vi.unstubAllEnvs();
    }
  });
});
