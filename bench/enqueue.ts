/**
 * The Redis SDK's enqueue, two ways, in the same run against the same redis-server and ONE
 * `inferq worker` process (`--concurrency 256`):
 *
 *   MULTI      the payload key (SET NX EX) and the BullMQ job in one MULTI/EXEC, the job written
 *              with BullMQ's internals (Job.addJob on the transaction): the SDK's path before
 *              Queue.add, kept here as the reference (MultiProducer below)
 *   Queue.add  the SDK as it is (Producer): SET NX EX of a key of the enqueue's own, then Queue.add;
 *              with a caller's jobId, a look at the job that was added (a duplicate's key is deleted)
 *
 * Cases: 1,000-row × 64 float32 jobs (256 KB, payload "key"), the same with a caller's jobId,
 * 1-row jobs (payload "auto": inline), and 1-row jobs with the producer's linger (2 ms: packs of up to
 * 1,000 jobs, each pack under a payload key). Each case runs enqueue-only (a queue no worker
 * serves) and end to end (replies read from the reply stream), REPS times, the two paths
 * alternating; the tables give medians and every run.
 *
 *   node --conditions=inferq-source --import tsx bench/enqueue.ts     (or within `npm run bench`)
 *
 * Env: BENCH_QUICK=1 for a short smoke run; BENCH_ENQUEUE_REPS runs per cell (default 5).
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Job, Queue } from 'bullmq';
import type { JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { DEFAULT_PREFIX, InferqError, encodeEnvelope, redisKeys } from '@inferq/shared';
import type { JobData, RedisKeys, TensorMap } from '@inferq/shared';
import { Producer, toTensors } from '@inferq/producer';
import { handled, within } from '../producer/src/connection.js';
import { Packer } from '../producer/src/linger.js';
import type { LingerOptions } from '../producer/src/linger.js';
import { RedisLink, isReplyError, openRedis } from '../producer/src/redis-link.js';
import { randomMlp } from '../examples/build/onnx-builder.js';
import { writeModel } from '../test/helpers/models.js';
import { startRedis } from '../test/infra/redis.js';
import type { RedisServer } from '../test/infra/redis.js';
import { QUICK, fmt, table } from './common.js';
import { killAll, onSignal, spawnNode, unwatchServer, watchServer } from './processes.js';
import type { Child } from './processes.js';
import { ReplyCounter, bounded, connectRedis, dropQueueKeys, drive, features } from './redis.js';
import type { DriveResult } from './redis.js';

const REPS = Number(process.env['BENCH_ENQUEUE_REPS'] ?? (QUICK ? 1 : 5));
const CONNECT_MS = 5000;
const SMALL = [64, 256, 128, 1];

/** The enqueue() both paths offer the bench. */
interface Enqueuer {
  enqueue(model: string, batch: TensorMap, options: { replyTo?: string; jobId?: string }): Promise<string>;
  close(): Promise<void>;
}

/**
 * The SDK's enqueue before Queue.add, as Producer had it (same connection rules, envelope and
 * linger packs): payload key and job in one MULTI, through BullMQ's Job.addJob on the transaction.
 */
export class MultiProducer implements Enqueuer {
  private readonly keys: RedisKeys;
  private readonly link: RedisLink;
  private readonly queue: Queue;
  private readonly packer: Packer | undefined;

  constructor(
    url: string,
    private readonly queueName: string,
    private readonly payload: 'auto' | 'key',
    linger: LingerOptions | undefined,
  ) {
    this.keys = redisKeys(DEFAULT_PREFIX, queueName);
    this.link = new RedisLink(openRedis(url, CONNECT_MS), 'main', CONNECT_MS, undefined);
    this.queue = new Queue(queueName, { connection: this.link.client, prefix: DEFAULT_PREFIX, skipVersionCheck: true });
    this.queue.on('error', (err: Error) => this.link.report(err, 'BullMQ'));
    if (linger !== undefined) this.packer = new Packer(linger, (id, meta, payload) => this.addJob(id, meta, payload));
  }

  enqueue(model: string, batch: TensorMap, options: { replyTo?: string; jobId?: string }): Promise<string> {
    const id = options.jobId ?? randomUUID();
    const tensors = toTensors(batch);
    const packed = options.jobId === undefined ? this.packer?.offer(id, model, options, tensors) : undefined;
    if (packed !== undefined) return handled(packed);
    const envelope = encodeEnvelope({ id, model, replyTo: options.replyTo }, tensors);
    const rows = Object.values(tensors)[0]?.shape[0] ?? 0;
    return handled(this.addJob(id, { v: 1, model, rows, bytes: envelope.byteLength }, envelope).then(() => id));
  }

  private addJob(id: string, meta: Omit<JobData, 'key' | 'b64'>, payload: Uint8Array): Promise<void> {
    return this.link.run(() => this.writeJob(id, meta, payload));
  }

  private async writeJob(id: string, meta: Omit<JobData, 'key' | 'b64'>, payload: Uint8Array): Promise<void> {
    const inline = this.payload === 'auto' && payload.byteLength <= 8192;
    const data: JobData = inline ? { ...meta, b64: Buffer.from(payload).toString('base64') } : { ...meta, key: this.keys.payload(id) };
    const opts: JobsOptions = { jobId: id, attempts: 3, backoff: { type: 'exponential', delay: 200 }, removeOnComplete: true, removeOnFail: { count: 10_000 } };
    const job = new Job(this.queue, meta.model, data, opts, id);
    const client = await within(this.queue.backend.client, CONNECT_MS, () => this.link.error('BullMQ did not take the connection'));
    const multi = (client as unknown as Redis).multi();
    if (!inline) multi.set(this.keys.payload(id), Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), 'EX', 7 * 86_400, 'NX');
    await job.addJob(multi as unknown as Parameters<Job['addJob']>[0]);
    const results = await multi.exec();
    const failed = results?.find(([err]) => err !== null)?.[0];
    if (failed !== undefined && failed !== null && !isReplyError(failed)) throw failed;
    if (results === null || failed !== undefined) throw new InferqError(`enqueue of job ${id} to queue "${this.queueName}" failed: ${failed?.message ?? 'transaction aborted'}`, { jobId: id, retriable: true });
  }

  async close(): Promise<void> {
    await this.packer?.flush();
    await bounded(this.queue.close(), CONNECT_MS);
    await this.link.close();
  }
}

interface Case {
  readonly name: string;
  readonly batch: TensorMap;
  readonly payload: 'auto' | 'key';
  readonly linger?: LingerOptions;
  /** Jobs per run. */
  readonly jobs: number;
  /** enqueue() calls in flight, and jobs unanswered at most (end to end). */
  readonly parallel: number;
  readonly window: number;
  readonly jobIds?: boolean;
}

const PATHS = ['MULTI', 'Queue.add'] as const;
type Path = (typeof PATHS)[number];

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** What a case's runs need: the producers, reply streams and servers of the bench. */
interface Rig {
  readonly admin: Redis;
  readonly pids: Record<string, number | undefined>;
  diagnose(): string;
  /** An enqueuer of `path` on queue `q` for case `c`. */
  make(path: Path, c: Case, q: string): Enqueuer;
  /** A reply stream counter (close it with done() after its run: an idle XREAD loop adds load). */
  counter(name: string): ReplyCounter;
  done(c: ReplyCounter): Promise<void>;
}

/** The runs of one case on each path: enqueue only and end to end, REPS times, the paths alternating. */
async function measure(rig: Rig, c: Case, queue: string): Promise<Record<Path, { enq: DriveResult[]; e2e: DriveResult[] }>> {
  const idleQueue = (path: Path): string => `${queue}-idle-${path === 'MULTI' ? 'multi' : 'add'}`;
  const idle = Object.fromEntries(PATHS.map((p) => [p, rig.make(p, c, idleQueue(p))])) as Record<Path, Enqueuer>;
  const served = Object.fromEntries(PATHS.map((p) => [p, rig.make(p, c, queue)])) as Record<Path, Enqueuer>;
  let run = 0;
  const send = (p: Enqueuer, replyTo?: string) => (i: number): Promise<string> =>
    p.enqueue('small', c.batch, { ...(replyTo === undefined ? {} : { replyTo }), ...(c.jobIds === true ? { jobId: `j-${run}-${i}` } : {}) });
  const runs = (counter: ReplyCounter | undefined, jobs: number, pids: Record<string, number | undefined>, p: Enqueuer): Promise<DriveResult> =>
    drive(jobs, send(p, counter?.stream), counter, pids, () => rig.diagnose(), c.parallel, c.window);
  const out: Record<Path, { enq: DriveResult[]; e2e: DriveResult[] }> = { MULTI: { enq: [], e2e: [] }, 'Queue.add': { enq: [], e2e: [] } };
  for (let rep = -1; rep < REPS; rep++) {
    // Run -1 warms up (connections, BullMQ's scripts, the JIT, the worker's model) and is not counted.
    for (const path of rep % 2 === 0 ? [...PATHS].reverse() : PATHS) {
      run++;
      const jobs = rep < 0 ? Math.min(c.jobs, 200) : c.jobs;
      const pids = rep < 0 ? {} : rig.pids;
      const enq = await runs(undefined, jobs, pids, idle[path]);
      await dropQueueKeys(rig.admin, idleQueue(path));
      const replies = rig.counter(`${c.name.replace(/\W+/g, '-')}-${run}`);
      const e2e = await runs(replies, jobs, pids, served[path]);
      await rig.done(replies);
      if (rep >= 0) {
        out[path].enq.push(enq);
        out[path].e2e.push(e2e);
      }
    }
  }
  return out;
}

/** The tables: jobs/s (medians and every run), CPU per job, and the ratios. */
function report(results: readonly [Case, Record<Path, { enq: DriveResult[]; e2e: DriveResult[] }>][]): void {
  const rows: (string | number)[][] = [];
  const cpuRows: (string | number)[][] = [];
  const summary: (string | number)[][] = [];
  const rate = (rs: DriveResult[], end: boolean): number[] => rs.map((r) => r.jobs / (end ? r.seconds : r.enqueueSeconds));
  for (const [c, r] of results) {
    for (const path of PATHS) {
      const e = rate(r[path].enq, false);
      const t = rate(r[path].e2e, true);
      const others = [...r[path].enq, ...r[path].e2e].map((d) => Math.max(0, (d.cpu['machine']! - d.cpu['producer']! - d.cpu['worker']! - d.cpu['redis']!) / d.seconds) * 100);
      rows.push([c.name, path, median(e), median(t), e.map(fmt).join(' '), t.map(fmt).join(' '), `${median(others).toFixed(0)} % / ${Math.max(...others).toFixed(0)} %`]);
      const perJob = (k: string): string => fmt(median(r[path].enq.map((d) => d.cpu[k]! / d.jobs)) * 1e6);
      cpuRows.push([c.name, path, perJob('producer'), perJob('redis')]);
    }
    const ratio = (end: boolean): string => (median(rate(r['Queue.add'][end ? 'e2e' : 'enq'], end)) / median(rate(r.MULTI[end ? 'e2e' : 'enq'], end))).toFixed(2);
    summary.push([c.name, ratio(false), ratio(true)]);
  }
  table('enqueue, MULTI (before) vs Queue.add (now), jobs/s: median, then every run', ['case', 'path', 'enqueue only', 'end to end', 'enqueue-only runs', 'end-to-end runs', 'others: median / worst'], rows);
  console.log('  ("others": CPU the rest of the machine used during a run, in % of one core: above ~25 % the figures are low)');
  table('CPU per job, enqueue only (median µs): the bench process (producer) and redis-server', ['case', 'path', 'producer µs/job', 'redis µs/job'], cpuRows);
  table('Queue.add / MULTI (medians; > 1: Queue.add is faster)', ['case', 'enqueue only', 'end to end'], summary);
}

export async function enqueueBench(): Promise<void> {
  console.log(`\ninferq enqueue bench (Redis SDK: MULTI vs Queue.add) — node ${process.version}, ${REPS} run(s) per cell, load average ${loadavg()[0]!.toFixed(2)}${QUICK ? ' (quick)' : ''}`);
  const t0 = performance.now();
  const dir = await mkdtemp(join(tmpdir(), 'inferq-bench-enqueue-'));
  const repo = join(dir, 'models');
  await writeModel(repo, 'small', '1', randomMlp(SMALL, 11));
  const queue = 'enq';
  process.once('exit', killAll);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let server: RedisServer | undefined;
  let redisServerPid: number | undefined;
  let admin: Redis | undefined;
  let worker: Child | undefined;
  const open: Enqueuer[] = [];
  const counters = new Set<ReplyCounter>();
  try {
    server = await startRedis();
    const url = server.url;
    admin = connectRedis(url);
    const redisPid = Number(/process_id:(\d+)/.exec(await admin.info('server'))?.[1]);
    redisServerPid = redisPid;
    watchServer(redisPid);
    worker = await spawnNode(
      'inferq worker',
      ['workers/src/cli/main.ts', 'worker', '--transport', 'redis', '--queue', queue, '--redis', url, '--model-repo', repo, '--models', 'small', '--concurrency', '256'],
      'inferq worker: serving queue',
    );
    const w = worker;
    const rig: Rig = {
      admin,
      pids: { producer: process.pid, worker: worker.pid, redis: redisPid },
      diagnose: () => w.tail(),
      make: (path, c, q) => {
        const p: Enqueuer = path === 'MULTI' ? new MultiProducer(url, q, c.payload, c.linger) : new Producer({ redis: url, queue: q, payload: c.payload, ...(c.linger === undefined ? {} : { linger: c.linger }) });
        open.push(p);
        return p;
      },
      counter: (name) => {
        const c = new ReplyCounter(url, `bench:enqueue:${name}`, true);
        counters.add(c);
        return c;
      },
      done: async (c) => {
        counters.delete(c);
        await c.close();
      },
    };
    const big = features(1000, SMALL[0]!);
    const one = features(1, SMALL[0]!);
    const cases: Case[] = [
      { name: '256 KB jobs, payload key', batch: big, payload: 'key', jobs: QUICK ? 100 : 500, parallel: 64, window: 2000 },
      { name: '256 KB jobs, payload key, caller\'s jobId', batch: big, payload: 'key', jobs: QUICK ? 100 : 500, parallel: 64, window: 2000, jobIds: true },
      { name: '1-row jobs, payload auto (inline)', batch: one, payload: 'auto', jobs: QUICK ? 2000 : 20_000, parallel: 1000, window: 10_000 },
      { name: '1-row jobs, linger 2 ms (packs under a key)', batch: one, payload: 'auto', linger: { ms: 2 }, jobs: QUICK ? 20_000 : 100_000, parallel: 1000, window: 10_000 },
    ];
    const results: [Case, Record<Path, { enq: DriveResult[]; e2e: DriveResult[] }>][] = [];
    for (const c of cases) results.push([c, await measure(rig, c, queue)]);
    report(results);
    console.log(`\n  enqueue bench took ${((performance.now() - t0) / 1000).toFixed(0)} s; load average now ${loadavg()[0]!.toFixed(2)}`);
  } finally {
    for (const c of counters) await c.close();
    for (const p of open) await bounded(p.close(), 5000);
    if (worker !== undefined) await worker.stop().catch(() => false);
    admin?.disconnect();
    if (server !== undefined) await server.stop().catch(() => undefined);
    killAll();
    if (redisServerPid !== undefined) unwatchServer(redisServerPid);
    process.off('exit', killAll);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await enqueueBench();
