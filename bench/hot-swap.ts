/**
 * The cost of a hot swap: one redis-server (test/infra), ONE `inferq worker` process polling
 * its model repository every 100 ms, and 32 callers in this process each sending 1-row
 * predict() calls back to back (medium MLP 256→1024→1024→512→1). Version 2 is published
 * (copied to a hidden folder, renamed) while they run; the latency of calls sent before,
 * during (from the publication until 1 s after the first answer of version 2: load, warm-up,
 * switch, and the old version's drain and disposal) and after the swap is compared.
 *
 *   node --conditions=inferq-source --import tsx bench/hot-swap.ts     (or the end of `npm run bench`)
 *
 * Env: BENCH_QUICK=1 for a short smoke run.
 */
import { mkdtemp, rename, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { QUICK, table } from './common.js';
import { killAll, onSignal, spawnNode } from './processes.js';
import type { Child } from './processes.js';
import { Producer } from '@inferq/producer';
import { randomMlp } from '../examples/build/onnx-builder.js';
import { writeModel } from '../test/helpers/models.js';
import { startRedis } from '../test/infra/redis.js';
import type { RedisServer } from '../test/infra/redis.js';

const CALLERS = 32;
const MEDIUM = [256, 1024, 1024, 512, 1];
const PHASE_MS = QUICK ? 2000 : 8000;

interface Call {
  readonly sent: number;
  readonly ms: number;
  readonly version: string | undefined;
  readonly ok: boolean;
}

const pct = (xs: number[], p: number): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
};

export async function hotSwapBench(): Promise<void> {
  console.log(`\ninferq hot-swap bench — node ${process.version}, 1 redis-server, 1 worker (--model-poll-ms 100), ${CALLERS} callers of 1-row predict(), medium MLP, load average ${loadavg()[0]!.toFixed(2)}${QUICK ? ' (quick)' : ''}`);
  const dir = await mkdtemp(join(tmpdir(), 'inferq-bench-swap-'));
  const repo = join(dir, 'models');
  let server: RedisServer | undefined;
  let worker: Child | undefined;
  let producer: Producer | undefined;
  process.on('exit', killAll);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await writeModel(repo, 'medium', '1', randomMlp(MEDIUM, 1));
    server = await startRedis();
    const queue = 'bench-swap';
    worker = await spawnNode(
      'inferq worker',
      ['workers/src/cli/main.ts', 'worker', '--queue', queue, '--redis', server.url, '--model-repo', repo, '--models', 'medium', '--model-poll-ms', '100', '--max-delay-ms', '2', '--http-port', '0'],
      'inferq worker: serving queue',
    );
    const p = new Producer({ redis: server.url, queue });
    producer = p;
    const calls: Call[] = [];
    let stop = false;
    const x = [Array.from({ length: MEDIUM[0]! }, (_, i) => Math.sin(i))];
    const caller = async (): Promise<void> => {
      while (!stop) {
        const sent = performance.now();
        const r = await p.predict('medium', x, { timeoutMs: 30_000 }).then(
          (reply) => ({ ok: true, version: reply.version }),
          () => ({ ok: false, version: undefined }),
        );
        calls.push({ sent, ms: performance.now() - sent, ...r });
      }
    };
    const callers = Array.from({ length: CALLERS }, caller);
    const until = async (check: () => boolean, what: string, timeoutMs = 120_000): Promise<void> => {
      const end = Date.now() + timeoutMs;
      while (!check()) {
        if (Date.now() > end) throw new Error(`hot-swap bench: timed out waiting for ${what}\n${worker?.tail() ?? ''}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const warm = performance.now() + 1000;
    await until(() => performance.now() > warm + PHASE_MS, 'the before phase');
    const published = performance.now();
    await writeModel(repo, 'medium', '.2.tmp', randomMlp(MEDIUM, 2));
    await rename(join(repo, 'medium', '.2.tmp'), join(repo, 'medium', '2'));
    await until(() => calls.some((c) => c.version === '2'), 'the first answer of version 2');
    const firstNew = Math.min(...calls.filter((c) => c.version === '2').map((c) => c.sent + c.ms));
    const duringEnd = firstNew + 1000;
    await until(() => performance.now() > duringEnd + PHASE_MS, 'the after phase');
    stop = true;
    await Promise.all(callers);

    const phases: [string, Call[]][] = [
      ['before', calls.filter((c) => c.sent >= warm && c.sent < published)],
      ['during the swap', calls.filter((c) => c.sent >= published && c.sent < duringEnd)],
      ['after', calls.filter((c) => c.sent >= duringEnd)],
    ];
    table(
      `1-row predict() latency around a hot swap (ms); version 2 answered ${((firstNew - published) / 1000).toFixed(2)} s after it was published`,
      ['phase', 'calls', 'p50', 'p99', 'max', 'failed', 'versions'],
      phases.map(([name, cs]) => {
        const ms = cs.filter((c) => c.ok).map((c) => c.ms);
        const versions = [...new Set(cs.map((c) => c.version ?? '-'))].sort().join(',');
        return [name, cs.length, pct(ms, 0.5).toFixed(2), pct(ms, 0.99).toFixed(2), Math.max(...ms).toFixed(2), cs.filter((c) => !c.ok).length, versions];
      }),
    );
    const p99 = (i: number): number => pct(phases[i]![1].filter((c) => c.ok).map((c) => c.ms), 0.99);
    console.log(`  p99 during the swap / before: ${(p99(1) / p99(0)).toFixed(2)}×`);
  } finally {
    await producer?.close().catch(() => undefined);
    await worker?.stop().catch(() => undefined);
    await server?.stop().catch(() => undefined);
    killAll();
    process.off('exit', killAll);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await hotSwapBench();
