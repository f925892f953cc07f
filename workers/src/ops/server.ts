/**
 * The ops endpoints of a long-running process, on node:http:
 *
 * ```
 *  GET /livez   200 "ok"                     while the event loop runs
 *  GET /readyz  200 "ready" | 503 <why>      see Health (starting, draining, source unreachable)
 *  GET /metrics 200 Prometheus text          the process's registry (prom-client)
 * ```
 *
 * Anything else is 404 (405 for a method other than GET or HEAD). Nothing here reads a
 * request body or a query: the endpoints take no input.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError } from '@inferq/shared';
import { deadlineRace } from '../deadline.js';
import type { Logger } from '../logging.js';
import type { Health } from './health.js';
import type { PrometheusMetrics } from './metrics.js';

export interface OpsServerOptions {
  /** TCP port; 0 picks a free one (tests). */
  readonly port: number;
  /** Default "0.0.0.0" (probes and scrapers come from outside the pod). */
  readonly host?: string;
  readonly health: Health;
  /** Default: /metrics answers 404. */
  readonly metrics?: PrometheusMetrics;
  readonly logger: Logger;
}

export interface OpsServer {
  /** The port it listens on. */
  readonly port: number;
  /** Stops listening and closes its connections by `deadline` (epoch ms). */
  close(deadline: number): Promise<void>;
}

/** Listens on the port; a port in use (or not allowed) is a ConfigError naming it. */
export async function startOpsServer(options: OpsServerOptions): Promise<OpsServer> {
  const { health, metrics, logger } = options;
  const host = options.host ?? '0.0.0.0';
  const server = createServer((req, res) => void answer(req, res, health, metrics, logger));
  // A scraper that keeps its connection open must not hold the process on close.
  server.keepAliveTimeout = 5000;
  await listen(server, options.port, host, logger);
  const port = (server.address() as AddressInfo).port;
  logger.info({ port, host }, 'ops endpoints: /livez /readyz /metrics');
  let closing: Promise<void> | undefined;
  return {
    port,
    close(deadline) {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        if ((await deadlineRace(closed, deadline)) === 'deadline') server.closeAllConnections();
      })();
      return closing;
    },
  };
}

function listen(server: Server, port: number, host: string, logger: Logger): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const why = err.code === 'EADDRINUSE' ? 'is in use (give each process its own --http-port, or 0 for none)' : `cannot be listened on (${err.code ?? err.message})`;
      reject(new ConfigError(`--http-port ${port}: port ${port} on ${host} ${why}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      // Rare once listening (EMFILE…): logged, never fatal to the worker.
      server.on('error', (err) => logger.warn({ err }, 'ops endpoints: server error'));
      resolve();
    });
  });
}

async function answer(req: IncomingMessage, res: ServerResponse, health: Health, metrics: PrometheusMetrics | undefined, logger: Logger): Promise<void> {
  const path = (req.url ?? '/').split('?', 1)[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'only GET and HEAD\n', { allow: 'GET, HEAD' });
  switch (path) {
    case '/livez':
      return send(res, 200, 'ok\n');
    case '/readyz': {
      const r = health.readiness();
      return send(res, r.ready ? 200 : 503, `${r.reason}\n`);
    }
    case '/metrics':
      if (metrics === undefined) break;
      try {
        const text = await metrics.text();
        return send(res, 200, text, { 'content-type': metrics.contentType });
      } catch (err) {
        logger.warn({ err }, '/metrics: collecting the metrics failed');
        return send(res, 500, 'collecting the metrics failed\n');
      }
  }
  send(res, 404, 'not found: try /livez, /readyz or /metrics\n');
}

function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', ...headers });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}
