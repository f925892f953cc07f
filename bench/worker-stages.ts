/**
 * Where a Redis worker's CPU goes outside the model, stage by stage: each stage of a 1,000-row
 * job (64 float32 features, the small MLP's shape) run alone in this process, against a real
 * Redis, and timed by process CPU (user and kernel) per job and per row.
 *
 *   bullmq     a BullMQ Worker taking and completing jobs with a no-op processor (no payload)
 *   payload    GET of the job's 256 KB payload key: the worker's PayloadReader, and ioredis beside it
 *   decode     decodeEnvelope (its CRC-32 included) + validateInputs
 *   batch      the DynamicBatcher gathering jobs into 1,024-row batches for a runner that does
 *              nothing (the copy into the batch tensor, the job bookkeeping, the output split)
 *   reply      encodeEnvelope of the 1,000 outputs + MULTI { XADD reply, HSET/EXPIRE run mark }
 *
 * The sum beside bench/drain.ts's "worker outside the model" shows what the glue (the pipeline's
 * promises, metrics, logs, GC of everything together) costs on top.
 *
 *   node --conditions=inferq-source --import tsx bench/worker-stages.ts   (also in npm run bench)
 */
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { pathToFileURL } from 'node:url';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { allocate, decodeEnvelope, encodeEnvelope, validateInputs } from '@inferq/shared';
import type { TensorMap, TensorSpec } from '@inferq/shared';
import { DynamicBatcher } from '../workers/src/batching/batcher.js';
import { PayloadReader } from '../workers/src/sources/redis/payload-reader.js';
import { startRedis } from '../test/infra/redis.js';
import { QUICK, fmt, table } from './common.js';

const ROWS = 1000;
const WIDTH = 64;
const JOBS = QUICK ? 300 : 2000;
const RUNS = Number(process.env['BENCH_STAGES_RUNS'] ?? 3);
const INPUTS: readonly TensorSpec[] = [{ name: 'features', dtype: 'float32', shape: [-1, WIDTH] }];

interface Cpu {
  readonly user: number;
  readonly system: number;
}

/** CPU µs of this process spent in fn, per job. */
async function perJob(jobs: number, fn: () => Promise<void>): Promise<Cpu> {
  const c0 = process.cpuUsage();
  await fn();
  const c = process.cpuUsage(c0);
  return { user: c.user / jobs, system: c.system / jobs };
}

function features(): TensorMap {
  const data = new Float32Array(ROWS * WIDTH);
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i);
  return { features: { dtype: 'float32', shape: [ROWS, WIDTH], data } };
}

async function bullmqStage(url: string): Promise<Cpu> {
  const name = `stages-${randomBytes(4).toString('hex')}`;
  const connection = { url, maxRetriesPerRequest: null } as const;
  const queue = new Queue(name, { connection });
  for (let i = 0; i < JOBS; i += 500) {
    await queue.addBulk(Array.from({ length: Math.min(500, JOBS - i) }, (_, k) => ({ name: 'm', data: { model: 'm', key: `k${i + k}`, bytes: 262_144 }, opts: { removeOnComplete: true } })));
  }
  let done = 0;
  let finished!: () => void;
  const all = new Promise<void>((resolve) => (finished = resolve));
  const cpu = await perJob(JOBS, async () => {
    const worker = new Worker(name, async () => undefined, { connection, concurrency: 256 });
    worker.on('completed', () => {
      if (++done === JOBS) finished();
    });
    await all;
    await worker.close();
  });
  await queue.obliterate({ force: true });
  await queue.close();
  return cpu;
}

async function payloadStage(redis: Redis, bytes: Uint8Array, via: 'reader' | 'ioredis'): Promise<Cpu> {
  const key = `stages:payload:${randomBytes(4).toString('hex')}`;
  await redis.set(key, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  const reader = new PayloadReader(redis.options, { maxBytes: 1 << 20, connectTimeoutMs: 5000 });
  const get = via === 'reader' ? (k: string) => reader.get(k) : (k: string) => redis.getBuffer(k);
  for (let i = 0; i < 50; i++) await get(key);
  const cpu = await perJob(JOBS, async () => {
    // 64 in flight, as a worker with jobs in flight has.
    let next = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next++ < JOBS) await get(key);
      }),
    );
  });
  reader.close();
  await redis.del(key);
  return cpu;
}

async function decodeStage(bytes: Uint8Array): Promise<Cpu> {
  return perJob(JOBS, async () => {
    for (let i = 0; i < JOBS; i++) {
      const env = decodeEnvelope(bytes);
      validateInputs(env.tensors, INPUTS, { model: 'small', version: '1', nonFinite: 'reject' });
    }
  });
}

async function batchStage(): Promise<Cpu> {
  const runner = {
    run: async (inputs: TensorMap): Promise<TensorMap> => {
      const rows = inputs['features']!.shape[0]!;
      return { score: { dtype: 'float32', shape: [rows, 1], data: allocate('float32', rows) } };
    },
  };
  const batcher = new DynamicBatcher(runner, { inputs: INPUTS, maxBatchSize: 1024, maxDelayMs: 2, preferredBatchSizes: [], maxPendingRows: 16 * 1024, maxInFlightBatches: 2 });
  const tensors = features();
  try {
    return await perJob(JOBS, async () => {
      let next = 0;
      await Promise.all(
        Array.from({ length: 64 }, async () => {
          while (next < JOBS) await batcher.submit({ id: `j${next++}`, tensors, rows: ROWS });
        }),
      );
    });
  } finally {
    await batcher.close(0);
  }
}

async function replyStage(redis: Redis): Promise<Cpu> {
  const stream = `stages:replies:${randomBytes(4).toString('hex')}`;
  const outputs: TensorMap = { score: { dtype: 'float32', shape: [ROWS, 1], data: new Float32Array(ROWS) } };
  const cpu = await perJob(JOBS, async () => {
    let next = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < JOBS) {
          const id = `j${next++}`;
          const bytes = encodeEnvelope({ id, model: 'small', version: '1' }, outputs);
          const tx = redis.multi();
          tx.xadd(stream, 'MAXLEN', '~', '100000', '*', 'id', id, 'status', 'ok', 'env', Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
          tx.hset(`${stream}:run:${id}`, 'replied', '1');
          tx.expire(`${stream}:run:${id}`, 60);
          await tx.exec();
        }
      }),
    );
  });
  const runKeys = await redis.keys(`${stream}:run:*`);
  for (let i = 0; i < runKeys.length; i += 1000) await redis.del(...runKeys.slice(i, i + 1000));
  await redis.del(stream);
  return cpu;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

export async function workerStagesBench(): Promise<void> {
  console.log(`\ninferq worker stages — CPU per ${fmt(ROWS)}-row job outside the model, each stage alone; ${fmt(JOBS)} jobs, median of ${RUNS}; load ${loadavg()[0]!.toFixed(2)}`);
  const server = await startRedis();
  const redis = new Redis(server.url);
  const bytes = encodeEnvelope({ id: 'j', model: 'small' }, features());
  try {
    const stages: [string, () => Promise<Cpu>][] = [
      ['bullmq: take + complete a job (no payload)', () => bullmqStage(server.url)],
      ['payload: GET 256 KB (PayloadReader, as the worker does)', () => payloadStage(redis, bytes, 'reader')],
      ['  (the same GET through ioredis, not summed)', () => payloadStage(redis, bytes, 'ioredis')],
      ['decode: envelope (CRC-32) + validate', () => decodeStage(bytes)],
      ['batch: gather into 1,024-row batches, split outputs', batchStage],
      ['reply: encode + MULTI { XADD, HSET, EXPIRE }', () => replyStage(redis)],
    ];
    const rows: (string | number)[][] = [];
    let total = 0;
    for (const [name, run] of stages) {
      const results: Cpu[] = [];
      for (let i = 0; i < RUNS; i++) results.push(await run());
      const user = median(results.map((r) => r.user));
      const system = median(results.map((r) => r.system));
      if (!name.startsWith(' ')) total += user + system;
      rows.push([name, ((user + system) / ROWS).toFixed(3), (user / ROWS).toFixed(3), (system / ROWS).toFixed(3), fmt(user + system)]);
    }
    rows.push(['sum of the stages', (total / ROWS).toFixed(3), '', '', fmt(total)]);
    table('stage CPU, this process (user + kernel)', ['stage', 'µs/row', 'user µs/row', 'kernel µs/row', 'µs/job'], rows);
  } finally {
    redis.disconnect();
    await server.stop();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await workerStagesBench();
