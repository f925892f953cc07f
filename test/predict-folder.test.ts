/**
 * `inferq predict` over a folder or glob (local and HDFS): one part file per task, `_SUCCESS`
 * when all are there, a rerun resumes; the parts hold exactly the rows a single-file predict of
 * the same rows gives. Also the task API the distributed workers use (runPredictTask,
 * finishPredictOutput) and pyarrow reading the folder as a dataset.
 */
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Field, FixedSizeList, Float32, Int32, RecordBatch, Schema, Struct, makeData } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataIOError, InvalidInputError } from '@inferq/shared';
import { ModelRepository, WebHdfs, loadModel, silentLogger } from '@inferq/workers';
import type { LoadedModel } from '../workers/src/models/loaded-model.js';
import { createParquetWriter, openParquet } from '../workers/src/io/parquet.js';
import { parsePredictTask, planPredict } from '../workers/src/predict/plan.js';
import { predictParquet } from '../workers/src/predict/predict.js';
import { finishPredictOutput, runPredictTask } from '../workers/src/predict/task.js';
import { localInput } from '../workers/src/predict/inputs.js';
import { hdfsServer, redisServer } from './infra/servers.js';
import { ensurePython, runPython } from './infra/python.js';
import { runCli } from './helpers/cli.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { dropQueue, queueName, startWorker } from './helpers/redis.js';

const WIDTH = 4;
let repo: string;
let model: LoadedModel;

beforeAll(async () => {
  repo = join(await tempDir(), 'models');
  await writeModel(repo, 'mlp', '1', smallMlp([WIDTH, 16, 1], 11));
  model = await loadModel(new ModelRepository(repo), 'mlp', undefined, { device: { kind: 'cpu' }, logger: silentLogger(), instances: 1, intraOpThreads: 1 });
  await ensurePython();
}, 600_000);

afterAll(async () => {
  await model?.close();
});

const fields = (xType: Float32 = new Float32()): Field[] => [new Field('id', new Int32(), false), new Field('features', new FixedSizeList(WIDTH, new Field('item', xType, false)), false)];

/** Rows [from, from + n): id = row number, features = sin of it. */
function rowsBatch(from: number, n: number, fs = fields()): RecordBatch {
  const id = Int32Array.from({ length: n }, (_, i) => from + i);
  const x = Float32Array.from({ length: n * WIDTH }, (_, i) => Math.sin(from * WIDTH + i));
  const listType = fs[1]!.type as FixedSizeList;
  const features = makeData({ type: listType, length: n, nullCount: 0, child: makeData({ type: new Float32(), length: n * WIDTH, data: x }) });
  return new RecordBatch(new Schema(fs), makeData({ type: new Struct(fs), length: n, nullCount: 0, children: [makeData({ type: new Int32(), length: n, data: id }), features] }));
}

async function writeRows(path: string, from: number, n: number, groupRows: number): Promise<void> {
  const w = await createParquetWriter(path, { rowGroupRows: groupRows });
  await w.write(rowsBatch(from, n));
  await w.close();
}

/**
 * Three files with 3, 1 and 5 row groups (1,200 + 300 + 500 rows, ids continuing from file to
 * file), plus markers a reader skips, and the same rows in one file for the single-file reference.
 */
async function dataset(dir: string): Promise<{ folder: string; single: string }> {
  const folder = join(dir, 'in');
  await mkdir(join(folder, '_temporary'), { recursive: true });
  await writeRows(join(folder, 'a.parquet'), 0, 1200, 400);
  await writeRows(join(folder, 'b.parquet'), 1200, 300, 300);
  await writeRows(join(folder, 'c.parquet'), 1500, 500, 100);
  await writeFile(join(folder, '_SUCCESS'), '');
  await writeFile(join(folder, '_temporary', 'half-written.parquet'), 'not parquet');
  const single = join(dir, 'all.parquet');
  await writeRows(single, 0, 2000, 65_536);
  return { folder, single };
}

/** Every row of the files, in order: id and score. */
async function readRows(paths: readonly string[]): Promise<{ id: number[]; score: number[] }> {
  const id: number[] = [];
  const score: number[] = [];
  for (const p of paths) {
    const r = await openParquet(p);
    for await (const b of r.batches()) {
      id.push(...(b.getChild('id')!.toArray() as Int32Array));
      score.push(...(b.getChild('score')!.toArray() as Float32Array));
    }
    await r.close();
  }
  return { id, score };
}

/** Same rows, same scores: the reference runs other batch sizes and threads, so allow float rounding only. */
function expectScores(got: readonly number[], want: readonly number[]): void {
  expect(got).toHaveLength(want.length);
  const worst = got.reduce((m, v, i) => Math.max(m, Math.abs(v - want[i]!)), 0);
  expect(worst).toBeLessThan(1e-6);
}

const partFiles = async (dir: string): Promise<string[]> => (await readdir(dir)).filter((f) => f.startsWith('part-')).sort();

/** The reference: the concatenated rows predicted as one file. */
async function reference(dir: string, single: string): Promise<{ id: number[]; score: number[] }> {
  const out = join(dir, 'single-out.parquet');
  await predictParquet(model, { input: single, output: out });
  return readRows([out]);
}

describe('inferq predict over a folder', () => {
  it('writes one part per task (whole row groups), equal to a single-file predict of the same rows; a rerun resumes; --overwrite redoes', async () => {
    const dir = await tempDir();
    const { folder, single } = await dataset(dir);
    const out = join(dir, 'out');
    const args = ['predict', '--model-repo', repo, '--model', 'mlp', '--input', folder, '--output', `${out}/`, '--rows-per-part', '600', '--no-progress'];
    const first = await runCli(args, { timeoutMs: 240_000 });
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    // a.parquet: 400-row groups, two exceed 600 → 3 parts; b: 1; c: 5 × 100 = 500 → 1.
    expect(first.stdout).toMatch(/^inferq predict: 2,000 rows in .* → .*\/out\/part-00000…00004\.parquet \(5 parts from 3 files, 0 already there; [\d,]+ bytes written\)\n$/);
    const parts = await partFiles(out);
    expect(parts).toEqual(['part-00000.parquet', 'part-00001.parquet', 'part-00002.parquet', 'part-00003.parquet', 'part-00004.parquet']);
    // _temporary (skipped by readers) is where the marker was staged; nothing is left in it.
    expect((await readdir(out)).filter((f) => f !== '_temporary').sort()).toEqual(['_SUCCESS', ...parts]);
    expect(await readdir(join(out, '_temporary')).catch(() => [])).toEqual([]);
    const want = await reference(dir, single);
    const got = await readRows(parts.map((p) => join(out, p)));
    expect(got.id).toEqual(Array.from({ length: 2000 }, (_, i) => i));
    expectScores(got.score, want.score);
    // pyarrow reads the folder as one dataset (skipping _SUCCESS), in part order.
    const py = await runPython(`import sys, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
ids = t.column('id').to_pylist()
print(t.num_rows, ids == sorted(ids), t.column_names)`, [out]);
    expect(py.trim()).toBe("2000 True ['id', 'score']");

    // Resume: _SUCCESS and one part gone (a crash), another part planted: the planted one is kept, the lost one redone.
    const lost = await readFile(join(out, 'part-00002.parquet'));
    const keptMtime = (await stat(join(out, 'part-00000.parquet'))).mtimeMs;
    await writeFile(join(out, 'part-00001.parquet'), 'planted');
    await rm(join(out, '_SUCCESS'));
    await rm(join(out, 'part-00002.parquet'));
    const again = await runCli(args, { timeoutMs: 240_000 });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/\(5 parts from 3 files, 4 already there; [\d,]+ bytes written\)/);
    expect(again.stdout).toMatch(/^inferq predict: 400 rows in /); // only the lost part's rows were predicted
    expect(await readFile(join(out, 'part-00001.parquet'), 'utf8')).toBe('planted');
    expect((await stat(join(out, 'part-00000.parquet'))).mtimeMs).toBe(keptMtime);
    expect(await readFile(join(out, 'part-00002.parquet'))).toEqual(lost);
    expect(existsSync(join(out, '_SUCCESS'))).toBe(true);

    // Complete now: refused without --overwrite; --overwrite replaces every part.
    const refused = await runCli(args, { timeoutMs: 240_000 });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/_SUCCESS already exists; pass --overwrite/);
    const redo = await runCli([...args, '--overwrite'], { timeoutMs: 240_000 });
    expect(redo.code, redo.stderr).toBe(0);
    expectScores((await readRows(parts.map((p) => join(out, p)))).score, want.score);
  }, 600_000);

  it('refuses files whose columns differ (naming the file), a file output for a folder, and an output inside the input', async () => {
    const dir = await tempDir();
    const folder = join(dir, 'in');
    await mkdir(folder);
    await writeRows(join(folder, 'a.parquet'), 0, 10, 10);
    const w = await createParquetWriter(join(folder, 'b.parquet'));
    const bad = fields();
    bad[0] = new Field('key', new Int32(), false);
    await w.write(rowsBatch(0, 10, bad));
    await w.close();
    const run = (output: string): ReturnType<typeof runCli> => runCli(['predict', '--model-repo', repo, '--model', 'mlp', '--input', folder, '--output', output, '--no-progress'], { timeoutMs: 240_000 });
    const mismatch = await run(join(dir, 'out/'));
    expect(mismatch.code).toBe(1);
    expect(mismatch.stderr).toBe(`inferq: error: input "${join(folder, 'b.parquet')}": its columns differ from those of "${join(folder, 'a.parquet')}" (column 1 is "key" Int32, expected "id" Int32); every file of a predict input needs the same columns\n`);
    expect(existsSync(join(dir, 'out'))).toBe(false);
    const fileOut = await run(join(dir, 'out.parquet'));
    expect(fileOut.stderr).toMatch(/--input ".*in" is a folder or glob: --output ".*out\.parquet" must be a folder \(end it with "\/"\)/);
    await rm(join(folder, 'b.parquet'));
    const inside = await run(join(folder, 'preds/'));
    expect(inside.stderr).toMatch(/--output ".*in\/preds\/" lies inside --input ".*in": its parts would be read as input by a rerun/);
    expect(existsSync(join(folder, 'preds'))).toBe(false);
  }, 600_000);
});

describe('predict tasks (the API distributed workers call)', () => {
  it('runs a task into its part once: an existing part is skipped, a file changed since planning is refused, _SUCCESS only when all parts exist', async () => {
    const dir = await tempDir();
    const { folder, single } = await dataset(dir);
    const plan = await planPredict(folder, { targetRows: 600 });
    expect(plan.tasks).toHaveLength(5);
    // Tasks travel as JSON through the queue and come back valid.
    const tasks = plan.tasks.map((t) => parsePredictTask(JSON.parse(JSON.stringify(t))));
    expect(tasks).toEqual(plan.tasks);
    const out = join(dir, 'out');
    await mkdir(out);
    await writeFile(join(out, 'part-00003.parquet'), 'planted');
    expect(await finishPredictOutput(out, tasks.length)).toBe(false);
    // In reverse order, as a fleet of workers may finish them.
    for (const t of [...tasks].reverse()) {
      const r = await runPredictTask(model, t, { outputDir: out });
      expect([r.skipped, r.path, r.rows]).toEqual([t.index === 3, join(out, `part-0000${t.index}.parquet`), t.rows]);
    }
    expect(await readFile(join(out, 'part-00003.parquet'), 'utf8')).toBe('planted');
    expect(existsSync(join(out, '_SUCCESS'))).toBe(false);
    expect(await finishPredictOutput(out, tasks.length)).toBe(true);
    expect(await finishPredictOutput(out, tasks.length)).toBe(true);
    expect(existsSync(join(out, '_SUCCESS'))).toBe(true);
    const want = await reference(dir, single);
    const got = await readRows(['part-00000', 'part-00001', 'part-00002', 'part-00004'].map((p) => join(out, `${p}.parquet`)));
    expect(got.id).toEqual([...Array.from({ length: 1200 }, (_, i) => i), ...Array.from({ length: 500 }, (_, i) => 1500 + i)]);
    expectScores(got.score, [...want.score.slice(0, 1200), ...want.score.slice(1500)]);
    // A file rewritten after planning: the task's row count no longer matches.
    await writeRows(join(folder, 'b.parquet'), 1200, 299, 300);
    const err = await runPredictTask(model, tasks[3]!, { outputDir: join(dir, 'out2') }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataIOError);
    expect((err as Error).message).toBe(`input "${join(folder, 'b.parquet')}": row groups [0, 1) hold 299 rows, task 3 expected 300; was it rewritten after the run was planned?`);
    expect(existsSync(join(dir, 'out2', 'part-00003.parquet'))).toBe(false);
    expect(() => parsePredictTask({ ...tasks[0], rowGroups: [2, 1] })).toThrow(InvalidInputError);
  }, 300_000);
});

describe('inferq predict over a glob on HDFS', () => {
  const roots: string[] = [];
  let fs: WebHdfs;
  let hostPort: string;

  beforeAll(async () => {
    const url = await hdfsServer();
    hostPort = url.replace(/^http:\/\//, '');
    fs = new WebHdfs({ url, user: 'inferq-test' });
  });
  afterAll(async () => {
    for (const r of roots) await fs.delete(r, true).catch(() => undefined);
  });

  it('reads the matched files from HDFS and writes the parts and _SUCCESS there', async () => {
    const dir = await tempDir();
    const { folder, single } = await dataset(dir);
    const root = `/inferq-test/predict-folder-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
    roots.push(root);
    for (const name of ['a.parquet', 'b.parquet', 'c.parquet']) await fs.create(`${root}/in/${name}`, await readFile(join(folder, name)));
    await fs.create(`${root}/in/notes.parquet.txt`, new Uint8Array([1]));
    const res = await runCli(
      ['predict', '--model-repo', repo, '--model', 'mlp', '--input', `webhdfs://${hostPort}${root}/in/*.parquet`, '--output', `webhdfs://${hostPort}${root}/out/`, '--rows-per-part', '600', '--no-progress'],
      { timeoutMs: 240_000 },
    );
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/\(5 parts from 3 files, 0 already there; /);
    const names = (await fs.listStatus(`${root}/out`)).map((s) => s.pathSuffix).filter((n) => n !== '_temporary').sort();
    expect(names).toEqual(['_SUCCESS', 'part-00000.parquet', 'part-00001.parquet', 'part-00002.parquet', 'part-00003.parquet', 'part-00004.parquet']);
    const local = join(dir, 'from-hdfs');
    await mkdir(local);
    for (const n of names.slice(1)) await writeFile(join(local, n), await fs.open(`${root}/out/${n}`));
    const got = await readRows(names.slice(1).map((n) => join(local, n)));
    expect(got.id).toEqual(Array.from({ length: 2000 }, (_, i) => i));
    expectScores(got.score, (await reference(dir, single)).score);
  }, 600_000);

  it('a task copies only the footer and its own row groups from HDFS (a sparse local file)', async () => {
    const dir = await tempDir();
    const path = join(dir, 'three-groups.parquet');
    await writeRows(path, 0, 900, 300);
    const whole = await readFile(path);
    const root = `/inferq-test/predict-sparse-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
    roots.push(root);
    await fs.create(`${root}/f.parquet`, whole);
    const copy = await localInput(`webhdfs://${hostPort}${root}/f.parquet`, {}, [1, 2]);
    try {
      const bytes = await readFile(copy.path);
      expect(bytes.length).toBe(whole.length);
      const reader = await openParquet(copy.path);
      try {
        const ids: number[] = [];
        for await (const b of reader.batches({ rowGroups: [1, 2] })) ids.push(...(b.getChild('id')!.toArray() as Int32Array));
        expect(ids).toEqual(Array.from({ length: 300 }, (_, i) => 300 + i));
      } finally {
        await reader.close();
      }
      // Row group 0's bytes were not downloaded: the local copy holds zeros where the file has data.
      const firstGroup = whole.subarray(4, 64);
      expect(firstGroup.some((x) => x !== 0)).toBe(true);
      expect(bytes.subarray(4, 64).every((x) => x === 0)).toBe(true);
      expect(Buffer.compare(bytes.subarray(bytes.length - 64), whole.subarray(whole.length - 64))).toBe(0);
    } finally {
      await copy.release();
    }
  }, 120_000);
});

describe('inferq predict --distributed', () => {
  it('launches one queue task per part; a worker writes the same parts and _SUCCESS; --wait returns when complete', async () => {
    const url = await redisServer();
    const dir = await tempDir();
    const { folder, single } = await dataset(dir);
    const prefix = queueName('p');
    const queue = queueName('offline');
    const worker = startWorker(['--role', 'precompute', '--redis', url, '--prefix', prefix, '--queue', queue, '--model-repo', repo, '--allow-inputs', folder, '--allow-outputs', join(dir, 'out')]);
    try {
      await worker.ready;
      const args = ['predict', '--model-repo', repo, '--model', 'mlp', '--input', folder, '--output', `${join(dir, 'out')}/`, '--rows-per-part', '600', '--no-progress'];
      const res = await runCli([...args, '--distributed', '--wait', '--redis', url, '--prefix', prefix, '--queue', queue], { timeoutMs: 240_000 });
      expect(res.stderr).toBe('');
      expect(res.code).toBe(0);
      expect(res.stdout).toMatch(new RegExp(`^inferq predict: run \\S+: 5 tasks \\(0 done before\\), 2,000 rows; 5 tasks enqueued on ${queue} \\(0 already queued\\)\ninferq predict: run \\S+ \\(predict, .*\\): complete, 5/5 tasks`));
      const out = join(dir, 'out');
      const parts = await partFiles(out);
      expect(parts).toHaveLength(5);
      expect(existsSync(join(out, '_SUCCESS'))).toBe(true);
      const got = await readRows(parts.map((p) => join(out, p)));
      expect(got.id).toEqual(Array.from({ length: 2000 }, (_, i) => i));
      expectScores(got.score, (await reference(dir, single)).score);
      // Complete: a relaunch is refused like a local run; a file output cannot take parts.
      const again = await runCli([...args, '--distributed', '--redis', url, '--prefix', prefix, '--queue', queue], { timeoutMs: 240_000 });
      expect(again.code).toBe(1);
      expect(again.stderr).toMatch(/_SUCCESS already exists; pass --overwrite/);
    } finally {
      worker.child.kill('SIGTERM');
      await worker.exited;
      await dropQueue(url, queue, prefix);
    }
  }, 600_000);
});
