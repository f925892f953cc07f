/**
 * The SDK and the CLI as a user gets them: `npm pack` of the three workspaces, installed
 * with `npm install` into a fresh app folder outside this repository (no workspace, no
 * hoisted node_modules to lean on), then used from there against the test Redis.
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forwardMlp } from '../examples/build/onnx-builder.js';
import { redisServer } from './infra/servers.js';
import { REPO_ROOT } from './helpers/cli.js';
import { smallMlp, writeModel } from './helpers/models.js';
import { dropQueue, queueName, waitFor } from './helpers/redis.js';

const url = await redisServer();
const spec = smallMlp([4, 16, 2], 5);
const workersManifest = JSON.parse(await readFile(join(REPO_ROOT, 'workers', 'package.json'), 'utf8')) as { version: string; bin: Record<string, string> };

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * The environment of a user's shell: without the npm_* variables `npm test` exports (its
 * prefix, its config, ignore-scripts), which would point a child npm back at this repository.
 */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('npm_') && k !== 'INIT_CWD' && k !== 'INFERQ_LOG_LEVEL') env[k] = v;
  return { ...env, ...extra };
}

function run(cmd: string, args: readonly string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: options.cwd, env: options.env ?? userEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function ok(cmd: string, args: readonly string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<Run> {
  const r = await run(cmd, args, options);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} (in ${options.cwd}) exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** An app that uses only the installed @inferq/producer: enqueue() with a reply stream it subscribes to, then predict(). */
const APP = `
import { Producer } from '@inferq/producer';

const [url, queue, stream, rows] = process.argv.slice(2);
const x = JSON.parse(rows);
const plain = (r) => ({ id: r.id, ok: r.ok, model: r.model, version: r.version, score: { dtype: r.outputs.score.dtype, shape: r.outputs.score.shape, data: Array.from(r.outputs.score.data) } });
const producer = new Producer({ redis: url, queue });
try {
  let sub;
  const replied = new Promise((resolve) => (sub = producer.subscribe(stream, resolve, { group: 'app' })));
  const id = await producer.enqueue('mlp', x, { replyTo: stream });
  const enqueued = plain(await replied);
  await sub.close();
  const predicted = plain(await producer.predict('mlp', x, { timeoutMs: 30000 }));
  const resolved = { producer: import.meta.resolve('@inferq/producer'), shared: import.meta.resolve('@inferq/shared') };
  process.stdout.write(JSON.stringify({ id, enqueued, predicted, resolved }));
} finally {
  await producer.close();
}
`;

let temp: string;
let app: string;
let inferq: string;

beforeAll(async () => {
  temp = await mkdtemp(join(tmpdir(), 'inferq-install-'));
  app = join(temp, 'app');
  const packs = join(temp, 'packs');
  await mkdir(app);
  await mkdir(packs);
  // Incremental: a no-op when npm test already built.
  await ok('npm', ['run', 'build'], { cwd: REPO_ROOT, timeoutMs: 240_000 });
  const packed = await ok('npm', ['pack', '--json', '--pack-destination', packs, '-w', 'shared', '-w', 'producer', '-w', 'workers'], { cwd: REPO_ROOT });
  const tarballs = (JSON.parse(packed.stdout) as { filename: string }[]).map((p) => join(packs, p.filename));
  expect(tarballs).toHaveLength(3);
  await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'inferq-install-test-app', private: true, type: 'module' }));
  // Dependencies come from the registry (the npm cache first). ONNXRUNTIME_NODE_INSTALL=skip: no CUDA download, as on a CPU host.
  await ok('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', ...tarballs], {
    cwd: app,
    env: userEnv({ ONNXRUNTIME_NODE_INSTALL: 'skip' }),
    timeoutMs: 280_000,
  });
  await writeFile(join(app, 'app.mjs'), APP);
  inferq = join(app, 'node_modules', '.bin', 'inferq');
}, 600_000);

afterAll(async () => {
  if (temp !== undefined) await rm(temp, { recursive: true, force: true });
});

describe('installed from npm pack tarballs into an app outside the repository', () => {
  it('the inferq bin runs: --version prints the CLI package version, --help names the global options and commands', async () => {
    const version = await ok(inferq, ['--version'], { cwd: app });
    expect(version.stdout).toBe(`${workersManifest.version}\n`);
    const installed = JSON.parse(await readFile(join(app, 'node_modules', '@inferq', 'workers', 'package.json'), 'utf8')) as { version: string };
    expect(installed.version).toBe(workersManifest.version);
    const help = await ok(inferq, ['--help'], { cwd: app });
    for (const word of ['--version', '--log-level', 'predict', 'precompute', 'schedule', 'worker']) expect(help.stdout).toContain(word);
  });

  it('an app enqueue()s and predict()s through a worker started from the installed CLI; replies match a direct forward pass', async () => {
    const repo = join(temp, 'models');
    await writeModel(repo, 'mlp', '1', spec);
    const queue = queueName('install');
    const stream = `inferq:${queue}:app-replies`;
    // $INFERQ_LOG_LEVEL says error, the flag says info: the flag wins, so the worker logs its model load.
    const worker = spawn(inferq, ['worker', '--log-level', 'info', '--transport', 'redis', '--redis', url, '--queue', queue, '--model-repo', repo, '--models', 'mlp'], {
      cwd: app,
      env: userEnv({ INFERQ_LOG_LEVEL: 'error' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    worker.stdout.on('data', (d: Buffer) => (out += d.toString()));
    worker.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => worker.once('exit', (code) => resolve(code)));
    try {
      await waitFor(() => out.includes('inferq worker: serving') || worker.exitCode !== null, 'the installed worker to serve', 60_000);
      expect(out, err).toContain('inferq worker: serving');
      await waitFor(() => /"level":30[^\n]*"msg":"model loaded"/.test(err), 'the worker to log its model load at info', 10_000);

      const x = [
        [0.1, 0.2, 0.3, 0.4],
        [-1, 0.5, 2, -0.25],
        [3, -2, 1, 0],
      ];
      const r = await ok('node', ['app.mjs', url, queue, stream, JSON.stringify(x)], { cwd: app });
      const got = JSON.parse(r.stdout) as {
        id: string;
        enqueued: { id: string; ok: boolean; model: string; version: string; score: { dtype: string; shape: number[]; data: number[] } };
        predicted: { id: string; ok: boolean; model: string; version: string; score: { dtype: string; shape: number[]; data: number[] } };
        resolved: { producer: string; shared: string };
      };
      // The app loaded the installed packages, not this repository's.
      const appDir = await realpath(app);
      for (const resolved of [got.resolved.producer, got.resolved.shared]) expect(await realpath(fileURLToPath(resolved))).toContain(join(appDir, 'node_modules', '@inferq'));
      expect(got.enqueued.id).toBe(got.id);
      const want = Array.from(forwardMlp(spec, { features: Float32Array.from(x.flat()) }, x.length));
      for (const reply of [got.enqueued, got.predicted]) {
        expect(reply).toMatchObject({ ok: true, model: 'mlp', version: '1', score: { dtype: 'float32', shape: [3, 2] } });
        expect(reply.score.data).toHaveLength(want.length);
        reply.score.data.forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThan(1e-5));
      }
      worker.kill('SIGTERM');
      expect(await exited, err).toBe(0);
    } finally {
      if (worker.exitCode === null && worker.signalCode === null) worker.kill('SIGKILL');
      await exited;
      await dropQueue(url, queue);
    }
  });

  it('predict runs offline; --log-level quieter than $INFERQ_LOG_LEVEL wins; a bad level is refused naming it (flag or environment)', async () => {
    const predict = (extra: string[], env: Record<string, string>, output: string): Promise<Run> =>
      run(
        inferq,
        [...extra, 'predict', '--model-repo', join(REPO_ROOT, 'examples', 'models'), '--model', 'digit-tags', '--input', join(REPO_ROOT, 'examples', 'data', 'digits.parquet'), '--output', join(temp, output), '--no-progress'],
        { cwd: app, env: userEnv(env) },
      );
    // (The worker test above covers a flag louder than the environment.)
    const quiet = await predict(['--log-level', 'error'], { INFERQ_LOG_LEVEL: 'info' }, 'out.parquet');
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(quiet.stdout).toContain('inferq predict: 1,797 rows');
    expect(quiet.stderr).toBe('');

    const badFlag = await predict(['--log-level', 'chatty'], {}, 'bad-flag.parquet');
    expect(badFlag.code).toBe(1);
    expect(badFlag.stderr).toContain("option '--log-level <level>' argument 'chatty' is invalid");
    const badEnv = await predict([], { INFERQ_LOG_LEVEL: 'chatty' }, 'bad-env.parquet');
    expect(badEnv.code).toBe(1);
    expect(badEnv.stderr).toContain("value 'chatty' from env 'INFERQ_LOG_LEVEL' is invalid");
  });
});

describe('the inferq bin in this repository', () => {
  it('is a committed file, so npm links it at install time in a fresh clone, before anything is built', async () => {
    const bin = workersManifest.bin['inferq']!;
    const tracked = await ok('git', ['ls-files', '--error-unmatch', join('workers', bin)], { cwd: REPO_ROOT });
    expect(tracked.stdout.trim()).toBe('workers/bin/inferq.js');
  });

  it('says in one line to run `npm run build` when dist/ is missing', async () => {
    const pkg = join(temp, 'unbuilt');
    await mkdir(join(pkg, 'bin'), { recursive: true });
    await writeFile(join(pkg, 'package.json'), JSON.stringify({ type: 'module' }));
    await copyFile(join(REPO_ROOT, 'workers', 'bin', 'inferq.js'), join(pkg, 'bin', 'inferq.js'));
    const r = await run('node', [join(pkg, 'bin', 'inferq.js'), '--help'], { cwd: pkg });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('inferq: the CLI is not built yet: run `npm run build` in the inferq repository first\n');
  });
});
