/**
 * Soak: one `inferq worker` (Redis, the built CLI) under full load for BENCH_SOAK_SECONDS
 * (default 600), fed continuously by the SDK, its memory sampled all along:
 *
 *   64 lanes of predict(1,000-row job, payload key) ─┐
 *   1,000 lanes of predict(1 row, linger 2 ms)   ────┼─► Redis ─► inferq worker ─► replies ─► the lanes
 *   every BENCH_SOAK_SAMPLE_MS: VmRSS (/proc/<pid>/status), V8 heap and external memory (/metrics)
 *
 * Each lane sends its next job when its reply arrives, so the queue stays full but bounded. Reported:
 * RSS after the warm-up (1 min, or half of a shorter run) against RSS at the end (drift %, target
 * ≤ +10 %), the RSS slope after the warm-up, max RSS, jobs and rows done, and a verdict line.
 *
 *   npm run bench -- soak      (or: node --conditions=inferq-source --import tsx bench/soak.ts, after npm run build)
 *
 * Env: BENCH_SOAK_SECONDS (default 600), BENCH_SOAK_SAMPLE_MS (default 5000).
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Producer } from '@inferq/producer';
import type { TensorMap } from '@inferq/producer';
import { randomMlp } from '../examples/build/onnx-builder.js';
import { writeModel } from '../test/helpers/models.js';
import { freePort, startRedis } from '../test/infra/redis.js';
import { fmt, table } from './common.js';
import { cpuSeconds } from './processes.js';
import { bounded, connectRedis, features } from './redis.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'workers/bin/inferq.js');
const SECONDS = Number(process.env['BENCH_SOAK_SECONDS'] ?? 600);
const SAMPLE_MS = Number(process.env['BENCH_SOAK_SAMPLE_MS'] ?? 5000);
const WARMUP_S = Math.min(60, SECONDS / 2);
const DRIFT_TARGET = 0.1;
const SMALL = [64, 256, 128, 1];
const LANES = { big: 64, one: 1000 } as const;
/** Replies kept in each producer's inbox stream: far more than can be unread (one per lane). */
const INBOX_KEEP = 10_000;

interface Sample {
  readonly t: number;
  readonly rss: number;
  readonly heapUsed: number;
  readonly external: number;
  readonly jobs: number;
  readonly load: number;
}

/** VmRSS of a process in bytes (NaN once it is gone). */
function rssBytes(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? Number.NaN : Number(m[1]) * 1024;
  } catch {
    return Number.NaN;
  }
}

/** The worker's V8 heap in use and external memory (main thread), from its /metrics. */
async function heapOf(port: number): Promise<{ heapUsed: number; external: number }> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
    const value = (name: string): number => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)`, 'm').exec(text)?.[1] ?? Number.NaN);
    return { heapUsed: value('nodejs_heap_size_used_bytes'), external: value('nodejs_external_memory_bytes') };
  } catch {
    return { heapUsed: Number.NaN, external: Number.NaN };
  }
}

/** Starts the built CLI's worker; resolves once it prints that it serves. */
async function startWorker(args: string[]): Promise<{ proc: ChildProcess; tail(): string }> {
  const proc = spawn(process.execPath, [CLI, 'worker', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, INFERQ_LOG_LEVEL: 'warn' } });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
  proc.stderr?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
  const tail = (): string => `inferq worker output: ${out.trim() || '(empty)'}`;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`inferq worker not serving within 60 s\n${tail()}`)), 60_000);
    const check = (): void => {
      if (!out.includes('inferq worker: serving')) return;
      clearTimeout(timer);
      resolve();
    };
    proc.stdout?.on('data', check);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`inferq worker exited (${code ?? signal}) before serving\n${tail()}`));
    });
  });
  return { proc, tail };
}

/** Least-squares slope of y over t, per minute. */
function slopePerMinute(points: readonly { t: number; y: number }[]): number {
  const n = points.length;
  if (n < 2) return Number.NaN;
  const mt = points.reduce((a, p) => a + p.t, 0) / n;
  const my = points.reduce((a, p) => a + p.y, 0) / n;
  const num = points.reduce((a, p) => a + (p.t - mt) * (p.y - my), 0);
  const den = points.reduce((a, p) => a + (p.t - mt) ** 2, 0);
  return (num / den) * 60;
}

const mb = (bytes: number): string => (bytes / 2 ** 20).toFixed(1);

export async function soakBench(): Promise<void> {
  console.log(`\ninferq soak — node ${process.version}, ${SECONDS} s, one worker (Redis, built CLI), small MLP, ${LANES.big} lanes of 1,000-row jobs + ${LANES.one} lanes of 1-row jobs (linger 2 ms), load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  if (!existsSync(join(ROOT, 'workers/dist/cli/main.js'))) throw new Error('workers/dist is missing: run `npm run build` first');
  const dir = await mkdtemp(join(tmpdir(), 'inferq-bench-soak-'));
  const server = await startRedis();
  const queue = `soak-${process.pid}`;
  let worker: { proc: ChildProcess; tail(): string } | undefined;
  const kill = (): void => void worker?.proc.kill('SIGKILL');
  process.once('exit', kill);
  const big = new Producer({ redis: server.url, queue, payload: 'key' });
  const one = new Producer({ redis: server.url, queue, linger: { ms: 2 } });
  const admin = connectRedis(server.url);
  try {
    await writeModel(join(dir, 'models'), 'small', '1', randomMlp(SMALL, 11));
    const port = await freePort();
    worker = await startWorker(['--transport', 'redis', '--queue', queue, '--redis', server.url, '--model-repo', join(dir, 'models'), '--models', 'small', '--concurrency', '256', '--http-port', String(port)]);
    const pid = worker.proc.pid!;
    const exited = new Promise<never>((_, reject) => worker!.proc.once('exit', (code, signal) => reject(new Error(`inferq worker exited (${code ?? signal}) during the soak\n${worker!.tail()}`))));
    exited.catch(() => undefined);

    const done = { big: 0, one: 0 };
    let errors = 0;
    let firstError: string | undefined;
    let stop = false;
    const lane = async (kind: 'big' | 'one', batch: TensorMap): Promise<void> => {
      const producer = kind === 'big' ? big : one;
      while (!stop) {
        try {
          await producer.predict('small', batch, { timeoutMs: 60_000 });
          done[kind]++;
        } catch (err) {
          errors++;
          firstError ??= err instanceof Error ? err.message : String(err);
          if (errors > 100) throw new Error(`more than 100 jobs failed; first: ${firstError}\n${worker!.tail()}`);
        }
      }
    };
    const bigBatch = features(1000, SMALL[0]!);
    const oneBatch = features(1, SMALL[0]!);
    const start = performance.now();
    const cpu0 = cpuSeconds(pid);
    const lanes = Promise.all([...Array.from({ length: LANES.big }, () => lane('big', bigBatch)), ...Array.from({ length: LANES.one }, () => lane('one', oneBatch))]);
    lanes.catch(() => undefined);

    const samples: Sample[] = [];
    let printed = 0;
    for (;;) {
      const t = (performance.now() - start) / 1000;
      const { heapUsed, external } = await heapOf(port);
      samples.push({ t, rss: rssBytes(pid), heapUsed, external, jobs: done.big + done.one, load: loadavg()[0]! });
      if (t - printed >= 30 || t >= SECONDS) {
        printed = t;
        const s = samples.at(-1)!;
        console.log(`  ${t.toFixed(0).padStart(4)} s: RSS ${mb(s.rss)} MB, heap used ${mb(s.heapUsed)} MB, external ${mb(s.external)} MB, jobs ${fmt(done.big)} × 1,000 rows + ${fmt(done.one)} × 1 row, errors ${errors}, load ${s.load.toFixed(2)}`);
      }
      if (t >= SECONDS) break;
      await Promise.all([
        admin.xtrim(big.inbox, 'MAXLEN', '~', INBOX_KEEP),
        admin.xtrim(one.inbox, 'MAXLEN', '~', INBOX_KEEP),
      ]);
      await Promise.race([new Promise((r) => setTimeout(r, SAMPLE_MS)), exited, lanes]);
    }
    const seconds = (performance.now() - start) / 1000;
    const workerCpu = cpuSeconds(pid) - cpu0;
    stop = true;
    await bounded(lanes, 70_000);
    report(samples, { done, errors, firstError, seconds, workerCpu });
  } finally {
    process.off('exit', kill);
    if (worker !== undefined && worker.proc.exitCode === null && worker.proc.signalCode === null) {
      const gone = new Promise((r) => worker!.proc.once('exit', r));
      worker.proc.kill('SIGTERM');
      await bounded(gone, 35_000);
      kill();
    }
    await bounded(big.close(), 5000);
    await bounded(one.close(), 5000);
    admin.disconnect();
    await server.stop().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

function report(
  samples: readonly Sample[],
  r: { done: { big: number; one: number }; errors: number; firstError: string | undefined; seconds: number; workerCpu: number },
): void {
  const warm = samples.find((s) => s.t >= WARMUP_S) ?? samples.at(-1)!;
  const end = samples.at(-1)!;
  const after = samples.filter((s) => s.t >= warm.t);
  const secondHalf = samples.filter((s) => s.t >= end.t / 2);
  const maxRss = Math.max(...samples.map((s) => s.rss));
  const drift = (end.rss - warm.rss) / warm.rss;
  const rows = r.done.big * 1000 + r.done.one;
  table(`soak, ${r.seconds.toFixed(0)} s, sampled every ${SAMPLE_MS / 1000} s`, ['measure', 'value'], [
    [`RSS at ${warm.t.toFixed(0)} s (after the warm-up)`, `${mb(warm.rss)} MB`],
    [`RSS at the end (${end.t.toFixed(0)} s)`, `${mb(end.rss)} MB`],
    ['RSS drift, end vs warm-up (target ≤ +10 %)', `${drift >= 0 ? '+' : ''}${(drift * 100).toFixed(1)} %`],
    ['RSS slope after the warm-up (least squares)', `${(slopePerMinute(after.map((s) => ({ t: s.t, y: s.rss }))) / 2 ** 20).toFixed(2)} MB/min`],
    ['RSS slope over the second half (a plateau reads ~0; a leak does not)', `${(slopePerMinute(secondHalf.map((s) => ({ t: s.t, y: s.rss }))) / 2 ** 20).toFixed(2)} MB/min`],
    ['max RSS', `${mb(maxRss)} MB`],
    ['heap used, warm-up → end (main thread)', `${mb(warm.heapUsed)} → ${mb(end.heapUsed)} MB`],
    ['external memory, warm-up → end (main thread)', `${mb(warm.external)} → ${mb(end.external)} MB`],
    ['jobs done', `${fmt(r.done.big)} × 1,000 rows + ${fmt(r.done.one)} × 1 row (${fmt(rows / r.seconds)} rows/s)`],
    ['jobs failed', r.errors === 0 ? '0' : `${r.errors} (first: ${r.firstError ?? ''})`],
    ['worker CPU', `${r.workerCpu.toFixed(0)} s (${((r.workerCpu / r.seconds) * 100).toFixed(0)} % of one core)`],
    ['load average, start → end', `${samples[0]!.load.toFixed(2)} → ${end.load.toFixed(2)}`],
  ]);
  const met = drift <= DRIFT_TARGET && r.errors === 0;
  console.log(`verdict: RSS drift ${(drift * 100).toFixed(1)} % over ${r.seconds.toFixed(0)} s, ${met ? 'target met' : r.errors > 0 ? `${r.errors} jobs failed` : 'target NOT met'} (≤ +10 %)${r.seconds < 600 ? '; shortened run (the target is for 10 minutes)' : ''}`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await soakBench();
