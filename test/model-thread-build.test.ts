/**
 * The model thread from the build: `npm run build` emits dist/runners/onnx/thread.js, which the
 * built worker-session starts, and the built CLI predicts with it under plain node.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Field, FixedSizeList, Float32, RecordBatch, Schema, Struct, Utf8, makeData, vectorFromArray } from 'apache-arrow';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { createParquetWriter, openParquet } from '@inferq/workers';
import { buildMlp, forwardMlp } from '../examples/build/onnx-builder.js';
import { REPO_ROOT } from './helpers/cli.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';

interface BuiltSession {
  run(feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>>;
  release(): Promise<void>;
}
interface BuiltWorkerSession {
  threadEntry(): URL;
  workerSessionFactory(model: Uint8Array, options: { executionProviders: string[] }): Promise<BuiltSession>;
}

const DIST = join(REPO_ROOT, 'workers', 'dist', 'runners', 'onnx');
const spec = smallMlp([4, 16, 3], 7);
const model = buildMlp(spec);

/** `rows` rows of 4 features, different in every row. */
function features(rows: number): Float32Array {
  return Float32Array.from({ length: rows * 4 }, (_, i) => Math.sin(i * 0.37) * 3);
}

/** Runs `x` on `session` and checks the scores against the pure-JS forward pass. */
async function expectScores(session: BuiltSession, x: Float32Array): Promise<void> {
  const rows = x.length / 4;
  const out = await session.run({ features: new ort.Tensor('float32', x, [rows, 4]) });
  expect(out['score']!.dims).toEqual([rows, 3]);
  expectClose(out['score']!.data as Float32Array, forwardMlp(spec, { features: x }, rows));
}

function expectClose(got: ArrayLike<number>, want: Float32Array): void {
  expect(got).toHaveLength(want.length);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
  expect(worst).toBeLessThan(1e-5);
}

function run(args: readonly string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(args[0]!, args.slice(1), { cwd: REPO_ROOT, env: { ...process.env, INFERQ_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A Parquet file of `x` as a fixed_size_list<float32>[4] column "features", with an id column. */
async function writeFeatures(path: string, x: Float32Array): Promise<void> {
  const rows = x.length / 4;
  const writer = await createParquetWriter(path, { compression: 'snappy' });
  const listType = new FixedSizeList(4, new Field('item', new Float32(), false));
  const fields = [new Field('id', new Utf8(), false), new Field('features', listType, false)];
  const ids = vectorFromArray(Array.from({ length: rows }, (_, i) => `row-${i}`), new Utf8());
  const list = makeData({ type: listType, length: rows, child: makeData({ type: new Float32(), length: x.length, data: x }) });
  await writer.write(new RecordBatch(new Schema(fields), makeData({ type: new Struct(fields), length: rows, nullCount: 0, children: [ids.data[0]!, list] })));
  await writer.close();
}

describe('the model thread from the build', () => {
  it('npm run build emits thread.js beside worker-session.js, which starts it; the built CLI predicts with it under plain node', async () => {
    const build = await run(['npm', 'run', 'build'], 280_000);
    expect(build.code, build.stdout + build.stderr).toBe(0);
    // The build holds thread.js and no other entry: a thread started from dist can only be it.
    expect(existsSync(join(DIST, 'thread.js'))).toBe(true);
    expect(existsSync(join(DIST, 'thread.ts'))).toBe(false);
    expect(existsSync(join(DIST, 'thread-from-source.mjs'))).toBe(false);
    const built = (await import(pathToFileURL(join(DIST, 'worker-session.js')).href)) as BuiltWorkerSession;
    expect(built.threadEntry().href).toBe(pathToFileURL(join(DIST, 'thread.js')).href);
    const session = await built.workerSessionFactory(model, { executionProviders: ['cpu'] });
    try {
      await expectScores(session, features(64));
    } finally {
      await session.release();
    }

    const dir = await tempDir();
    const repo = join(dir, 'models');
    await writeModel(repo, 'm', '1', spec);
    const x = features(5000);
    const input = join(dir, 'in.parquet');
    const output = join(dir, 'out.parquet');
    await writeFeatures(input, x);
    const cli = join(REPO_ROOT, 'workers', 'dist', 'cli', 'main.js');
    const predict = await run([process.execPath, cli, 'predict', '--model-repo', repo, '--model', 'm', '--input', input, '--output', output, '--instances', '2', '--no-progress'], 120_000);
    expect(predict.code, predict.stderr).toBe(0);
    expect(predict.stdout).toMatch(/^inferq predict: 5,000 rows in /);
    const reader = await openParquet(output);
    const got: number[] = [];
    try {
      for await (const batch of reader.batches()) {
        const scores = batch.getChild('score')!;
        for (let i = 0; i < scores.length; i++) got.push(...(scores.get(i)!.toArray() as Float32Array));
      }
    } finally {
      await reader.close();
    }
    expectClose(got, forwardMlp(spec, { features: x }, 5000));
  }, 420_000);
});
