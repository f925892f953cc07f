/** What the test servers share: Maven-fetched jar folders, running a command, and stopping a child process. */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { onceUnderLock } from './lock.js';

const MAVEN_TIMEOUT_MS = 20 * 60_000;

export const cacheRoot = (): string => process.env['INFERQ_CACHE'] ?? join(homedir(), '.cache', 'inferq');

export interface MavenLibs {
  /** Cache folder name, e.g. "kafka-3.9.1". */
  readonly name: string;
  /** The throw-away pom to copy dependencies of. */
  readonly pom: string;
  /** -D properties for the pom (versions). */
  readonly properties: Readonly<Record<string, string>>;
  /** For messages: what is fetched, and the variable that points the suites elsewhere. */
  readonly what: string;
  readonly instead: string;
}

/**
 * Fetches a pom's runtime dependencies once (`mvn dependency:copy-dependencies`) into
 * ~/.cache/inferq/<name>/libs; a `.complete` marker makes a half-finished download retry.
 * A lock keeps two processes (a suite's own server and a shared one) from fetching at once;
 * nothing here blocks the event loop (the vitest main process answers its workers meanwhile).
 */
export async function mavenLibs(m: MavenLibs): Promise<string> {
  const dir = join(cacheRoot(), m.name);
  const libs = join(dir, 'libs');
  const done = join(dir, '.complete');
  const fetched = (): Promise<boolean> => Promise.resolve(existsSync(done));
  if (await fetched()) return libs;
  if ((await runCommand('java', ['-version'])).code !== 0) throw new Error(`java is not on PATH: ${m.what} needs Java 17 (or set ${m.instead})`);
  await mkdir(dir, { recursive: true });
  await onceUnderLock(join(cacheRoot(), `${m.name}.lock`), { done: fetched, waitMs: MAVEN_TIMEOUT_MS }, async () => {
    console.error(`[test/infra] fetching ${m.what} jars from Maven Central into ${libs} (once)`);
    const props = Object.entries(m.properties).map(([k, v]) => `-D${k}=${v}`);
    const r = await runCommand('mvn', ['-q', '-B', '-f', m.pom, 'dependency:copy-dependencies', '-DincludeScope=runtime', ...props, `-DoutputDirectory=${libs}`], { timeoutMs: MAVEN_TIMEOUT_MS, inherit: true });
    if (r.code !== 0) throw new Error(`mvn could not fetch the ${m.what} jars (exit ${r.code ?? r.signal}); is Maven Central reachable? Or set ${m.instead}`);
    await writeFile(done, new Date().toISOString());
  });
  return libs;
}

export interface CommandResult {
  /** The exit status, or null when a signal (or the timeout) ended it. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly output: string;
}

/**
 * Runs a command to its end without blocking the event loop; `output` is its stdout and
 * stderr (the last 16 kB), empty with `inherit`. A failure to spawn resolves with code null.
 */
export function runCommand(cmd: string, args: readonly string[], options: { timeoutMs?: number; inherit?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: options.inherit === true ? ['ignore', 'inherit', 'inherit'] : ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
    let output = '';
    const keep = (d: Buffer): void => {
      output = (output + d.toString()).slice(-16_000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, output: `${cmd}: ${err.message}` });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output });
    });
  });
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
export async function stopChild(proc: ChildProcess | undefined, graceMs: number): Promise<void> {
  if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const kill = setTimeout(() => proc.kill('SIGKILL'), graceMs);
    proc.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    proc.kill('SIGTERM');
  });
}
