/**
 * End to end through a real Apache Kafka broker: one Kafka 3.9.1 broker (test/infra, KRaft),
 * ONE `inferq worker --transport kafka` process, the KafkaProducer SDK in this process.
 *
 *   small MLP 64→256→128→1 and medium MLP 256→1024→1024→512→1, 1,000-row messages,
 *   request topic and reply topic of 3 partitions each: rows/s until the last reply is
 *   read back, and the ratio to raw ONNX Runtime at its best batch, measured in this run.
 *
 * Completions are counted by a consumer of the reply topic. CPU seconds of each process
 * (bench = producer + reply reader, worker, the Kafka JVM) are read from /proc: they say
 * where the time goes on this 2-core machine.
 *
 *   node --conditions=inferq-source --import tsx bench/kafka.ts     (or the end of `npm run bench`)
 *
 * Env: BENCH_QUICK=1 for a short smoke run.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';
import type { Consumer } from 'kafkajs';
import { KAFKA_HEADERS } from '@inferq/shared';
import type { TensorMap } from '@inferq/shared';
import { KafkaProducer } from '@inferq/producer';
import { buildMlp, randomMlp } from '../examples/build/onnx-builder.js';
import { writeModel } from '../test/helpers/models.js';
import { startKafka } from '../test/infra/kafka.js';
import type { KafkaServer } from '../test/infra/kafka.js';
import { QUICK, fmt, rawOrt, table } from './common.js';
import { cpuSeconds, killAll, machineBusySeconds, onSignal, spawnNode, unwatchServer, watchServer } from './processes.js';
import type { Child } from './processes.js';

const SMALL = [64, 256, 128, 1];
const MEDIUM = [256, 1024, 1024, 512, 1];
const JOB_ROWS = 1000;
const N = { small: QUICK ? 300 : 3000, medium: QUICK ? 20 : 200 };
/** Messages enqueued but not yet answered, at most (the worker pauses at 16 × its concurrency). */
const WINDOW = 1000;
const STALL_MS = 30_000;

function features(rows: number, width: number): TensorMap {
  const data = new Float32Array(rows * width);
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37);
  return { features: { dtype: 'float32', shape: [rows, width], data } };
}

/** Counts replies on a topic; `waitFor(n)` resolves once n arrived, fails after STALL_MS without one. */
class ReplyCounter {
  done = 0;
  errors = 0;
  firstError: string | undefined;
  private waiters: { n: number; resolve: () => void }[] = [];
  private constructor(private readonly consumer: Consumer) {}

  static async start(kafka: Kafka, topic: string): Promise<ReplyCounter> {
    const consumer = kafka.consumer({ groupId: `bench-replies-${topic}-${Date.now()}`, maxWaitTimeInMs: 20, maxBytesPerPartition: 16 * 1024 * 1024 });
    const counter = new ReplyCounter(consumer);
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) {
          if (m.headers?.[KAFKA_HEADERS.status]?.toString() !== 'ok') {
            counter.errors++;
            counter.firstError ??= m.headers?.[KAFKA_HEADERS.error]?.toString();
          }
        }
        counter.done += batch.messages.length;
        const due = counter.waiters.filter((w) => counter.done >= w.n);
        counter.waiters = counter.waiters.filter((w) => counter.done < w.n);
        for (const w of due) w.resolve();
      },
    });
    return counter;
  }

  async waitFor(n: number, diagnose: () => string): Promise<void> {
    for (;;) {
      if (this.done >= n) return;
      const before = this.done;
      let timer: NodeJS.Timeout | undefined;
      const ok = await Promise.race([
        new Promise<boolean>((resolve) => this.waiters.push({ n, resolve: () => resolve(true) })),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), STALL_MS))),
      ]);
      clearTimeout(timer);
      if (ok) return;
      if (this.done === before) throw new Error(`no reply for ${STALL_MS / 1000} s (${this.done}/${n})\n${diagnose()}`);
    }
  }

  stop(): Promise<void> {
    return this.consumer.disconnect();
  }
}

export async function kafkaBench(): Promise<void> {
  console.log(`\ninferq kafka bench — node ${process.version}, 1 Kafka broker (KRaft), 1 worker, producer in this process, load average ${loadavg()[0]!.toFixed(2)}${QUICK ? ' (quick)' : ''}`);
  const small = randomMlp(SMALL, 11);
  const medium = randomMlp(MEDIUM, 11);
  const raw = { small: await rawOrt(buildMlp(small), SMALL[0]!), medium: await rawOrt(buildMlp(medium), MEDIUM[0]!) };
  const best = (m: Map<number, number>): [number, number] => {
    const v = Math.max(...m.values());
    return [v, [...m.entries()].find(([, r]) => r === v)![0]];
  };
  const dir = await mkdtemp(join(tmpdir(), 'inferq-bench-kafka-'));
  const repo = join(dir, 'models');
  await writeModel(repo, 'small', '1', small);
  await writeModel(repo, 'medium', '1', medium);
  process.once('exit', killAll);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let server: KafkaServer | undefined;
  let worker: Child | undefined;
  let producer: KafkaProducer | undefined;
  const counters: ReplyCounter[] = [];
  const rows: (string | number)[][] = [];
  const where: (string | number)[][] = [];
  const summary: (string | number)[][] = [];
  try {
    server = await startKafka();
    const brokerPid = server.pid();
    if (brokerPid !== undefined) watchServer(brokerPid);
    const kafka = new Kafka({ clientId: 'inferq-bench', brokers: server.brokers, logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({
      topics: ['bench', 'bench.replies', 'bench.warm'].map((topic) => ({ topic, numPartitions: 3, replicationFactor: 1 })),
      waitForLeaders: true,
    });
    await admin.disconnect();
    worker = await spawnNode(
      'inferq worker',
      ['workers/src/cli/main.ts', 'worker', '--transport', 'kafka', '--topic', 'bench', '--group', 'bench', '--brokers', server.brokers.join(','), '--model-repo', repo, '--models', 'small,medium'],
      'inferq worker: serving',
    );
    const w = worker;
    producer = new KafkaProducer({ brokers: server.brokers, topic: 'bench' });
    const p = producer;
    const pids = { producer: process.pid, worker: worker.pid, kafka: brokerPid };

    const drive = async (model: string, batch: TensorMap, jobs: number, replyTo: string): Promise<{ seconds: number; cpu: Record<string, number> }> => {
      const counter = await ReplyCounter.start(kafka, replyTo);
      counters.push(counter);
      const cpu0 = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid)]));
      const machine0 = machineBusySeconds();
      const start = performance.now();
      let sent = 0;
      const inflight = new Set<Promise<unknown>>();
      while (sent < jobs) {
        if (sent - counter.done >= WINDOW) {
          await counter.waitFor(sent - WINDOW + 1, w.tail);
          continue;
        }
        if (inflight.size >= 64) {
          await Promise.race(inflight);
          continue;
        }
        const e = p.enqueue(model, batch, { replyTo });
        inflight.add(e);
        void e.finally(() => inflight.delete(e));
        sent++;
      }
      await Promise.all(inflight);
      await counter.waitFor(jobs, w.tail);
      const seconds = (performance.now() - start) / 1000;
      const cpu: Record<string, number> = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid) - cpu0[k]!]));
      cpu['machine'] = machineBusySeconds() - machine0;
      if (counter.errors > 0) throw new Error(`${counter.errors} messages failed; first: ${counter.firstError}`);
      await counter.stop();
      return { seconds, cpu };
    };

    for (const [name, width, jobs, rawMap] of [
      ['small', SMALL[0]!, N.small, raw.small],
      ['medium', MEDIUM[0]!, N.medium, raw.medium],
    ] as const) {
      const batch = features(JOB_ROWS, width);
      await drive(name, batch, 20, 'bench.warm');
      const r = await drive(name, batch, jobs, `bench.replies`);
      const rate = (jobs * JOB_ROWS) / r.seconds;
      const [rawBest, rawAt] = best(rawMap);
      rows.push([name, fmt(jobs), rate, `${fmt(rawBest)} @${rawAt}`, (rate / rawBest).toFixed(2)]);
      const ours = ['producer', 'worker', 'kafka'].reduce((a, k) => a + r.cpu[k]!, 0);
      where.push([
        `${name}, 1,000-row messages`,
        r.seconds.toFixed(2),
        ...['producer', 'worker', 'kafka'].map((k) => `${r.cpu[k]!.toFixed(2)} s = ${fmt((r.cpu[k]! / jobs) * 1e6)} µs/msg`),
        `${((Math.max(0, r.cpu['machine']! - ours) / r.seconds) * 100).toFixed(0)} %`,
      ]);
      if (name === 'small') summary.push([`kafka small 1,000-row messages end to end (raw best ${fmt(rawBest)} @${rawAt})`, rate, (rate / rawBest).toFixed(2), '≥ 1,000,000 rows/s', rate >= 1e6 ? 'yes' : 'NO']);
      else summary.push([`kafka medium 1,000-row messages end to end (raw best ${fmt(rawBest)} @${rawAt})`, rate, (rate / rawBest).toFixed(2), '≥ 0.90 of raw', rate / rawBest >= 0.9 ? 'yes' : 'NO']);
    }
    table('1,000-row messages end to end (producer → Kafka → worker → reply topic), 3 partitions', ['model', 'messages', 'rows/s', 'raw best', 'vs raw'], rows);
    table('where the CPU goes (seconds over the run; per message)', ['run', 'wall s', 'producer (this process)', 'worker', 'kafka broker', 'other processes'], where);
    table('kafka summary', ['measure', 'rows/s', 'vs raw best', 'target', 'met'], summary);
  } finally {
    await Promise.allSettled(counters.map((c) => c.stop()));
    await producer?.close().catch(() => undefined);
    await worker?.stop();
    const pid = server?.pid();
    await server?.destroy();
    if (pid !== undefined) unwatchServer(pid);
    process.off('exit', killAll);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await kafkaBench();
