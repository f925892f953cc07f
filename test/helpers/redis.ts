/** Helpers for suites that run against the real Redis started by test/infra. */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { cliArgv, REPO_ROOT } from './cli.js';

/** A fresh queue name per test: suites never see each other's jobs. */
export function queueName(prefix = 'q'): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** Deletes every key of a queue (BullMQ's and ours) after a test. */
export async function dropQueue(url: string, queue: string, prefix = 'inferq'): Promise<void> {
  const r = new Redis(url);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:${queue}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await r.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
}

/** Polls `check` until it returns true, failing after `timeoutMs` with `what`. */
export async function waitFor(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 60_000, everyMs = 50): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Reads a whole stream: entry id and fields (as strings, binary fields as Buffers). */
export async function readStream(r: Redis, stream: string): Promise<{ entry: string; fields: Map<string, Buffer> }[]> {
  const out: { entry: string; fields: Map<string, Buffer> }[] = [];
  let start = '-';
  for (;;) {
    const page = (await r.xrangeBuffer(stream, start, '+', 'COUNT', 5000)) as [Buffer, Buffer[]][];
    for (const [id, flat] of page) {
      const fields = new Map<string, Buffer>();
      for (let i = 0; i + 1 < flat.length; i += 2) fields.set(flat[i]!.toString(), flat[i + 1]!);
      out.push({ entry: id.toString(), fields });
    }
    if (page.length < 5000) return out;
    start = `(${page[page.length - 1]![0].toString()}`;
  }
}

export interface WorkerProcess {
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
}

/** Starts `inferq worker` as a child process; `ready` resolves when it serves. */
export function startWorker(args: readonly string[]): WorkerProcess {
  const child = spawn(process.execPath, cliArgv(['worker', ...args]), {
    cwd: REPO_ROOT,
    env: { ...process.env, INFERQ_LOG_LEVEL: process.env['INFERQ_TEST_WORKER_LOG_LEVEL'] ?? 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('inferq worker: serving')) resolve();
    });
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => reject(new Error(`worker exited (${code}) before it was ready:\n${out}`)));
  });
  ready.catch(() => undefined);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { child, ready, exited, output: () => out };
}
