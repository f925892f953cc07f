/**
 * A real Prometheus for tests: Debian's `prometheus` package (installed with apt-get when the
 * binary is missing, like redis-server), started on a free loopback port with a generated
 * config that scrapes the given targets every second, and a temporary storage folder.
 * Queries go through its HTTP API (`/api/v1/query`), as a dashboard's would.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onceUnderLock } from './lock.js';
import { cacheRoot, runCommand, stopChild } from './process.js';
import type { CommandResult } from './process.js';
import { freePort } from './redis.js';

export interface PrometheusServer {
  /** "http://127.0.0.1:port". */
  readonly url: string;
  /** Runs an instant query; one entry per series of the resulting vector (a scalar is one entry without labels). */
  query(promql: string): Promise<{ readonly metric: Readonly<Record<string, string>>; readonly value: number }[]>;
  /** The scrape targets as Prometheus sees them: "up" or "down", and the last error. */
  targets(): Promise<{ readonly scrapeUrl: string; readonly health: string; readonly lastError: string }[]>;
  /** Stops it (SIGTERM, then SIGKILL) and removes its storage. */
  stop(): Promise<void>;
}

async function findPrometheus(): Promise<string | undefined> {
  for (const p of ['/usr/bin/prometheus', '/usr/local/bin/prometheus']) if (existsSync(p)) return p;
  const which = await runCommand('sh', ['-c', 'command -v prometheus']);
  return which.code === 0 && which.output.trim() !== '' ? which.output.trim() : undefined;
}

/** The prometheus binary; installs the Debian package once (under a lock; apt-get also waits for dpkg's own lock). */
async function prometheusBinary(): Promise<string> {
  const found = await findPrometheus();
  if (found !== undefined) return found;
  await mkdir(cacheRoot(), { recursive: true });
  const installed = async (): Promise<boolean> => (await findPrometheus()) !== undefined;
  await onceUnderLock(join(cacheRoot(), 'prometheus-apt.lock'), { done: installed, waitMs: 10 * 60_000 }, async () => {
    console.error('[test/infra] prometheus not found: installing the Debian package (apt-get install -y prometheus)');
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const install = (): Promise<CommandResult> => runCommand('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'install', '-y', '--no-install-recommends', 'prometheus'], { inherit: true, env });
    let r = await install();
    if (r.code !== 0) {
      await runCommand('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'update'], { inherit: true, env });
      r = await install();
    }
    if (r.code !== 0) throw new Error('could not install prometheus with apt-get; install it (Debian package "prometheus") and run the tests again');
  });
  const bin = await findPrometheus();
  if (bin === undefined) throw new Error('prometheus is still not on PATH after apt-get install');
  return bin;
}

/** Waits until `url` answers 200, or fails after `timeoutMs` with the process's output. */
async function waitReady(url: string, timeoutMs: number, exited: Promise<never>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await Promise.race([
      fetch(url).then(
        (r) => r.ok,
        () => false,
      ),
      exited,
    ]);
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`prometheus did not become ready at ${url} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts Prometheus scraping `targets` ("127.0.0.1:port", path /metrics) every second. */
export async function startPrometheus(targets: readonly string[]): Promise<PrometheusServer> {
  const bin = await prometheusBinary();
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'inferq-prometheus-'));
  const config = join(dir, 'prometheus.yml');
  await writeFile(
    config,
    [
      'global:',
      '  scrape_interval: 1s',
      '  scrape_timeout: 1s',
      '  evaluation_interval: 1s',
      'scrape_configs:',
      '  - job_name: inferq',
      '    metrics_path: /metrics',
      '    static_configs:',
      `      - targets: [${targets.map((t) => JSON.stringify(t)).join(', ')}]`,
      '',
    ].join('\n'),
  );
  let log = '';
  const child: ChildProcess = spawn(bin, [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const keep = (d: Buffer): void => {
    log = (log + d.toString()).slice(-8000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`prometheus exited with ${code}: ${log}`))));
  exited.catch(() => undefined);
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitReady(`${url}/-/ready`, 30_000, exited);
  } catch (err) {
    await stopChild(child, 2000);
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const api = async <T>(path: string): Promise<T> => {
    const res = await fetch(`${url}${path}`);
    const body = (await res.json()) as { status: string; data: T; error?: string };
    if (body.status !== 'success') throw new Error(`prometheus ${path}: ${body.error ?? res.status}`);
    return body.data;
  };
  return {
    url,
    async query(promql) {
      const data = await api<{ resultType: string; result: unknown }>(`/api/v1/query?query=${encodeURIComponent(promql)}`);
      if (data.resultType === 'scalar') return [{ metric: {}, value: Number((data.result as [number, string])[1]) }];
      return (data.result as { metric: Record<string, string>; value: [number, string] }[]).map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
    },
    async targets() {
      const data = await api<{ activeTargets: { scrapeUrl: string; health: string; lastError: string }[] }>('/api/v1/targets');
      return data.activeTargets.map((t) => ({ scrapeUrl: t.scrapeUrl, health: t.health, lastError: t.lastError }));
    },
    async stop() {
      await stopChild(child, 5000);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
