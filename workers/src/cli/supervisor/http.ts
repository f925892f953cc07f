/**
 * The supervisor's own port: `/livez`, `/readyz` (200 only when every child's /readyz is)
 * and `/metrics` (every child's /metrics merged, plus the supervisor's own series). Children
 * serve on 127.0.0.1:<their port>; one that does not answer in time is left out.
 */
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { ConfigError } from '@inferq/shared';
import { escapeLabel, mergeExpositions } from './metrics-merge.js';
import type { ChildExposition } from './metrics-merge.js';

export interface ScrapedChild {
  readonly device: string;
  /** The child's HTTP port. */
  readonly port: number;
  /** The child process runs (a child waiting to be restarted is not asked). */
  readonly running: boolean;
  readonly restarts: number;
}

export interface SupervisorHttpOptions {
  readonly port: number;
  /** Interface to listen on. Default: all. */
  readonly host?: string;
  readonly children: () => readonly ScrapedChild[];
  /** True once shutdown began: /readyz answers 503 "draining". */
  readonly draining: () => boolean;
  /** How long a child's /metrics may take. Default 3000 ms. */
  readonly scrapeTimeoutMs?: number;
  /** How long a child's /readyz may take. Default 1000 ms. */
  readonly readyTimeoutMs?: number;
}

export interface SupervisorHttp {
  /** The port it listens on (the one asked for, or the one picked for 0). */
  readonly port: number;
  close(): Promise<void>;
}

/** Listens on `opts.port`; rejects with a ConfigError when the port cannot be had. */
export async function startSupervisorHttp(opts: SupervisorHttpOptions): Promise<SupervisorHttp> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const answer = (status: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(status, { 'content-type': type }).end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return answer(405, 'method not allowed\n');
    if (path === '/livez') return answer(200, 'ok\n');
    if (path === '/readyz') {
      void readiness(opts).then(({ ready, body }) => answer(ready ? 200 : 503, body));
      return;
    }
    if (path === '/metrics') {
      void metrics(opts).then((text) => answer(200, text, 'text/plain; version=0.0.4; charset=utf-8'));
      return;
    }
    answer(404, 'not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new ConfigError(`--http-port ${opts.port}: cannot listen (${err.code ?? err.message})`, { cause: err })));
    server.listen(opts.port, opts.host, () => resolve());
  });
  const address = server.address();
  return { port: typeof address === 'object' && address !== null ? address.port : opts.port, close: () => closeServer(server) };
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

async function readiness(opts: SupervisorHttpOptions): Promise<{ ready: boolean; body: string }> {
  if (opts.draining()) return { ready: false, body: 'draining\n' };
  const children = opts.children();
  const states = await Promise.all(
    children.map(async (c) => {
      if (!c.running) return { ok: false, line: `${c.device}: not running` };
      const got = await get(c.port, '/readyz', opts.readyTimeoutMs ?? 1000);
      return got.status === 200 ? { ok: true, line: `${c.device}: ready` } : { ok: false, line: `${c.device}: ${got.status === 0 ? got.body : `${got.status} ${got.body.trim()}`}` };
    }),
  );
  return { ready: states.every((s) => s.ok), body: `${states.map((s) => s.line).join('\n')}\n` };
}

async function metrics(opts: SupervisorHttpOptions): Promise<string> {
  const children = opts.children();
  const scraped = await Promise.all(
    children.map(async (c): Promise<ChildExposition | undefined> => {
      if (!c.running) return undefined;
      const got = await get(c.port, '/metrics', opts.scrapeTimeoutMs ?? 3000);
      return got.status === 200 ? { device: c.device, text: got.body } : undefined;
    }),
  );
  const own = [
    '# HELP inferq_supervisor_child_restarts_total Times the supervisor restarted the child worker of a device after it exited unasked.',
    '# TYPE inferq_supervisor_child_restarts_total counter',
    ...children.map((c) => `inferq_supervisor_child_restarts_total{device="${escapeLabel(c.device)}"} ${c.restarts}`),
    '# HELP inferq_supervisor_children_up 1 when the child worker of a device runs and answered this scrape, else 0.',
    '# TYPE inferq_supervisor_children_up gauge',
    ...children.map((c, i) => `inferq_supervisor_children_up{device="${escapeLabel(c.device)}"} ${scraped[i] === undefined ? 0 : 1}`),
  ].join('\n');
  return mergeExpositions([...scraped.filter((s) => s !== undefined), { device: '', text: own }]);
}

/** GET http://127.0.0.1:<port><path>; status 0 (and the reason as body) when it fails or times out. */
async function get(port: number, path: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(timeoutMs) });
    return { status: res.status, body: await res.text() };
  } catch (err) {
    const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err;
    const why = cause instanceof Error && cause.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : cause instanceof Error ? cause.message : String(cause);
    return { status: 0, body: why };
  }
}
