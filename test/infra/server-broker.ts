/**
 * Shared test servers, started on demand and once per run. The broker lives in the vitest
 * main process (global-setup.ts), which outlives every test file; suites run in worker
 * processes and ask it over a Unix socket in a per-run folder (servers.ts):
 *
 *   suite (worker)  GET /kafka ──► broker (main) ──► first ask: start it; later asks: the same promise
 *                   ◄── 200 {"address":"127.0.0.1:port"} | 500 {"error":"…"}
 *
 * A server is therefore a child of the process that stops it at the end of the run, and a
 * kind nobody asks for is never started. A failed start is kept: every suite that asks gets
 * the same error at once instead of waiting for its own failing start.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, request } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface StartedServer {
  /** What the suites connect to: a URL, or a comma-separated broker list. */
  readonly address: string;
  /** Stops the server and deletes its data. */
  stop(): Promise<void>;
}

export type Starter = () => Promise<StartedServer>;

export interface ServerBroker {
  /** The Unix socket the suites ask on. */
  readonly socket: string;
  /** The kinds asked for so far, in order. */
  readonly asked: readonly string[];
  /** Refuses new asks, waits for starts in progress, stops every server started, deletes the run folder. */
  close(): Promise<void>;
}

export interface BrokerOptions {
  /** One line per start, for the run's log (default: stderr). */
  readonly log?: (line: string) => void;
}

export async function startServerBroker(starters: Readonly<Record<string, Starter>>, options: BrokerOptions = {}): Promise<ServerBroker> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const dir = await mkdtemp(join(tmpdir(), 'inferq-servers-'));
  const socket = join(dir, 'broker.sock');
  const started = new Map<string, Promise<StartedServer>>();
  const asked: string[] = [];
  let closing = false;

  const start = (kind: string, starter: Starter): Promise<StartedServer> => {
    let pending = started.get(kind);
    if (pending === undefined) {
      asked.push(kind);
      const t0 = Date.now();
      pending = Promise.resolve().then(starter).then((s) => {
        log(`[test/infra] ${kind} started on demand in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${s.address}`);
        return s;
      });
      started.set(kind, pending);
    }
    return pending;
  };

  const answer = (res: ServerResponse, status: number, body: Record<string, string>): void => {
    res.writeHead(status, { 'content-type': 'application/json', connection: 'close' }).end(JSON.stringify(body));
  };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const kind = (req.url ?? '').replace(/^\//, '');
    const starter = Object.hasOwn(starters, kind) ? starters[kind] : undefined;
    if (req.method !== 'GET' || starter === undefined) {
      answer(res, 404, { error: `no test server "${kind}" (known: ${Object.keys(starters).join(', ')})` });
    } else if (closing) {
      answer(res, 503, { error: `the test run is ending: ${kind} is not started any more` });
    } else {
      start(kind, starter).then(
        (s) => answer(res, 200, { address: s.address }),
        (err: unknown) => answer(res, 500, { error: `${kind} did not start: ${message(err)}` }),
      );
    }
  };

  const server = createServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket, () => {
      server.off('error', reject);
      resolve();
    });
  });

  const close = async (): Promise<void> => {
    closing = true;
    const listening = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    const stops = [...started.entries()].map(([kind, pending]) =>
      pending.then(
        (s) => s.stop().catch((err: unknown) => Promise.reject(new Error(`stopping ${kind}: ${message(err)}`, { cause: err }))),
        // A start that failed has no server to stop, and its error went to every suite that asked.
        () => undefined,
      ),
    );
    const results = await Promise.allSettled(stops);
    await listening;
    await rm(dir, { recursive: true, force: true });
    const failures = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    if (failures.length > 0) throw new AggregateError(failures, `stopping the test servers failed: ${failures.map(message).join('; ')}`);
  };
  return { socket, asked, close };
}

/** Asks the broker on `socket` for a server of `kind`, starting it if nobody asked before; resolves with its address. */
export function askBroker(socket: string, kind: string): Promise<string> {
  return new Promise((resolve, reject) => {
    // No timeout here: the broker bounds each start (and a first run fetches jars for minutes).
    const req = request({ socketPath: socket, path: `/${kind}`, method: 'GET', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('error', reject);
      res.on('end', () => {
        let parsed: { address?: unknown; error?: unknown };
        try {
          parsed = JSON.parse(body) as typeof parsed;
        } catch (err) {
          reject(new Error(`test server broker: unreadable answer for ${kind} (HTTP ${res.statusCode}): ${body.slice(0, 200)}`, { cause: err }));
          return;
        }
        if (res.statusCode === 200 && typeof parsed.address === 'string') resolve(parsed.address);
        else reject(new Error(typeof parsed.error === 'string' ? parsed.error : `test server broker: HTTP ${res.statusCode} for ${kind}`));
      });
    });
    req.on('error', (err) => reject(new Error(`test server broker at ${socket} did not answer for ${kind}: ${err.message}`, { cause: err })));
    req.end();
  });
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));
