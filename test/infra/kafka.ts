/**
 * A real Apache Kafka broker (KRaft, one node acting as broker and controller) on
 * loopback ports, for tests. No Docker: the broker jars come from Maven Central
 * through test/infra/kafka/pom.xml (`mvn dependency:copy-dependencies`) and are
 * cached in ~/.cache/inferq/kafka-<version>/libs; the storage is formatted with
 * kafka.tools.StorageTool and the broker runs as `java -cp 'libs/*' kafka.Kafka`.
 * `KAFKA_BROKERS` set in the environment points the suites at an external cluster.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';
import { securityConfig } from './kafka-security.js';
import type { KafkaSecurityOptions, SecuredListeners } from './kafka-security.js';
import { mavenLibs, runCommand, stopChild } from './process.js';
import { freePort } from './redis.js';

/** The broker version tests run against; KAFKA_VERSION overrides it (the compatibility runs in the README). */
export const KAFKA_VERSION = process.env['KAFKA_VERSION'] ?? '3.9.1';

export interface KafkaServer {
  /** "127.0.0.1:port", for kafkajs `brokers`. */
  readonly brokers: string[];
  readonly version: string;
  /** Stops the broker (SIGTERM, then SIGKILL after 20 s). Its data stays. */
  stop(): Promise<void>;
  /** Starts it again on the same ports and data (for restart tests). */
  start(): Promise<void>;
  /** Stops it and deletes its data. */
  destroy(): Promise<void>;
  /** The broker JVM's pid while it runs (for CPU accounting in the bench). */
  pid(): number | undefined;
  /** With `security`: the SASL_SSL and SSL listeners' addresses (`brokers` stays PLAINTEXT). */
  readonly secured?: SecuredListeners;
}

/** Fetches the broker jars for `version` once (Maven Central through the throw-away pom); returns the libs folder. */
export function kafkaLibs(version = KAFKA_VERSION): Promise<string> {
  return mavenLibs({
    name: `kafka-${version}`,
    pom: join(dirname(fileURLToPath(import.meta.url)), 'kafka', 'pom.xml'),
    // Kafka 4 logs through slf4j 2; 3.x through slf4j 1.7.
    properties: { 'kafka.version': version, 'slf4j.version': Number(version.split('.')[0]) >= 4 ? '2.0.16' : '1.7.36' },
    what: `Apache Kafka ${version}`,
    instead: 'KAFKA_BROKERS to an external cluster',
  });
}

/** Waits until a kafkajs admin can describe the cluster. */
export async function waitForKafka(brokers: string[], timeoutMs = 60_000, alive: () => boolean = () => true): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const kafka = new Kafka({ clientId: 'inferq-test-infra', brokers, logLevel: logLevel.NOTHING, retry: { retries: 0 }, connectionTimeout: 1000 });
  for (;;) {
    const admin = kafka.admin();
    try {
      await admin.connect();
      const cluster = await admin.describeCluster();
      if (cluster.brokers.length > 0) return;
    } catch {
      // not up yet
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
    if (!alive()) throw new Error('the Kafka broker exited during start-up');
    if (Date.now() > deadline) throw new Error(`Kafka at ${brokers.join(',')} did not answer describeCluster within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export interface StartKafkaOptions {
  readonly version?: string;
  /** Extra server.properties lines. */
  readonly properties?: Record<string, string>;
  /** Also a SASL_SSL and an SSL (client certificate) listener, with these users (kafka-security.ts). */
  readonly security?: KafkaSecurityOptions;
}

export async function startKafka(options: StartKafkaOptions = {}): Promise<KafkaServer> {
  const version = options.version ?? KAFKA_VERSION;
  const libs = await kafkaLibs(version);
  const [port, controllerPort] = [await freePort(), await freePort()];
  const dir = await mkdtemp(join(tmpdir(), 'inferq-kafka-'));
  const sec = options.security === undefined ? undefined : securityConfig(options.security, await freePort(), await freePort());
  const props: Record<string, string> = {
    'process.roles': 'broker,controller',
    'node.id': '1',
    'controller.quorum.voters': `1@127.0.0.1:${controllerPort}`,
    listeners: [`PLAINTEXT://127.0.0.1:${port}`, `CONTROLLER://127.0.0.1:${controllerPort}`, ...(sec?.listeners ?? [])].join(','),
    'advertised.listeners': [`PLAINTEXT://127.0.0.1:${port}`, ...(sec?.listeners ?? [])].join(','),
    'controller.listener.names': 'CONTROLLER',
    'inter.broker.listener.name': 'PLAINTEXT',
    'listener.security.protocol.map': ['CONTROLLER:PLAINTEXT', 'PLAINTEXT:PLAINTEXT', ...(sec?.protocolMap ?? [])].join(','),
    'log.dirs': join(dir, 'data'),
    'offsets.topic.replication.factor': '1',
    // One partition for the internal topics: start-up and the first group join are seconds faster.
    'offsets.topic.num.partitions': '1',
    'transaction.state.log.replication.factor': '1',
    'transaction.state.log.min.isr': '1',
    'transaction.state.log.num.partitions': '1',
    'group.initial.rebalance.delay.ms': '0',
    'num.partitions': '1',
    // 1,000-row jobs of wide models are larger than Kafka's 1 MB default.
    'message.max.bytes': String(64 * 1024 * 1024),
    'replica.fetch.max.bytes': String(64 * 1024 * 1024),
    'auto.create.topics.enable': 'true',
    ...sec?.properties,
    ...options.properties,
  };
  const propsFile = join(dir, 'server.properties');
  writeFileSync(propsFile, Object.entries(props).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');
  const cp = `${libs}/*`;
  const clusterId = randomBytes(16).toString('base64url');
  const fmt = await runCommand('java', ['-cp', cp, 'kafka.tools.StorageTool', 'format', `--cluster-id=${clusterId}`, '-c', propsFile, '--ignore-formatted', ...(sec?.formatArgs ?? [])], { timeoutMs: 120_000 });
  if (fmt.code !== 0) throw new Error(`kafka StorageTool format failed (exit ${fmt.code ?? fmt.signal}): ${fmt.output}`);

  const brokers = [`127.0.0.1:${port}`];
  let child: ChildProcess | undefined;
  let log = '';
  const start = async (): Promise<void> => {
    log = '';
    const proc = spawn(
      'java',
      ['-Xms256m', '-Xmx768m', '-XX:+UseG1GC', '-Dorg.slf4j.simpleLogger.defaultLogLevel=warn', '-Djava.awt.headless=true', '-cp', cp, 'kafka.Kafka', propsFile],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const keep = (d: Buffer): void => {
      log = (log + d.toString()).slice(-8000);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    child = proc;
    try {
      await waitForKafka(brokers, 90_000, () => proc.exitCode === null && proc.signalCode === null);
    } catch (err) {
      proc.kill('SIGKILL');
      throw new Error(`${(err as Error).message}\n--- broker log ---\n${log}`);
    }
  };
  const stop = async (): Promise<void> => {
    const proc = child;
    child = undefined;
    await stopChild(proc, 20_000);
  };
  const destroy = async (): Promise<void> => {
    await stop();
    await rm(dir, { recursive: true, force: true });
  };
  await start();
  return { brokers, version, stop, start, destroy, pid: () => child?.pid, ...(sec === undefined ? {} : { secured: sec.addresses }) };
}
