/**
 * The Kafka paths alone, for profiling: the SDK's KafkaProducer sending 1,000-row jobs of the
 * small MLP (64 float32 features: 256 KB messages) to a fresh 3-partition topic, then ONE
 * `inferq worker` draining it. Per run it prints the producer's CPU per message (this process,
 * nothing else running in it then) and the worker's CPU per row outside the model threads
 * (bench/model-threads.mjs), as bench/drain.ts counts them; with PROFILE_DIR it also writes a CPU
 * profile of each window (the producer's, in process; the worker's main thread, through
 * bench/profile-window.mjs) for bench/profile-summary.mjs.
 *
 *   node --conditions=inferq-source --import tsx bench/kafka-profile.ts
 *
 * Env: KAFKA_BROKERS (default: a broker of its own from test/infra), PROFILE_JOBS (default 1000),
 * PROFILE_RUNS (default 3), PROFILE_DIR (write profiles there), PROFILE_ONLY=produce (no worker),
 * PROFILE_ROWS rows per job (default 1000).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import type { Admin } from 'kafkajs';
import { KafkaProducer, parseKafkaReplies } from '@inferq/producer';
import { randomMlp } from '../examples/build/onnx-builder.js';
import { writeModel } from '../test/helpers/models.js';
import { startKafka } from '../test/infra/kafka.js';
import type { KafkaServer } from '../test/infra/kafka.js';
import { killAll, onSignal, spawnNode } from './processes.js';
import { profiled } from './profile-inprocess.js';
import { features } from './redis.js';

const JOBS = Number(process.env['PROFILE_JOBS'] ?? 1000);
const RUNS = Number(process.env['PROFILE_RUNS'] ?? 3);
const ROWS = Number(process.env['PROFILE_ROWS'] ?? 1000);
const DIR = process.env['PROFILE_DIR'] === undefined ? undefined : resolve(process.env['PROFILE_DIR']);
const ONLY = process.env['PROFILE_ONLY'];
const PARALLEL = 64;
const SMALL = [64, 256, 128, 1];
const STALL_MS = 30_000;


const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface ProduceResult {
  /** CPU ms per message of this process, and of it: main thread user and system, other threads */
  readonly ms: number;
  readonly mainUser: number;
  readonly mainSys: number;
  readonly others: number;
}

/** Sends JOBS jobs, PARALLEL in flight; returns this process's CPU per message over the sends. */
async function produce(brokers: string[], topic: string, profile: string | undefined): Promise<ProduceResult> {
  const p = new KafkaProducer({ brokers, topic });
  const batch = features(ROWS, SMALL[0]!);
  try {
    for (let i = 0; i < 3; i++) await p.enqueue('small', batch, { replyTo: `${topic}.replies` }); // connect and warm up (counted as jobs)
    return await profiled(profile, async () => {
      const a = cpuSplit(process.pid, new Set());
      let sent = 3;
      const inflight = new Set<Promise<unknown>>();
      while (sent < JOBS) {
        while (inflight.size >= PARALLEL) await Promise.race(inflight);
        const e = p.enqueue('small', batch, { replyTo: `${topic}.replies` });
        inflight.add(e);
        void e.finally(() => inflight.delete(e)).catch(() => undefined);
        sent++;
      }
      await Promise.all(inflight);
      const b = cpuSplit(process.pid, new Set());
      const ms = (s: number): number => (s / (JOBS - 3)) * 1e3;
      const [all, mainUser, mainSys] = [ms(b.user + b.sys - a.user - a.sys), ms(b.mainUser - a.mainUser), ms(b.mainSys - a.mainSys)];
      return { ms: all, mainUser, mainSys, others: all - mainUser - mainSys };
    });
  } finally {
    await p.close();
  }
}

/** Reads the reply topic and counts the jobs answered. */
async function countReplies(kafka: Kafka, topic: string): Promise<{ done: () => number; stop: () => Promise<void> }> {
  let done = 0;
  const consumer = kafka.consumer({ groupId: `profile-replies-${topic}`, maxWaitTimeInMs: 20, maxBytesPerPartition: 16 * 1024 * 1024 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      for (const m of batch.messages) for (const r of parseKafkaReplies(m)) if (r.ok) done++;
    },
  });
  return { done: () => done, stop: () => consumer.disconnect() };
}

interface Split {
  /** user and system CPU seconds of the whole process (threads that ended included) */
  readonly user: number;
  readonly sys: number;
  /** of the main thread */
  readonly mainUser: number;
  readonly mainSys: number;
  /** of the model threads (user + system) */
  readonly model: number;
}

/** The process's CPU seconds split into main thread, model threads and the rest (GC helpers, libuv's pool). */
function cpuSplit(pid: number, modelTids: ReadonlySet<string>): Split {
  const read = (path: string): [number, number] => {
    const stat = readFileSync(path, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return [Number(f[11]) / 100, Number(f[12]) / 100];
  };
  const [user, sys] = read(`/proc/${pid}/stat`);
  const [mainUser, mainSys] = read(`/proc/${pid}/task/${pid}/stat`);
  let model = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    if (!modelTids.has(tid)) continue;
    try {
      const [u, s] = read(`/proc/${pid}/task/${tid}/stat`);
      model += u + s;
    } catch {
      // the thread ended between readdir and read: it ran no model work in this drain
    }
  }
  return { user, sys, mainUser, mainSys, model };
}

async function waitFile(file: string): Promise<void> {
  for (let i = 0; i < 600 && !existsSync(file); i++) await sleep(50); // polls for the profile the worker writes
}

/** One worker drains the topic; returns its CPU µs per row outside the model threads. */
interface DrainResult {
  readonly usPerRow: number;
  readonly modelUsPerRow: number;
  readonly seconds: number;
  /** µs per row outside the model: main thread user and system, other threads (GC helpers, libuv) */
  readonly mainUser: number;
  readonly mainSys: number;
  readonly others: number;
}

async function drain(kafka: Kafka, brokers: string[], topic: string, repo: string, dir: string, profile: string | undefined): Promise<DrainResult> {
  const replies = await countReplies(kafka, `${topic}.replies`);
  const threadsFile = join(dir, `${topic}.threads`);
  const env = { INFERQ_BENCH_THREADS: threadsFile, INFERQ_BENCH_PROFILE: profile ?? '' };
  Object.assign(process.env, env);
  let worker;
  try {
    worker = await spawnNode(
      'inferq worker',
      ['--import', './bench/model-threads.mjs', '--import', './bench/profile-window.mjs', 'workers/src/cli/main.ts', 'worker', '--transport', 'kafka', '--topic', topic, '--group', topic, '--brokers', brokers.join(','), '--model-repo', repo, '--models', 'small'],
      'inferq worker: serving',
    );
  } finally {
    for (const k of Object.keys(env)) delete process.env[k];
  }
  try {
    const pid = worker.pid!;
    if (profile !== undefined) process.kill(pid, 'SIGUSR2');
    const tids = new Set(readFileSync(threadsFile, 'utf8').trim().split('\n').map((l) => l.split(' ')[1]!));
    const a = cpuSplit(pid, tids);
    const start = performance.now();
    const rows = JOBS * ROWS;
    let last = 0;
    let since = performance.now();
    while (replies.done() < JOBS) {
      await sleep(5); // a poll of a counter the reply consumer advances
      if (replies.done() !== last) [last, since] = [replies.done(), performance.now()];
      else if (performance.now() - since > STALL_MS) throw new Error(`no reply for ${STALL_MS / 1000} s (${replies.done()}/${JOBS})\n${worker.tail()}`);
    }
    const seconds = (performance.now() - start) / 1000;
    const b = cpuSplit(pid, tids);
    if (profile !== undefined) {
      process.kill(pid, 'SIGUSR2');
      await waitFile(`${profile}.done`);
    }
    const us = (s: number): number => (s / rows) * 1e6;
    const outside = b.user + b.sys - (a.user + a.sys) - (b.model - a.model);
    const main = { user: b.mainUser - a.mainUser, sys: b.mainSys - a.mainSys };
    return { usPerRow: us(outside), modelUsPerRow: us(b.model - a.model), seconds, mainUser: us(main.user), mainSys: us(main.sys), others: us(outside - main.user - main.sys) };
  } finally {
    await replies.stop();
    await worker.stop();
  }
}

/** Creates the topics; a broker slow under load may answer "unknown topic" while the leaders are elected, so it tries again. */
async function createTopics(admin: Admin, topics: string[]): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await admin.createTopics({ topics: topics.map((topic) => ({ topic, numPartitions: 3, replicationFactor: 1 })), waitForLeaders: true });
      return;
    } catch (err) {
      if (attempt >= 5) throw err;
      await sleep(500);
    }
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

async function main(): Promise<void> {
  process.once('exit', killAll);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let server: KafkaServer | undefined;
  const brokers = process.env['KAFKA_BROKERS']?.split(',') ?? (server = await startKafka()).brokers;
  const dir = await mkdtemp(join(tmpdir(), 'inferq-kafka-profile-'));
  if (DIR !== undefined) await mkdir(DIR, { recursive: true });
  const repo = join(dir, 'models');
  await writeModel(repo, 'small', '1', randomMlp(SMALL, 11));
  const kafka = new Kafka({ clientId: 'inferq-kafka-profile', brokers, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  console.log(`kafka profile — node ${process.version}, ${JOBS} jobs × ${ROWS} rows per run, ${RUNS} run(s), load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  const prod: number[] = [];
  const work: number[] = [];
  try {
    for (let run = 1; run <= RUNS; run++) {
      const topic = `profile-${randomBytes(4).toString('hex')}`;
      await createTopics(admin, [topic, `${topic}.replies`]);
      try {
        const pr = await produce(brokers, topic, DIR === undefined ? undefined : join(DIR, `produce-${run}.cpuprofile`));
        prod.push(pr.ms);
        let line = `run ${run}: producer ${pr.ms.toFixed(3)} ms CPU/message (main thread user ${pr.mainUser.toFixed(2)} + sys ${pr.mainSys.toFixed(2)}, other threads ${pr.others.toFixed(2)})`;
        if (ONLY !== 'produce') {
          const d = await drain(kafka, brokers, topic, repo, dir, DIR === undefined ? undefined : join(DIR, `worker-${run}.cpuprofile`));
          work.push(d.usPerRow);
          line +=
            `; worker outside the model ${d.usPerRow.toFixed(2)} µs/row (main thread user ${d.mainUser.toFixed(2)} + sys ${d.mainSys.toFixed(2)}, other threads ${d.others.toFixed(2)}; ` +
            `model threads ${d.modelUsPerRow.toFixed(2)}), drain ${d.seconds.toFixed(1)} s`;
        }
        console.log(`${line}, load ${loadavg()[0]!.toFixed(2)}`);
      } finally {
        await admin.deleteTopics({ topics: [topic, `${topic}.replies`] }).catch(() => undefined);
      }
    }
    console.log(`median: producer ${median(prod).toFixed(3)} ms/message${work.length > 0 ? `; worker outside the model ${median(work).toFixed(2)} µs/row` : ''}`);
  } finally {
    await admin.disconnect();
    await server?.destroy();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
