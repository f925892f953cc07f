/**
 * Precompute into a real Redis (test/infra) and into Parquet on local disk, medium MLP
 * 256→1024→1024→512→1 (a 255-value one-hot axis × a numeric axis = 256 features), and
 * lookup latency from the SDK: single keys and 100-key batches, p50/p99.
 * Ratios are against raw ONNX Runtime at its best batch, measured between every two runs (the
 * machine's speed drifts): a run's reference is the mean of the readings on either side of it;
 * the table reports medians over the rounds.
 *
 *   node --conditions=inferq-source --import tsx bench/precompute.ts   (or the end of `npm run bench`)
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Producer } from '@inferq/producer';
import { buildMlp, randomMlp } from '../examples/build/onnx-builder.js';
import { writeModel } from '../test/helpers/models.js';
import { startRedis } from '../test/infra/redis.js';
import type { RedisServer } from '../test/infra/redis.js';
import { silentLogger } from '../workers/src/logging.js';
import { loadModel } from '../workers/src/models/loaded-model.js';
import { throughputThreads } from '../workers/src/runners/onnx/runner.js';
import { ModelRepository } from '../workers/src/models/repository.js';
import { precompute } from '../workers/src/precompute/precompute.js';
import type { PrecomputeTarget } from '../workers/src/precompute/precompute.js';
import { loadSpec } from '../workers/src/precompute/spec.js';
import { BATCH_SIZES, QUICK, fmt, rawOrt, table } from './common.js';

const MEDIUM = [256, 1024, 1024, 512, 1];
const B = QUICK ? 40 : 400;
const ROUNDS = QUICK ? 1 : 5;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

export async function precomputeBench(): Promise<void> {
  const rows = 255 * B;
  console.log(`\ninferq precompute bench — medium MLP, ${fmt(rows)} rows (255-value one-hot × ${B}), chunks of 8,192${QUICK ? ' (quick)' : ''}`);
  const spec = randomMlp(MEDIUM, 5);
  const modelBytes = buildMlp(spec);
  const raw = await rawOrt(modelBytes, 256, BATCH_SIZES.filter((b) => b >= 256));
  const rawBest = Math.max(...raw.values());
  const rawAt = [...raw.entries()].find(([, v]) => v === rawBest)![0];
  const dir = await mkdtemp(join(tmpdir(), 'inferq-bench-precompute-'));
  let redis: RedisServer | undefined;
  try {
    redis = await startRedis();
    const repo = join(dir, 'models');
    await writeModel(repo, 'medium', '1', spec);
    const specPath = join(dir, 'spec.yaml');
    await writeFile(
      specPath,
      [
        'table: bench',
        'model: medium',
        'space:',
        '  axes:',
        `    - { name: item, range: { from: 1, to: 255 } }`,
        `    - { name: day, range: { from: 1, to: ${B} } }`,
        'key: "{item}:{day}"',
        'encode:',
        '  features:',
        '    - { axis: item, as: onehot }',
        '    - { axis: day, as: number }',
        'chunkRows: 8192',
        `parquet: { path: "${join(dir, 'tables')}" }`,
      ].join('\n'),
    );
    const loaded = await loadSpec(specPath);
    // As `inferq precompute` loads it: one single-threaded instance per CPU.
    const model = await loadModel(new ModelRepository(repo), 'medium', undefined, { logger: silentLogger(), ...throughputThreads({}) });
    const instances = model.runner.instanceCount ?? 1;
    const targets: PrecomputeTarget[] = ['redis', 'parquet', 'both'];
    const runs = new Map<PrecomputeTarget, { rate: number; ratio: number; ofRunner: number }[]>(targets.map((t) => [t, []]));
    const raws: number[] = [];
    const alone: number[] = [];
    // The run's own model instances alone (batches of maxBatchSize, two per instance in flight,
    // no space, no writes): what the instances give before precompute does anything else.
    const features = Float32Array.from({ length: model.batching.maxBatchSize * 256 }, (_, i) => Math.sin(i));
    const runnerAlone = async (): Promise<number> => {
      const until = performance.now() + (QUICK ? 200 : 700);
      const start = performance.now();
      let rows = 0;
      const lane = async (): Promise<void> => {
        while (performance.now() < until) {
          await model.runner.run({ features: { dtype: 'float32', shape: [model.batching.maxBatchSize, 256], data: features } });
          rows += model.batching.maxBatchSize;
        }
      };
      await Promise.all(Array.from({ length: 2 * instances }, lane));
      const r = rows / ((performance.now() - start) / 1000);
      alone.push(r);
      return r;
    };
    try {
      // One unreported warm-up run (JIT, the model's arena, Redis's allocator), as raw ONNX Runtime gets its warm-up runs.
      await precompute({ spec: loaded, model, to: 'both', redis: redis.url, logger: silentLogger() });
      // This shared machine's speed drifts by ±25 % within seconds, so raw ONNX Runtime (at its
      // best batch) is measured between every two runs, and a run's ratio is to the mean of
      // the readings just before and just after it; the table reports the median of the rounds.
      const rawNow = async (): Promise<number> => {
        const r = (await rawOrt(modelBytes, 256, [rawAt])).get(rawAt)!;
        raws.push(r);
        return r;
      };
      let before = await rawNow();
      let beforeAlone = await runnerAlone();
      for (let round = 0; round < ROUNDS; round++) {
        for (const to of targets) {
          const s = await precompute({ spec: loaded, model, to, redis: redis.url, logger: silentLogger() });
          const after = await rawNow();
          const afterAlone = await runnerAlone();
          runs.get(to)!.push({ rate: s.rowsPerSecond, ratio: s.rowsPerSecond / ((before + after) / 2), ofRunner: s.rowsPerSecond / ((beforeAlone + afterAlone) / 2) });
          before = after;
          beforeAlone = afterAlone;
        }
      }
    } finally {
      await model.close();
    }
    console.log(`  raw ONNX Runtime @${rawAt} between runs: ${raws.map(fmt).join(', ')} rows/s (sweep at the start: best ${fmt(rawBest)})`);
    console.log(`  the run's ${instances} model instances alone, between runs: ${alone.map(fmt).join(', ')} rows/s (median ${(median(alone) / median(raws)).toFixed(2)} of raw's median)`);
    const results = targets.map((to) => {
      const r = runs.get(to)!;
      const ratio = median(r.map((x) => x.ratio));
      const lo = Math.min(...r.map((x) => x.ratio));
      const hi = Math.max(...r.map((x) => x.ratio));
      return [to, median(r.map((x) => x.rate)), ratio.toFixed(3), `${lo.toFixed(2)}–${hi.toFixed(2)}`, ratio >= 0.85 ? 'yes' : 'NO', median(r.map((x) => x.ofRunner)).toFixed(3)];
    });
    table(
      `precompute, medium MLP, ${ROUNDS} rounds (median rows/s; ratio to raw measured on either side, median and range; target ≥ 0.85; and to the run's instances alone)`,
      ['to', 'rows/s', 'vs raw', 'range', '≥ 0.85', 'vs instances alone'],
      results,
    );

    const producer = new Producer({ redis: redis.url });
    try {
      const key = (i: number): string => `${1 + (i % 255)}:${1 + (Math.floor(i / 255) % B)}`;
      for (let i = 0; i < 200; i++) await producer.lookup('bench', key(i * 31));
      const single: number[] = [];
      for (let i = 0; i < (QUICK ? 500 : 5000); i++) {
        const t = performance.now();
        const row = await producer.lookup('bench', key(i * 7919));
        single.push(performance.now() - t);
        if (row === undefined) throw new Error(`lookup of ${key(i * 7919)} missed`);
      }
      const many: number[] = [];
      for (let i = 0; i < (QUICK ? 50 : 500); i++) {
        const keys = Array.from({ length: 100 }, (_, k) => key(i * 1000 + k * 13));
        const t = performance.now();
        const got = await producer.lookupMany('bench', keys);
        many.push(performance.now() - t);
        if (got.some((r) => r === undefined)) throw new Error('a batch lookup missed');
      }
      table('lookup latency, SDK → Redis on loopback (ms)', ['call', 'p50', 'p99'], [
        ['lookup(1 key)', pct(single, 50).toFixed(3), pct(single, 99).toFixed(3)],
        ['lookupMany(100 keys)', pct(many, 50).toFixed(3), pct(many, 99).toFixed(3)],
      ]);
    } finally {
      await producer.close();
    }
  } finally {
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await precomputeBench();
