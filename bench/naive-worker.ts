/**
 * The naive baseline of bench/redis.ts: a plain BullMQ Worker where one job = one row =
 * one onnxruntime-node `session.run` at batch 1, the score written back with XADD.
 * No batching, no envelope: job data is `{ x: number[], replyTo }` JSON.
 *
 *   node --import tsx bench/naive-worker.ts --redis URL --queue Q --model model.onnx [--concurrency N]
 *
 * Prints "naive worker: ready" on stdout once it takes jobs; SIGTERM closes it and exits.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { Worker } from 'bullmq';
import type { Job } from 'bullmq';
import { Redis } from 'ioredis';
import * as ort from 'onnxruntime-node';

interface NaiveJob {
  readonly x: number[];
  readonly replyTo: string;
}

const { values } = parseArgs({
  options: {
    redis: { type: 'string' },
    queue: { type: 'string' },
    model: { type: 'string' },
    concurrency: { type: 'string', default: '256' },
    threads: { type: 'string' },
  },
});
if (values.redis === undefined || values.queue === undefined || values.model === undefined) {
  process.stderr.write('usage: naive-worker --redis URL --queue Q --model model.onnx [--concurrency N] [--threads N]\n');
  process.exit(2);
}

// The session options a plain user (and bench/main.ts's raw measurement) would write.
const session = await ort.InferenceSession.create(await readFile(values.model), {
  executionProviders: ['cpu'],
  graphOptimizationLevel: 'all',
  ...(values.threads === undefined ? {} : { intraOpNumThreads: Number(values.threads) }),
});
const input = session.inputNames[0]!;
const output = session.outputNames[0]!;
const redis = new Redis(values.redis, { maxRetriesPerRequest: null });

const worker = new Worker(
  values.queue,
  async (job: Job<NaiveJob>) => {
    const { x, replyTo } = job.data;
    const out = await session.run({ [input]: new ort.Tensor('float32', Float32Array.from(x), [1, x.length]) });
    const score = (out[output]!.data as Float32Array)[0]!;
    await redis.xadd(replyTo, '*', 'id', job.id ?? '', 'status', 'ok', 'score', String(score));
  },
  { connection: redis.duplicate({ maxRetriesPerRequest: null }), concurrency: Number(values.concurrency), autorun: false },
);
worker.on('error', (err) => process.stderr.write(`naive worker error: ${err.message}\n`));
void worker.run();
await worker.waitUntilReady();
process.stdout.write(`naive worker: ready (pid ${process.pid})\n`);

process.once('SIGTERM', () => {
  void (async () => {
    await worker.close();
    await session.release();
    redis.disconnect();
    process.exit(0);
  })();
});
