/**
 * Drain benchmarks: the worker alone. A queue (Redis) or topic (Kafka) is filled first with no
 * worker running; then ONE `inferq worker` process starts and is timed from its serving line to
 * the last reply. Per case:
 *
 *   rows/s of the drain, and its ratio to the same model instance run raw in the same layout
 *   (one session with the worker's session options, in a model thread, 2 runs in flight, batch 1024)
 *   worker CPU per row outside the model: process CPU minus the model threads' CPU (the ONNX model
 *   thread and onnxruntime's intra-op pool threads, found by bench/model-threads.mjs), per row
 *   producer CPU per job while filling; CPU of the server and of other processes during the drain
 *
 * Cases: small and medium MLP × (1,000-row jobs, 1-row jobs packed by the producer's 2 ms linger)
 * × (Redis, Kafka), BENCH_DRAIN_RUNS rounds (default 3), medians printed with every run.
 *
 *   node --conditions=inferq-source --import tsx bench/drain.ts     (or `npm run bench`)
 *
 * Env: BENCH_QUICK=1 for a short smoke run; BENCH_DRAIN_RUNS rounds; BENCH_DRAIN_ONLY=redis|kafka;
 * BENCH_DRAIN_CASES=small-1000,medium-1 (model-jobRows) to run only those cases; BENCH_DRAIN_PROF=<dir>
 * to write a V8 CPU profile of each worker's main thread there (`--cpu-prof`).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';
import type { Consumer } from 'kafkajs';
import * as ort from 'onnxruntime-node';
import { KafkaProducer, Producer, parseKafkaReplies } from '@inferq/producer';
import type { TensorMap } from '@inferq/producer';
import { OnnxRunner } from '../workers/src/runners/onnx/runner.js';
import { workerSessionFactory } from '../workers/src/runners/onnx/worker-session.js';
import { silentLogger } from '../workers/src/logging.js';
import { buildMlp, randomMlp } from '../examples/build/onnx-builder.js';
import { writeModel } from '../test/helpers/models.js';
import { startKafka } from '../test/infra/kafka.js';
import type { KafkaServer } from '../test/infra/kafka.js';
import { startRedis } from '../test/infra/redis.js';
import type { RedisServer } from '../test/infra/redis.js';
import { QUICK, fmt, table } from './common.js';
import { cpuSeconds, killAll, machineBusySeconds, onSignal, spawnNode, unwatchServer, watchServer } from './processes.js';
import { ReplyCounter, bounded, connectRedis, drive, features } from './redis.js';

const DIMS = { small: [64, 256, 128, 1], medium: [256, 1024, 1024, 512, 1] } as const;
type ModelName = keyof typeof DIMS;
interface Case {
  readonly model: ModelName;
  readonly jobRows: number;
  readonly jobs: number;
}
const CASES: readonly Case[] = [
  { model: 'small', jobRows: 1000, jobs: QUICK ? 100 : 1000 },
  { model: 'medium', jobRows: 1000, jobs: QUICK ? 10 : 100 },
  { model: 'small', jobRows: 1, jobs: QUICK ? 20_000 : 200_000 },
  { model: 'medium', jobRows: 1, jobs: QUICK ? 2_000 : 30_000 },
];
const RUNS = Number(process.env['BENCH_DRAIN_RUNS'] ?? (QUICK ? 1 : 3));
const ONLY = process.env['BENCH_DRAIN_ONLY'];
const ONLY_CASES = process.env['BENCH_DRAIN_CASES']?.split(',').map((s) => s.trim());
const PROF_DIR = process.env['BENCH_DRAIN_PROF'];
const selected = (c: Case): boolean => ONLY_CASES === undefined || ONLY_CASES.includes(`${c.model}-${c.jobRows}`);
const LINGER = { ms: 2 };
/** enqueue() calls in flight while filling: 1-row calls need many for the linger to pack them. */
const parallelFor = (c: Case): number => (c.jobRows === 1 ? 1000 : 64);
const RAW_BATCH = 1024;
const RAW_SECONDS = QUICK ? 0.5 : 2;
const STALL_MS = 30_000;
const PROBE = new URL('./model-threads.mjs', import.meta.url).href;

const CLK_TCK = 100;
/** CPU seconds of the listed threads of a process (threads that are gone count 0). */
function threadsCpu(pid: number, tids: ReadonlySet<string>): number {
  let ticks = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    if (!tids.has(tid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      // the thread ended between readdir and read: it ran no model work in this drain
    }
  }
  return ticks / CLK_TCK;
}

/** Kernel-mode CPU seconds of a process (all its threads): socket writes on loopback charge the receiver's work to the writer. */
function sysSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[12]) / CLK_TCK;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** Raw: one session with the worker's own session options, in a model thread as the worker runs it, 2 runs in flight. */
async function rawSameLayout(model: Uint8Array, width: number): Promise<{ rate: number; cpuPerRow: number }> {
  const options = new OnnxRunner({ model, source: 'bench', name: 'raw', version: '1', logger: silentLogger() }).sessionOptions({ kind: 'cpu' });
  const session = await workerSessionFactory(model, options);
  try {
    const x = new ort.Tensor('float32', Float32Array.from({ length: RAW_BATCH * width }, (_, i) => Math.sin(i)), [RAW_BATCH, width]);
    for (let i = 0; i < 3; i++) await session.run({ features: x });
    let rows = 0;
    const cpu0 = cpuSeconds(process.pid);
    const start = performance.now();
    const loop = async (): Promise<void> => {
      while (performance.now() - start < RAW_SECONDS * 1000) {
        await session.run({ features: x });
        rows += RAW_BATCH;
      }
    };
    await Promise.all([loop(), loop()]);
    const seconds = (performance.now() - start) / 1000;
    return { rate: rows / seconds, cpuPerRow: (cpuSeconds(process.pid) - cpu0) / rows };
  } finally {
    await session.release();
  }
}

/** Counts replies (packs split) on a Kafka reply topic. */
class KafkaReplies {
  done = 0;
  errors = 0;
  private constructor(private readonly consumer: Consumer) {}
  static async start(kafka: Kafka, topic: string): Promise<KafkaReplies> {
    const consumer = kafka.consumer({ groupId: `drain-replies-${topic}`, maxWaitTimeInMs: 20, maxBytesPerPartition: 16 * 1024 * 1024 });
    const r = new KafkaReplies(consumer);
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) for (const reply of parseKafkaReplies(m)) {
          if (reply.ok) r.done++;
          else r.errors++;
        }
      },
    });
    return r;
  }
  async waitFor(n: number, diagnose: () => string): Promise<void> {
    let last = this.done;
    let since = performance.now();
    while (this.done < n && this.errors === 0) {
      await new Promise((resolve) => setTimeout(resolve, 5)); // a poll of a counter the consumer loop advances
      if (this.done !== last) [last, since] = [this.done, performance.now()];
      else if (performance.now() - since > STALL_MS) throw new Error(`no Kafka reply for ${STALL_MS / 1000} s (${this.done}/${n})\n${diagnose()}`);
    }
  }
  stop(): Promise<void> {
    return this.consumer.disconnect();
  }
}

interface Measure {
  readonly rate: number;
  readonly vsRaw: number;
  readonly nonModelUsPerRow: number;
  readonly sysUsPerRow: number;
  readonly mainUsPerRow: number;
  readonly modelUsPerRow: number;
  readonly rawUsPerRow: number;
  readonly producerUsPerJob: number;
  readonly serverUsPerRow: number;
  readonly othersPct: number;
  readonly seconds: number;
  readonly load: number;
}

/** What a transport gives the drain: a filled queue and a worker command line serving it. */
interface Transport {
  readonly name: 'redis' | 'kafka';
  readonly serverPid: number | undefined;
  /** Enqueues c.jobs jobs with replies to a fresh reply channel; returns a counter of the replies. */
  fill(c: Case, queue: string, batch: TensorMap): Promise<{ producerCpu: number; waitFor(n: number, diagnose: () => string): Promise<void>; errors(): number; close(): Promise<void> }>;
  workerArgs(queue: string, repo: string, model: string): string[];
}

async function drainOnce(t: Transport, c: Case, repo: string, dir: string, raw: { rate: number; cpuPerRow: number }): Promise<Measure> {
  const queue = `drain-${c.model}-${c.jobRows}-${randomBytes(4).toString('hex')}`;
  const batch = features(c.jobRows, DIMS[c.model][0]);
  const replies = await t.fill(c, queue, batch);
  const threadsFile = join(dir, `${queue}.threads`);
  const load = loadavg()[0]!;
  process.env['INFERQ_BENCH_THREADS'] = threadsFile;
  let worker;
  try {
    worker = await spawnNode('inferq worker', ['--import', PROBE, ...(PROF_DIR === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${PROF_DIR}`]), 'workers/src/cli/main.ts', 'worker', ...t.workerArgs(queue, repo, c.model)], 'inferq worker: serving');
  } finally {
    delete process.env['INFERQ_BENCH_THREADS'];
  }
  try {
    const pid = worker.pid!;
    const tids = new Set(readFileSync(threadsFile, 'utf8').trim().split('\n').map((l) => l.split(' ')[1]!));
    const main = new Set([String(pid)]);
    const at = (): { proc: number; sys: number; main: number; model: number; server: number; bench: number; machine: number } => ({
      proc: cpuSeconds(pid),
      sys: sysSeconds(pid),
      main: threadsCpu(pid, main),
      model: threadsCpu(pid, tids),
      server: cpuSeconds(t.serverPid),
      bench: cpuSeconds(process.pid),
      machine: machineBusySeconds(),
    });
    const a = at();
    const start = performance.now();
    await replies.waitFor(c.jobs, worker.tail);
    const seconds = (performance.now() - start) / 1000;
    const b = at();
    if (replies.errors() > 0) throw new Error(`${t.name} ${caseName(c)}: ${replies.errors()} jobs failed\n${worker.tail()}`);
    const rows = c.jobs * c.jobRows;
    const proc = b.proc - a.proc;
    const model = b.model - a.model;
    const ours = proc + (b.server - a.server) + (b.bench - a.bench);
    const rate = rows / seconds;
    return {
      rate,
      vsRaw: rate / raw.rate,
      nonModelUsPerRow: ((proc - model) / rows) * 1e6,
      sysUsPerRow: ((b.sys - a.sys) / rows) * 1e6,
      mainUsPerRow: ((b.main - a.main) / rows) * 1e6,
      modelUsPerRow: (model / rows) * 1e6,
      rawUsPerRow: raw.cpuPerRow * 1e6,
      producerUsPerJob: (replies.producerCpu / c.jobs) * 1e6,
      serverUsPerRow: ((b.server - a.server) / rows) * 1e6,
      othersPct: (Math.max(0, b.machine - a.machine - ours) / seconds) * 100,
      seconds,
      load,
    };
  } finally {
    await replies.close();
    await worker.stop();
  }
}

async function redisTransport(): Promise<{ t: Transport; stop(): Promise<void> }> {
  const server: RedisServer = await startRedis();
  const admin = connectRedis(server.url);
  const pid = Number(/process_id:(\d+)/.exec(await admin.info('server'))?.[1]);
  watchServer(pid);
  const t: Transport = {
    name: 'redis',
    serverPid: pid,
    async fill(c, queue, batch) {
      const p = new Producer({ redis: server.url, queue, payload: c.jobRows === 1 ? 'auto' : 'key', ...(c.jobRows === 1 ? { linger: LINGER } : {}) });
      const counter = new ReplyCounter(server.url, `drain:replies:${queue}`, true);
      try {
        const r = await drive(c.jobs, () => p.enqueue(c.model, batch, { replyTo: counter.stream }), undefined, { producer: process.pid }, () => '', parallelFor(c));
        return { producerCpu: r.cpu['producer']!, waitFor: (n, d) => counter.waitFor(n, d), errors: () => counter.errors, close: () => counter.close() };
      } finally {
        await bounded(p.close(), 5000);
      }
    },
    workerArgs: (queue, repo, model) => ['--transport', 'redis', '--queue', queue, '--redis', server.url, '--model-repo', repo, '--models', model, '--concurrency', '256'],
  };
  return {
    t,
    stop: async () => {
      admin.disconnect();
      await server.stop().catch(() => undefined);
      unwatchServer(pid);
    },
  };
}

async function kafkaTransport(): Promise<{ t: Transport; stop(): Promise<void> }> {
  const server: KafkaServer = await startKafka();
  const pid = server.pid();
  if (pid !== undefined) watchServer(pid);
  const kafka = new Kafka({ clientId: 'inferq-drain', brokers: server.brokers, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const t: Transport = {
    name: 'kafka',
    serverPid: pid,
    async fill(c, queue, batch) {
      const replyTo = `${queue}.replies`;
      await admin.createTopics({ topics: [queue, replyTo].map((topic) => ({ topic, numPartitions: 3, replicationFactor: 1 })), waitForLeaders: true });
      const p = new KafkaProducer({ brokers: server.brokers, topic: queue, ...(c.jobRows === 1 ? { linger: LINGER } : {}) });
      try {
        const r = await drive(c.jobs, () => p.enqueue(c.model, batch, { replyTo }), undefined, { producer: process.pid }, () => '', parallelFor(c));
        const counter = await KafkaReplies.start(kafka, replyTo);
        return {
          producerCpu: r.cpu['producer']!,
          waitFor: (n, d) => counter.waitFor(n, d),
          errors: () => counter.errors,
          close: async () => {
            await counter.stop();
            await admin.deleteTopics({ topics: [queue, replyTo] }).catch(() => undefined);
          },
        };
      } finally {
        await p.close();
      }
    },
    workerArgs: (queue, repo, model) => ['--transport', 'kafka', '--topic', queue, '--group', queue, '--brokers', server.brokers.join(','), '--model-repo', repo, '--models', model],
  };
  return {
    t,
    stop: async () => {
      await admin.disconnect();
      await server.destroy();
      if (pid !== undefined) unwatchServer(pid);
    },
  };
}

const caseName = (c: Case): string => `${c.model}, ${c.jobRows === 1 ? '1-row jobs, linger 2 ms' : '1,000-row jobs'}`;

/** Runs every case RUNS times on one transport, raw re-measured before each drain. */
async function runTransport(t: Transport, repo: string, dir: string, models: Record<ModelName, Uint8Array>): Promise<Map<Case, Measure[]>> {
  const cases = CASES.filter(selected);
  const results = new Map<Case, Measure[]>(cases.map((c) => [c, []]));
  for (let run = 1; run <= RUNS; run++) {
    for (const c of cases) {
      const raw = await rawSameLayout(models[c.model], DIMS[c.model][0]);
      const m = await drainOnce(t, c, repo, dir, raw);
      results.get(c)!.push(m);
      console.log(
        `  ${t.name} run ${run}, ${caseName(c)}: ${fmt(m.rate)} rows/s (${m.vsRaw.toFixed(2)} of raw ${fmt(raw.rate)}), worker outside the model ${m.nonModelUsPerRow.toFixed(2)} µs/row (main thread ${m.mainUsPerRow.toFixed(2)}, kernel ${m.sysUsPerRow.toFixed(2)}), ` +
          `model threads ${m.modelUsPerRow.toFixed(2)} µs/row (raw ${m.rawUsPerRow.toFixed(2)}), producer ${fmt(m.producerUsPerJob)} µs/job, ${m.seconds.toFixed(1)} s, others ${m.othersPct.toFixed(0)} %, load ${m.load.toFixed(2)}`,
      );
    }
  }
  return results;
}

function report(t: Transport['name'], results: Map<Case, Measure[]>): void {
  const med = (ms: Measure[], k: keyof Measure): number => median(ms.map((m) => m[k]));
  const range = (ms: Measure[], k: keyof Measure, digits: number): string => `${Math.min(...ms.map((m) => m[k])).toFixed(digits)}–${Math.max(...ms.map((m) => m[k])).toFixed(digits)}`;
  table(
    `${t} drain, medians of ${RUNS} run(s) (ranges): one worker, queue filled first, timed from its serving line to the last reply`,
    ['case', 'rows/s', 'vs raw', 'worker µs/row outside model', 'of which main thread', 'of which kernel', 'model threads µs/row', 'raw µs/row', 'producer µs/job (fill)', `${t} µs/row`, 'others %', 'load'],
    [...results].map(([c, ms]) => [
      caseName(c),
      med(ms, 'rate'),
      `${med(ms, 'vsRaw').toFixed(2)} (${range(ms, 'vsRaw', 2)})`,
      `${med(ms, 'nonModelUsPerRow').toFixed(2)} (${range(ms, 'nonModelUsPerRow', 2)})`,
      med(ms, 'mainUsPerRow').toFixed(2),
      med(ms, 'sysUsPerRow').toFixed(2),
      med(ms, 'modelUsPerRow').toFixed(2),
      med(ms, 'rawUsPerRow').toFixed(2),
      fmt(med(ms, 'producerUsPerJob')),
      med(ms, 'serverUsPerRow').toFixed(2),
      range(ms, 'othersPct', 0),
      range(ms, 'load', 2),
    ]),
  );
}

export async function drainBench(): Promise<void> {
  console.log(`\ninferq drain bench — node ${process.version}, ${RUNS} run(s) per case, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}${QUICK ? ' (quick)' : ''}`);
  const dir = await mkdtemp(join(tmpdir(), 'inferq-bench-drain-'));
  const repo = join(dir, 'models');
  const specs = { small: randomMlp([...DIMS.small], 11), medium: randomMlp([...DIMS.medium], 11) };
  await writeModel(repo, 'small', '1', specs.small);
  await writeModel(repo, 'medium', '1', specs.medium);
  const models = { small: buildMlp(specs.small), medium: buildMlp(specs.medium) };
  process.once('exit', killAll);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    for (const start of [redisTransport, kafkaTransport]) {
      if (ONLY !== undefined && !start.name.startsWith(ONLY)) continue;
      const { t, stop } = await start();
      try {
        report(t.name, await runTransport(t, repo, dir, models));
      } finally {
        await stop();
      }
    }
  } finally {
    killAll();
    process.off('exit', killAll);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await drainBench();
