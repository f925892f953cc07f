/** The ops endpoints over real HTTP on a loopback port: routes, status codes, bodies, a port in use, close with a connection open. */
import { request } from 'node:http';
import { Agent } from 'node:http';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '@inferq/shared';
import { silentLogger } from '../logging.js';
import { Health } from './health.js';
import { PrometheusMetrics } from './metrics.js';
import { startOpsServer } from './server.js';
import type { OpsServer } from './server.js';

const servers: OpsServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close(Date.now() + 1000);
});

interface Reply {
  status: number;
  body: string;
  type: string | undefined;
}

function get(port: number, path: string, method = 'GET', agent?: Agent): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, ...(agent === undefined ? {} : { agent }) }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: res.headers['content-type'] }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function start(health = new Health(['mlp'])): Promise<{ port: number; health: Health; metrics: PrometheusMetrics }> {
  const metrics = new PrometheusMetrics({ device: 'cuda:1', logger: silentLogger(), processMetrics: false });
  metrics.setReadiness(() => health.readiness().ready);
  const server = await startOpsServer({ port: 0, host: '127.0.0.1', health, metrics, logger: silentLogger() });
  servers.push(server);
  return { port: server.port, health, metrics };
}

describe('ops server', () => {
  it('answers /livez always, /readyz 503 with the reason until ready, and /metrics with inferq_ready following it', async () => {
    const { port, health } = await start();
    expect(await get(port, '/livez')).toMatchObject({ status: 200, body: 'ok\n' });
    expect(await get(port, '/readyz')).toMatchObject({ status: 503, body: 'starting: loading and warming mlp\n' });
    let metrics = await get(port, '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.type).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(metrics.body).toContain('inferq_ready{device="cuda:1"} 0');

    health.modelsReady();
    let connected = true;
    health.serving(() => (connected ? { connected: true } : { connected: false, reason: 'redis 127.0.0.1:9 is reconnecting' }));
    expect(await get(port, '/readyz')).toMatchObject({ status: 200, body: 'ready\n' });
    metrics = await get(port, '/metrics');
    expect(metrics.body).toContain('inferq_ready{device="cuda:1"} 1');

    connected = false;
    expect(await get(port, '/readyz')).toMatchObject({ status: 503, body: 'source unreachable: redis 127.0.0.1:9 is reconnecting\n' });
    connected = true;
    health.draining();
    expect(await get(port, '/readyz')).toMatchObject({ status: 503, body: 'draining\n' });
    expect(await get(port, '/livez')).toMatchObject({ status: 200 });
  });

  it('has nothing else: 404 for other paths, 405 for other methods, HEAD without a body, queries ignored', async () => {
    const { port } = await start();
    expect((await get(port, '/')).status).toBe(404);
    expect((await get(port, '/metrics/../etc/passwd')).status).toBe(404);
    expect((await get(port, '/livez', 'POST')).status).toBe(405);
    expect(await get(port, '/livez', 'HEAD')).toMatchObject({ status: 200, body: '' });
    expect((await get(port, '/livez?x=1')).status).toBe(200);
  });

  it('a port in use is a ConfigError naming the port', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as AddressInfo).port;
    try {
      const err = await startOpsServer({ port, host: '127.0.0.1', health: new Health(), logger: silentLogger() }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toBe(`--http-port ${port}: port ${port} on 127.0.0.1 is in use (give each process its own --http-port, or 0 for none)`);
    } finally {
      blocker.close();
    }
  });

  it('closes by its deadline though a client keeps a connection open', async () => {
    const metrics = new PrometheusMetrics({ device: 'cpu', logger: silentLogger(), processMetrics: false });
    const server = await startOpsServer({ port: 0, host: '127.0.0.1', health: new Health(), metrics, logger: silentLogger() });
    const agent = new Agent({ keepAlive: true });
    expect((await get(server.port, '/metrics', 'GET', agent)).status).toBe(200);
    const started = Date.now();
    await server.close(Date.now() + 300);
    expect(Date.now() - started).toBeLessThan(2000);
    await expect(get(server.port, '/livez')).rejects.toThrow(/ECONNREFUSED/);
    agent.destroy();
  });
});
