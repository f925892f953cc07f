/**
 * A real redis-server on a free loopback port, for tests. Installs the Debian
 * package when the binary is missing (root, apt reachable). `REDIS_URL` set in
 * the environment points the suites at an external Redis instead.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import type { ConnectionOptions } from 'node:tls';
import { onceUnderLock } from './lock.js';
import { cacheRoot, runCommand, stopChild } from './process.js';
import type { CommandResult } from './process.js';
import type { TestCerts } from './tls.js';

export interface RedisServer {
  readonly url: string;
  readonly port: number;
  /** Stops the server (SIGTERM, then SIGKILL after 5 s). */
  stop(): Promise<void>;
  /** Starts it again on the same port (for restart tests). */
  start(): Promise<void>;
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

async function findRedisBinary(): Promise<string | undefined> {
  for (const p of ['/usr/bin/redis-server', '/usr/local/bin/redis-server']) if (existsSync(p)) return p;
  const which = await runCommand('sh', ['-c', 'command -v redis-server']);
  return which.code === 0 && which.output.trim() !== '' ? which.output.trim() : undefined;
}

/** redis-server's path; installs the Debian package once (under a lock: dpkg allows one install at a time). */
async function redisBinary(): Promise<string> {
  const found = await findRedisBinary();
  if (found !== undefined) return found;
  await mkdir(cacheRoot(), { recursive: true });
  const installed = async (): Promise<boolean> => (await findRedisBinary()) !== undefined;
  await onceUnderLock(join(cacheRoot(), 'redis-apt.lock'), { done: installed, waitMs: 10 * 60_000 }, async () => {
    console.error('[test/infra] redis-server not found: installing the Debian package (apt-get install -y redis-server)');
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const install = (): Promise<CommandResult> => runCommand('apt-get', ['install', '-y', '--no-install-recommends', 'redis-server'], { inherit: true, env });
    let r = await install();
    if (r.code !== 0) {
      await runCommand('apt-get', ['update'], { inherit: true, env });
      r = await install();
    }
    if (r.code !== 0) throw new Error('could not install redis-server with apt-get; install it, or set REDIS_URL to an external Redis');
  });
  const bin = await findRedisBinary();
  if (bin === undefined) throw new Error('redis-server is still not on PATH after apt-get install; install it, or set REDIS_URL to an external Redis');
  return bin;
}

/** Sends PING until PONG comes back (over TLS with `tls`), or fails after `timeoutMs`. */
export async function waitForRedis(port: number, timeoutMs = 15_000, tls?: ConnectionOptions): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock: Socket = tls === undefined ? createConnection({ host: '127.0.0.1', port }) : tlsConnect({ ...tls, host: '127.0.0.1', port });
      let buf = '';
      sock.setTimeout(1000);
      sock.on(tls === undefined ? 'connect' : 'secureConnect', () => sock.write('PING\r\n'));
      sock.on('data', (d) => {
        buf += d.toString();
        if (buf.includes('\r\n')) {
          sock.destroy();
          resolve(buf.startsWith('+PONG'));
        }
      });
      sock.on('error', () => resolve(false));
      sock.on('timeout', () => {
        sock.destroy();
        resolve(false);
      });
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`redis on 127.0.0.1:${port} did not answer PING within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface StartRedisOptions {
  /**
   * TLS only (`--port 0 --tls-port P`, URL `rediss://`), with the server certificate of
   * `certs`; `requireClientCert` makes it refuse clients without one signed by the CA.
   */
  readonly tls?: { readonly certs: TestCerts; readonly requireClientCert?: boolean };
}

export async function startRedis(options: StartRedisOptions = {}): Promise<RedisServer> {
  const bin = await redisBinary();
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'inferq-redis-'));
  const tls = options.tls;
  const listen =
    tls === undefined
      ? ['--port', String(port)]
      : ['--port', '0', '--tls-port', String(port), '--tls-cert-file', tls.certs.serverCertFile, '--tls-key-file', tls.certs.serverKeyFile, '--tls-ca-cert-file', tls.certs.caFile, '--tls-auth-clients', tls.requireClientCert === true ? 'yes' : 'no'];
  const probe: ConnectionOptions | undefined = tls === undefined ? undefined : { ca: tls.certs.ca, cert: tls.certs.clientCert, key: tls.certs.clientKey };
  let child: ChildProcess | undefined;
  let log = '';
  const start = async (): Promise<void> => {
    log = '';
    const proc = spawn(bin, [...listen, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', dir, '--protected-mode', 'no'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc.stdout?.on('data', (d: Buffer) => (log += d.toString()).slice(-4000));
    proc.stderr?.on('data', (d: Buffer) => (log += d.toString()).slice(-4000));
    child = proc;
    const exited = new Promise<never>((_, reject) => proc.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${log}`))));
    exited.catch(() => undefined);
    await Promise.race([waitForRedis(port, 15_000, probe), exited]);
  };
  const stop = async (): Promise<void> => {
    const proc = child;
    child = undefined;
    await stopChild(proc, 5000);
  };
  await start();
  return { url: `${tls === undefined ? 'redis' : 'rediss'}://127.0.0.1:${port}`, port, stop, start };
}
