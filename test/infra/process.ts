/** What the test servers share: Maven-fetched jar folders, and stopping a child process. */
import { spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

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
 */
export function mavenLibs(m: MavenLibs): string {
  const dir = join(cacheRoot(), m.name);
  const libs = join(dir, 'libs');
  const done = join(dir, '.complete');
  if (existsSync(done)) return libs;
  if (spawnSync('java', ['-version'], { stdio: 'ignore' }).status !== 0) throw new Error(`java is not on PATH: ${m.what} needs Java 17 (or set ${m.instead})`);
  mkdirSync(dir, { recursive: true });
  console.error(`[test/infra] fetching ${m.what} jars from Maven Central into ${libs} (once)`);
  const props = Object.entries(m.properties).map(([k, v]) => `-D${k}=${v}`);
  const r = spawnSync('mvn', ['-q', '-B', '-f', m.pom, 'dependency:copy-dependencies', '-DincludeScope=runtime', ...props, `-DoutputDirectory=${libs}`], { stdio: 'inherit', timeout: 20 * 60_000 });
  if (r.status !== 0) throw new Error(`mvn could not fetch the ${m.what} jars (exit ${r.status}); is Maven Central reachable? Or set ${m.instead}`);
  writeFileSync(done, new Date().toISOString());
  return libs;
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
