/**
 * Kafka clients side by side on the same broker, without inferq around them: CPU per 256 KB
 * message to produce (key, 6 headers, acks=all, idempotent) and CPU per row to consume (1,000
 * rows per message) for kafkajs and, when it can be loaded, @platformatic/kafka. Each phase runs
 * in a child process of its own (nothing else in it), so its CPU time is the client's alone.
 *
 *   node --conditions=inferq-source --import tsx bench/kafka-clients.ts
 *
 * Env: KAFKA_BROKERS (default: a broker of its own from test/infra); KAFKA_CLIENTS_DIR, a folder
 * whose node_modules holds the other clients (they are not dependencies of inferq); CLIENTS_MESSAGES
 * (default 300); CLIENTS_RUNS (default 3); CLIENTS_ONLY=kafkajs; CLIENTS_FETCH_MB="16,64": the kafkajs
 * consumer's maxBytesPerPartition and maxBytes in MiB (the worker's are in workers/src/sources/kafka/source.ts);
 * CLIENTS_PROFILE_DIR: write a CPU profile of each phase's main thread there (bench/profile-summary.mjs reads them).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';
import type { Admin } from 'kafkajs';
import { startKafka } from '../test/infra/kafka.js';
import type { KafkaServer } from '../test/infra/kafka.js';
import { profiled } from './profile-inprocess.js';

const MESSAGES = Number(process.env['CLIENTS_MESSAGES'] ?? 300);
const RUNS = Number(process.env['CLIENTS_RUNS'] ?? 3);
const VALUE_BYTES = 256 * 1024;
const ROWS = 1000;
/** Messages per send call, one call at a time (idempotent producers; @platformatic/kafka 2.12 fails sequence numbers with two in flight). */
const PER_SEND = 16;
const SENDS_IN_FLIGHT = 1;

interface Cpu {
  readonly user: number;
  readonly sys: number;
  readonly mainUser: number;
  readonly mainSys: number;
}
function cpu(): Cpu {
  const read = (path: string): [number, number] => {
    const stat = readFileSync(path, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return [Number(f[11]) / 100, Number(f[12]) / 100];
  };
  const [user, sys] = read('/proc/self/stat');
  const [mainUser, mainSys] = read(`/proc/self/task/${process.pid}/stat`);
  return { user, sys, mainUser, mainSys };
}
/** CPU per unit between two readings: total, main thread user and system, other threads. */
function per(a: Cpu, b: Cpu, units: number, scale: number): string {
  const f = (s: number): number => (s / units) * scale;
  const all = f(b.user + b.sys - a.user - a.sys);
  const mu = f(b.mainUser - a.mainUser);
  const ms = f(b.mainSys - a.mainSys);
  return JSON.stringify({ all, mainUser: mu, mainSys: ms, others: all - mu - ms });
}

function message(i: number): { key: string; value: Buffer; headers: Record<string, string> } {
  const value = Buffer.allocUnsafe(VALUE_BYTES);
  for (let j = 0; j < VALUE_BYTES; j += 4) value.writeFloatLE(Math.sin(i + j), j);
  return { key: randomUUID(), value, headers: { 'inferq-id': randomUUID(), 'inferq-model': 'small', 'inferq-rows': String(ROWS), 'content-type': 'application/x-inferq-envelope', 'inferq-version': '1', 'inferq-reply-to': 'x.replies' } };
}

/** Sends MESSAGES messages through `send` (PER_SEND per call, SENDS_IN_FLIGHT calls at once). */
async function sendAll(send: (batch: ReturnType<typeof message>[]) => Promise<unknown>): Promise<void> {
  const pool = Array.from({ length: 8 }, (_, i) => message(i));
  const inflight = new Set<Promise<unknown>>();
  for (let sent = 0; sent < MESSAGES; sent += PER_SEND) {
    while (inflight.size >= SENDS_IN_FLIGHT) await Promise.race(inflight);
    const batch = Array.from({ length: Math.min(PER_SEND, MESSAGES - sent) }, (_, k) => {
      const m = pool[(sent + k) % pool.length]!;
      return { ...m, key: randomUUID(), headers: { ...m.headers, 'inferq-id': randomUUID() } };
    });
    const p = send(batch);
    inflight.add(p);
    void p.finally(() => inflight.delete(p)).catch(() => undefined);
  }
  await Promise.all(inflight);
}

// ---------------------------------------------------------------- one phase, in a child process

async function kafkajsPhase(phase: string, brokers: string[], topic: string): Promise<string> {
  const kafka = new Kafka({ clientId: 'clients-bench', brokers, logLevel: logLevel.NOTHING });
  if (phase === 'produce') {
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    await producer.send({ topic, acks: -1, messages: [message(0)] });
    const a = cpu();
    await sendAll((messages) => producer.send({ topic, acks: -1, messages }));
    const b = cpu();
    await producer.disconnect();
    return per(a, b, MESSAGES, 1e3);
  }
  const [perPartition, total] = (process.env['CLIENTS_FETCH_MB'] ?? '16,64').split(',').map((mb) => Number(mb) * 1024 * 1024) as [number, number];
  const consumer = kafka.consumer({ groupId: `clients-${topic}`, maxBytesPerPartition: perPartition, maxBytes: total, maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let got = 0;
  let sum = 0;
  const a = cpu(); // joining the group is counted too: a few ms
  const done = new Promise<void>((resolve) => {
    void consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) {
          sum += m.value?.[0] ?? 0;
          got++;
        }
        if (got >= MESSAGES + 1) resolve();
      },
    });
  });
  await done;
  const b = cpu();
  await consumer.disconnect();
  process.stderr.write(`checksum ${sum}\n`); // the values were read
  return per(a, b, (MESSAGES + 1) * ROWS, 1e6);
}

/** The part of @platformatic/kafka's API this bench uses (it is not a dependency, so its types are not at hand). */
interface Platformatic {
  Producer: new (options: object) => { send(request: object): Promise<unknown>; close(): Promise<void> };
  Consumer: new (options: object) => {
    consume(request: object): Promise<{ on(event: 'data', listener: (m: { value: Buffer }) => void): void; close(): Promise<void> }>;
    close(): Promise<void>;
  };
  stringSerializer: unknown;
}

async function platformaticPhase(phase: string, brokers: string[], topic: string): Promise<string> {
  const require = createRequire(join(process.env['KAFKA_CLIENTS_DIR'] ?? process.cwd(), 'package.json'));
  const pk = (await import(pathToFileURL(require.resolve('@platformatic/kafka')).href)) as Platformatic;
  if (phase === 'produce') {
    const str = pk.stringSerializer;
    const producer = new pk.Producer({ clientId: 'clients-bench', bootstrapBrokers: brokers, idempotent: true, acks: -1, serializers: { key: str, headerKey: str, headerValue: str } });
    const send = (messages: ReturnType<typeof message>[]): Promise<unknown> => producer.send({ messages: messages.map((m) => ({ ...m, topic })) });
    await send([message(0)]);
    const a = cpu();
    await sendAll(send);
    const b = cpu();
    await producer.close();
    return per(a, b, MESSAGES, 1e3);
  }
  const consumer = new pk.Consumer({ groupId: `clients-${topic}`, clientId: 'clients-bench', bootstrapBrokers: brokers, maxBytes: 64 * 1024 * 1024, maxWaitTime: 100 });
  const a = cpu(); // joining the group is counted too: a few ms
  const stream = await consumer.consume({ topics: [topic], mode: 'earliest', autocommit: false });
  let got = 0;
  let sum = 0;
  await new Promise<void>((resolve) => {
    stream.on('data', (m) => {
      sum += m.value[0] ?? 0;
      if (++got >= MESSAGES + 1) resolve();
    });
  });
  const b = cpu();
  await stream.close();
  await consumer.close();
  process.stderr.write(`checksum ${sum}\n`); // the values were read
  return per(a, b, (MESSAGES + 1) * ROWS, 1e6);
}

// ---------------------------------------------------------------- the driver

const SELF = fileURLToPath(import.meta.url);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

function childPhase(client: string, phase: string, brokers: string[], topic: string): { all: number; mainUser: number; mainSys: number; others: number } {
  const out = execFileSync(process.execPath, ['--conditions=inferq-source', '--import', 'tsx', SELF, 'phase', client, phase, brokers.join(','), topic], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
  return JSON.parse(out.trim().split('\n').at(-1)!) as { all: number; mainUser: number; mainSys: number; others: number };
}

function canLoad(client: string): boolean {
  if (client === 'kafkajs') return true;
  try {
    createRequire(join(process.env['KAFKA_CLIENTS_DIR'] ?? process.cwd(), 'package.json')).resolve('@platformatic/kafka');
    return true;
  } catch {
    return false;
  }
}

async function createTopic(admin: Admin, topic: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await admin.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: 1 }], waitForLeaders: true });
      return;
    } catch (err) {
      if (attempt >= 5) throw err;
      await new Promise((r) => setTimeout(r, 500)); // the broker elects the leaders meanwhile
    }
  }
}

async function main(): Promise<void> {
  let server: KafkaServer | undefined;
  const brokers = process.env['KAFKA_BROKERS']?.split(',') ?? (server = await startKafka()).brokers;
  const kafka = new Kafka({ clientId: 'clients-bench-admin', brokers, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const clients = ['kafkajs', '@platformatic/kafka'].filter((c) => {
    if (process.env['CLIENTS_ONLY'] !== undefined && c !== process.env['CLIENTS_ONLY']) return false;
    const ok = canLoad(c);
    if (!ok) console.log(`${c}: not found (set KAFKA_CLIENTS_DIR to a folder where it is installed); skipped`);
    return ok;
  });
  console.log(`kafka clients — node ${process.version}, ${MESSAGES} messages of ${VALUE_BYTES / 1024} KB per run, ${RUNS} run(s), load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  const results = new Map<string, { produce: number[]; consume: number[] }>(clients.map((c) => [c, { produce: [], consume: [] }]));
  const fmt = (r: { all: number; mainUser: number; mainSys: number; others: number }, d: number): string =>
    `${r.all.toFixed(d)} (main user ${r.mainUser.toFixed(d)} + sys ${r.mainSys.toFixed(d)}, other threads ${r.others.toFixed(d)})`;
  try {
    for (let run = 1; run <= RUNS; run++) {
      for (const client of clients) {
        const topic = `clients-${randomBytes(4).toString('hex')}`;
        await createTopic(admin, topic);
        try {
          const p = childPhase(client, 'produce', brokers, topic);
          const c = childPhase(client, 'consume', brokers, topic);
          results.get(client)!.produce.push(p.all);
          results.get(client)!.consume.push(c.all);
          console.log(`run ${run} ${client}: produce ${fmt(p, 3)} ms CPU/message; consume ${fmt(c, 3)} µs CPU/row; load ${loadavg()[0]!.toFixed(2)}`);
        } finally {
          await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
        }
      }
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
    for (const [client, r] of results) console.log(`median ${client}: produce ${median(r.produce).toFixed(3)} ms/message, consume ${median(r.consume).toFixed(3)} µs/row`);
  } finally {
    await admin.disconnect();
    await server?.destroy();
  }
}


if (process.argv[2] === 'phase') {
  const [client, phase, brokers, topic] = process.argv.slice(3) as [string, string, string, string];
  const run = (): Promise<string> => (client === 'kafkajs' ? kafkajsPhase : platformaticPhase)(phase, brokers.split(','), topic);
  const dir = process.env['CLIENTS_PROFILE_DIR'];
  const out = dir === undefined ? await run() : await profiled(join(dir, `${client.replace(/\W/g, '_')}-${phase}-${topic}.cpuprofile`), run);
  console.log(out);
  process.exit(0);
} else {
  await main();
}
