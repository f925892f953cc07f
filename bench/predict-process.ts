/**
 * `inferq predict` as a whole process against a plain Python script (pyarrow + onnxruntime) on the
 * same Parquet file and model, both timed from spawn to exit, alternating, median of the runs;
 * and the cold start of `inferq predict` on a 10-row file. Uses the built CLI (workers/bin/inferq.js,
 * `npm run build` first, as `npm run bench` does) and a Python with pyarrow and onnxruntime
 * (BENCH_PYTHON, default ~/.cache/inferq/venv/bin/python; the comparison is skipped without one).
 *
 *   node --conditions=inferq-source --import tsx bench/predict-process.ts
 *
 * Env: BENCH_QUICK=1 (100,000 rows), BENCH_PREDICT_ROWS, BENCH_PREDICT_RUNS (default 3), BENCH_PYTHON.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { homedir, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Field, FixedSizeList, Float32, RecordBatch, Schema, Struct, Utf8, makeData, vectorFromArray } from 'apache-arrow';
import { createParquetWriter } from '../workers/src/io/parquet.js';
import { buildMlp, randomMlp } from '../examples/build/onnx-builder.js';
import { writeModel } from '../test/helpers/models.js';
import { QUICK, fmt, table } from './common.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'workers/bin/inferq.js');
const ROWS = Number(process.env['BENCH_PREDICT_ROWS'] ?? (QUICK ? 100_000 : 1_000_000));
const RUNS = Number(process.env['BENCH_PREDICT_RUNS'] ?? 3);
const PYTHON = process.env['BENCH_PYTHON'] ?? join(homedir(), '.cache/inferq/venv/bin/python');
const SMALL = [64, 256, 128, 1];

/** The plain script a Python user would write: stream record batches, run the model, write (id, score). */
const PLAIN_PY = `
import sys, numpy as np, onnxruntime as ort, pyarrow as pa, pyarrow.parquet as pq
model, src, dst = sys.argv[1:4]
s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
w = None
for b in pq.ParquetFile(src).iter_batches(batch_size=65536, columns=["id", "features"]):
    x = b.column("features").flatten().to_numpy(zero_copy_only=False).reshape(len(b), -1)
    y = s.run(None, {"features": np.ascontiguousarray(x, dtype=np.float32)})[0].reshape(-1)
    t = pa.table({"id": b.column("id"), "score": pa.array(y, pa.float32())})
    w = w or pq.ParquetWriter(dst, t.schema)
    w.write_table(t)
w.close()
`;

async function writeInput(path: string, rows: number, width: number): Promise<void> {
  const writer = await createParquetWriter(path, { compression: 'snappy' });
  const chunk = 65_536;
  for (let at = 0; at < rows; at += chunk) {
    const n = Math.min(chunk, rows - at);
    const values = new Float32Array(n * width);
    for (let i = 0; i < values.length; i++) values[i] = Math.sin(at * width + i);
    const ids = vectorFromArray(Array.from({ length: n }, (_, i) => `row-${at + i}`), new Utf8());
    const item = makeData({ type: new Float32(), length: n * width, data: values });
    const listType = new FixedSizeList(width, new Field('item', new Float32(), false));
    const fields = [new Field('id', new Utf8(), false), new Field('features', listType, false)];
    const data = makeData({ type: new Struct(fields), length: n, nullCount: 0, children: [ids.data[0]!, makeData({ type: listType, length: n, child: item })] });
    await writer.write(new RecordBatch(new Schema(fields), data));
  }
  await writer.close();
}

/** CPU seconds (user + system) of this process's waited-for children, from /proc/self/stat (cutime, cstime). */
function childrenCpu(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[13]) + Number(fields[14])) / 100;
}

interface Timing {
  /** Seconds from spawn to exit. */
  readonly wall: number;
  /** CPU seconds of the process, all its threads (robust to other load on the machine, unlike wall). */
  readonly cpu: number;
}

/** One process from spawn to exit; throws with its output when it fails. */
function timed(cmd: string, args: string[]): Timing {
  const cpu0 = childrenCpu();
  const start = performance.now();
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', env: { ...process.env, INFERQ_LOG_LEVEL: 'warn' } });
  const wall = (performance.now() - start) / 1000;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}: ${(r.stderr || r.stdout).slice(-2000)}`);
  return { wall, cpu: childrenCpu() - cpu0 };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const walls = (ts: readonly Timing[]): number[] => ts.map((t) => t.wall);
const cpus = (ts: readonly Timing[]): number[] => ts.map((t) => t.cpu);
const list = (xs: readonly number[]): string => xs.map((s) => s.toFixed(2)).join(', ');

export async function predictProcessBench(): Promise<void> {
  console.log(`\ninferq predict, whole process — node ${process.version}, ${fmt(ROWS)} rows, ${RUNS} runs each, load average ${loadavg()[0]!.toFixed(2)}${QUICK ? ' (quick)' : ''}`);
  if (!existsSync(join(ROOT, 'workers/dist/cli/main.js'))) throw new Error('workers/dist is missing: run `npm run build` first');
  const dir = await mkdtemp(join(tmpdir(), 'inferq-bench-predict-'));
  try {
    const repo = join(dir, 'models');
    const spec = randomMlp(SMALL, 11);
    await writeModel(repo, 'small', '1', spec);
    const modelFile = join(dir, 'small.onnx');
    await writeFile(modelFile, buildMlp(spec));
    const input = join(dir, 'in.parquet');
    const tiny = join(dir, 'tiny.parquet');
    await writeInput(input, ROWS, SMALL[0]!);
    await writeInput(tiny, 10, SMALL[0]!);
    const script = join(dir, 'plain.py');
    await writeFile(script, PLAIN_PY);
    const predict = (file: string, out: string): Timing => timed(process.execPath, [CLI, 'predict', '--model-repo', repo, '--model', 'small', '--input', file, '--output', join(dir, out), '--overwrite']);
    const python = existsSync(PYTHON) ? (): Timing => timed(PYTHON, [script, modelFile, input, join(dir, 'py-out.parquet')]) : undefined;
    if (python === undefined) console.log(`  no Python at ${PYTHON} (BENCH_PYTHON): the comparison is skipped`);
    predict(tiny, 'warm.parquet'); // the first run pays for the page cache, for both
    python?.();
    const ours: Timing[] = [];
    const theirs: Timing[] = [];
    for (let i = 0; i < RUNS; i++) {
      ours.push(predict(input, 'out.parquet'));
      if (python !== undefined) theirs.push(python());
    }
    const cold = Array.from({ length: Math.max(5, RUNS) }, () => predict(tiny, 'tiny-out.parquet'));
    const nodeAlone = Array.from({ length: 5 }, () => timed(process.execPath, ['-e', '0']));
    const pyImports = python === undefined ? undefined : Array.from({ length: 5 }, () => timed(PYTHON, ['-c', 'import numpy, onnxruntime, pyarrow.parquet']));
    const rows: (string | number)[][] = [[`inferq predict (${list(walls(ours))} s)`, median(walls(ours)).toFixed(2), median(cpus(ours)).toFixed(2), ROWS / median(walls(ours)), '']];
    if (python !== undefined) {
      rows.push([`plain Python pyarrow + onnxruntime (${list(walls(theirs))} s)`, median(walls(theirs)).toFixed(2), median(cpus(theirs)).toFixed(2), ROWS / median(walls(theirs)), '']);
      rows[0]![4] = `${(median(walls(theirs)) / median(walls(ours))).toFixed(2)}× Python (target ≥ 1.5×)`;
    }
    table(`whole process, small MLP, ${fmt(ROWS)} rows (median of ${RUNS}), load average now ${loadavg()[0]!.toFixed(2)}`, ['process', 'wall s', 'CPU s', 'rows/s', 'vs Python'], rows);
    table('cold start, whole process', ['process', 'wall s', 'CPU s', 'target'], [
      [`inferq predict, 10 rows (median of ${cold.length}: ${list(walls(cold))})`, median(walls(cold)).toFixed(3), median(cpus(cold)).toFixed(3), '≤ 0.25 s'],
      ['node -e 0', median(walls(nodeAlone)).toFixed(3), median(cpus(nodeAlone)).toFixed(3), ''],
      ...(pyImports === undefined ? [] : [['python -c "import numpy, onnxruntime, pyarrow.parquet"', median(walls(pyImports)).toFixed(3), median(cpus(pyImports)).toFixed(3), '']]),
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await predictProcessBench();
