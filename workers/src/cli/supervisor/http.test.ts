import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '@inferq/shared';
import { startSupervisorHttp } from './http.js';
import type { ScrapedChild, SupervisorHttp } from './http.js';

/** A stand-in for a child worker's port: answers /readyz and /metrics as told, or never. */
async function fakeChild(answer: { ready: number; metrics: string } | 'hang'): Promise<{ port: number; server: Server }> {
  const server = createServer((req, res) => {
    if (answer === 'hang') return; // accepts the connection, never answers
    if (req.url === '/readyz') res.writeHead(answer.ready).end(answer.ready === 200 ? 'ok\n' : 'starting\n');
    else if (req.url === '/metrics') res.writeHead(200).end(answer.metrics);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no port');
  return { port: address.port, server };
}

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) {
    if ('closeAllConnections' in s) (s as Server).closeAllConnections();
    await s.close();
  }
});

const metricsOf = (device: string, jobs: number): string => `# HELP inferq_jobs_total Jobs.\n# TYPE inferq_jobs_total counter\ninferq_jobs_total{device="${device}",outcome="ok"} ${jobs}\n`;

async function supervisorPort(children: ScrapedChild[], draining = false): Promise<SupervisorHttp> {
  const http = await startSupervisorHttp({ port: 0, host: '127.0.0.1', children: () => children, draining: () => draining, scrapeTimeoutMs: 500, readyTimeoutMs: 500 });
  open.push(http);
  return http;
}

describe("the supervisor's port", () => {
  it('/metrics merges the children that answer, leaves out one that does not (in time), and says so in children_up', async () => {
    const a = await fakeChild({ ready: 200, metrics: metricsOf('cuda:0', 3) });
    const hung = await fakeChild('hang');
    const c = await fakeChild({ ready: 200, metrics: metricsOf('cuda:2', 4) });
    open.push(a.server, hung.server, c.server);
    const http = await supervisorPort([
      { device: 'cuda:0', port: a.port, running: true, restarts: 0 },
      { device: 'cuda:1', port: hung.port, running: true, restarts: 2 },
      { device: 'cuda:2', port: c.port, running: true, restarts: 0 },
      { device: 'cuda:3', port: c.port, running: false, restarts: 5 }, // waiting to be restarted: not asked
    ]);
    const started = Date.now();
    const res = await fetch(`http://127.0.0.1:${http.port}/metrics`);
    expect(Date.now() - started).toBeLessThan(3000); // the hung child cost one scrape timeout, not more
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toBe(
      [
        '# HELP inferq_jobs_total Jobs.',
        '# TYPE inferq_jobs_total counter',
        'inferq_jobs_total{device="cuda:0",outcome="ok"} 3',
        'inferq_jobs_total{device="cuda:2",outcome="ok"} 4',
        '# HELP inferq_supervisor_child_restarts_total Times the supervisor restarted the child worker of a device after it exited unasked.',
        '# TYPE inferq_supervisor_child_restarts_total counter',
        'inferq_supervisor_child_restarts_total{device="cuda:0"} 0',
        'inferq_supervisor_child_restarts_total{device="cuda:1"} 2',
        'inferq_supervisor_child_restarts_total{device="cuda:2"} 0',
        'inferq_supervisor_child_restarts_total{device="cuda:3"} 5',
        '# HELP inferq_supervisor_children_up 1 when the child worker of a device runs and answered this scrape, else 0.',
        '# TYPE inferq_supervisor_children_up gauge',
        'inferq_supervisor_children_up{device="cuda:0"} 1',
        'inferq_supervisor_children_up{device="cuda:1"} 0',
        'inferq_supervisor_children_up{device="cuda:2"} 1',
        'inferq_supervisor_children_up{device="cuda:3"} 0',
        '',
      ].join('\n'),
    );
  });

  it('/readyz is 200 only when every child is ready, and names each one that is not; /livez is 200', async () => {
    const ready = await fakeChild({ ready: 200, metrics: '' });
    const starting = await fakeChild({ ready: 503, metrics: '' });
    const hung = await fakeChild('hang');
    open.push(ready.server, starting.server, hung.server);
    const all = await supervisorPort([
      { device: 'cuda:0', port: ready.port, running: true, restarts: 0 },
      { device: 'cuda:1', port: ready.port, running: true, restarts: 0 },
    ]);
    const ok = await fetch(`http://127.0.0.1:${all.port}/readyz`);
    expect([ok.status, await ok.text()]).toEqual([200, 'cuda:0: ready\ncuda:1: ready\n']);
    const live = await fetch(`http://127.0.0.1:${all.port}/livez`);
    expect([live.status, await live.text()]).toEqual([200, 'ok\n']);
    expect((await fetch(`http://127.0.0.1:${all.port}/nope`)).status).toBe(404);

    const some = await supervisorPort([
      { device: 'cuda:0', port: ready.port, running: true, restarts: 0 },
      { device: 'cuda:1', port: starting.port, running: true, restarts: 0 },
      { device: 'cuda:2', port: hung.port, running: true, restarts: 0 },
      { device: 'cuda:3', port: ready.port, running: false, restarts: 1 },
    ]);
    const not = await fetch(`http://127.0.0.1:${some.port}/readyz`);
    expect([not.status, await not.text()]).toEqual([503, 'cuda:0: ready\ncuda:1: 503 starting\ncuda:2: no answer within 500 ms\ncuda:3: not running\n']);

    const draining = await supervisorPort([{ device: 'cuda:0', port: ready.port, running: true, restarts: 0 }], true);
    const drained = await fetch(`http://127.0.0.1:${draining.port}/readyz`);
    expect([drained.status, await drained.text()]).toEqual([503, 'draining\n']);
  });

  it('a port already taken is a ConfigError naming it', async () => {
    const taken = await fakeChild({ ready: 200, metrics: '' });
    open.push(taken.server);
    const failed = startSupervisorHttp({ port: taken.port, host: '127.0.0.1', children: () => [], draining: () => false });
    await expect(failed).rejects.toBeInstanceOf(ConfigError);
    await expect(failed).rejects.toThrow(`--http-port ${taken.port}: cannot listen (EADDRINUSE)`);
  });
});
