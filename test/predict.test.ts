/**
 * `inferq predict` end to end: the CLI as a user runs it, checked by an
 * independent reader (pyarrow) and an independent runtime (Python onnxruntime).
 */
import { copyFile, mkdir, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ensurePython, runPython } from './infra/python.js';
import { REPO_ROOT, runCli } from './helpers/cli.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';

const EXAMPLES = join(REPO_ROOT, 'examples');

/** Python: compare an output Parquet with a direct onnxruntime run over the input. Prints JSON. */
const COMPARE = `
import json, sys
import numpy as np, pyarrow.parquet as pq, onnxruntime as ort
inp, out, model, in_col, out_col = sys.argv[1:6]
ti, to = pq.read_table(inp), pq.read_table(out)
x = np.stack(ti.column(in_col).to_numpy(zero_copy_only=False)).astype(np.float32)
sess = ort.InferenceSession(model, providers=['CPUExecutionProvider'])
want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
col = to.column(out_col)
got = np.stack(col.to_numpy(zero_copy_only=False)).astype(np.float32) if col.type.num_fields or str(col.type).startswith(('list', 'fixed_size_list')) else col.to_numpy().astype(np.float32)
got = got.reshape(want.shape)
print(json.dumps({
  "rows": to.num_rows,
  "columns": to.column_names,
  "types": [str(f.type) for f in to.schema],
  "max_abs_diff": float(np.max(np.abs(got - want))) if want.size else 0.0,
  "passthrough_equal": all(to.column(c).equals(ti.column(c)) for c in ti.column_names if c != in_col),
}))
`;

interface Compare {
  rows: number;
  columns: string[];
  types: string[];
  max_abs_diff: number;
  passthrough_equal: boolean;
}

async function compare(input: string, output: string, model: string, inCol: string, outCol: string): Promise<Compare> {
  return JSON.parse(await runPython(COMPARE, [input, output, model, inCol, outCol])) as Compare;
}

/** Visible files of a directory (temp files are hidden dot-files, counted separately). */
async function listing(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}

beforeAll(async () => {
  await ensurePython();
}, 600_000);

describe('inferq predict', () => {
  it('tags the bundled digits (the README command) and agrees with Python onnxruntime', async () => {
    const dir = await tempDir();
    const output = join(dir, 'digit-tags.parquet');
    const input = join(EXAMPLES, 'data', 'digits.parquet');
    const res = await runCli(['predict', '--model-repo', join(EXAMPLES, 'models'), '--model', 'digit-tags', '--input', input, '--output', output]);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/^inferq predict: 1,797 rows in [\d.]+ s = [\d,]+ rows\/s; \d+ batches, mean batch [\d.]+ rows; model digit-tags:1 on cpu → /);
    const c = await compare(input, output, join(EXAMPLES, 'models', 'digit-tags', '1', 'model.onnx'), 'pixels', 'tags');
    expect(c.rows).toBe(1797);
    expect(c.columns).toEqual(['id', 'label', 'split', 'tags']);
    expect(c.types[3]).toBe('fixed_size_list<item: float not null>[14]');
    expect(c.passthrough_equal).toBe(true);
    expect(c.max_abs_diff).toBeLessThan(1e-5);
    // Accuracy on the held-out split, computed by pyarrow/numpy from our output file.
    const acc = Number(
      await runPython(
        `import sys, numpy as np, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1]).to_pandas() if False else pq.read_table(sys.argv[1])
tags = np.stack(t.column('tags').to_numpy(zero_copy_only=False))
test = np.array(t.column('split').to_pylist()) == 'test'
label = t.column('label').to_numpy()
print(float(np.mean(np.argmax(tags[test, :10], axis=1) == label[test])))`,
        [output],
      ),
    );
    expect(acc).toBeGreaterThanOrEqual(0.93);
    expect(await listing(dir)).toEqual(['digit-tags.parquet']); // no temp file left
  });

  it('streams a multi-row-group file through small batches, keeping row order and passthrough columns', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'models');
    const modelDir = await writeModel(repo, 'mlp', '1', smallMlp([4, 16, 1], 3));
    const input = join(dir, 'in.parquet');
    await runPython(
      `import sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq
n = 50_000
rng = np.random.default_rng(5)
x = rng.normal(size=(n, 4)).astype(np.float32)
feats = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4)
t = pa.table({'id': [f'r{i}' for i in range(n)], 'user_id': pa.array(np.arange(n, dtype=np.int64) * 7), 'features': feats})
pq.write_table(t, sys.argv[1], row_group_size=7_000)`,
      [input],
    );
    const output = join(dir, 'out.parquet');
    const res = await runCli(['predict', '--model-repo', repo, '--model', 'mlp', '--input', input, '--output', output, '--max-batch', '256', '--no-progress']);
    expect(res.code, res.stderr).toBe(0);
    const c = await compare(input, output, join(modelDir, 'model.onnx'), 'features', 'score');
    expect(c.rows).toBe(50_000);
    expect(c.columns).toEqual(['id', 'user_id', 'score']);
    expect(c.types).toEqual(['string', 'int64', 'float']);
    expect(c.passthrough_equal).toBe(true);
    expect(c.max_abs_diff).toBeLessThan(1e-5);
    // Three instances (batches finish out of order across their threads): rows stay in order.
    const three = join(dir, 'out-3.parquet');
    const res3 = await runCli(['predict', '--model-repo', repo, '--model', 'mlp', '--input', input, '--output', three, '--max-batch', '256', '--instances', '3', '--threads', '1', '--no-progress']);
    expect(res3.code, res3.stderr).toBe(0);
    const c3 = await compare(input, three, join(modelDir, 'model.onnx'), 'features', 'score');
    expect([c3.rows, c3.passthrough_equal]).toEqual([50_000, true]);
    expect(c3.max_abs_diff).toBeLessThan(1e-5);
    // A NaN deep in the same file is reported with its absolute row number.
    const nanInput = join(dir, 'nan-deep.parquet');
    await runPython(
      `import sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq
x = np.zeros((50_000, 4), np.float32); x[43_210, 1] = np.inf
pq.write_table(pa.table({'features': pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4)}), sys.argv[1], row_group_size=7_000)`,
      [nanInput],
    );
    const bad = await runCli(['predict', '--model-repo', repo, '--model', 'mlp', '--input', nanInput, '--output', join(dir, 'nan-out.parquet'), '--no-progress']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/nan-deep\.parquet": input "features": non-finite value Infinity at row 43210, column 1/);
    const mean = Number(/mean batch ([\d.]+) rows/.exec(res.stdout)?.[1]);
    expect(mean).toBeGreaterThan(200); // rows of consecutive row groups merge into full batches
    expect(mean).toBeLessThanOrEqual(256);
  });

  it('an empty input gives an empty output with the full schema', async () => {
    const dir = await tempDir();
    const repo = join(dir, 'models');
    await writeModel(repo, 'mlp', '1', smallMlp([4, 8, 1], 2));
    const input = join(dir, 'empty.parquet');
    await runPython(
      `import sys, pyarrow as pa, pyarrow.parquet as pq
pq.write_table(pa.table({'id': pa.array([], pa.string()), 'features': pa.array([], pa.list_(pa.float32()))}), sys.argv[1])`,
      [input],
    );
    const output = join(dir, 'out.parquet');
    const res = await runCli(['predict', '--model-repo', repo, '--model', 'mlp', '--input', input, '--output', output, '--no-progress']);
    expect(res.code, res.stderr).toBe(0);
    const schema = await runPython(`import sys, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
print(t.num_rows, t.column_names)`, [output]);
    expect(schema.trim()).toBe("0 ['id', 'score']");
  });

  describe('bad input: a clear error naming the value, non-zero exit, no output', () => {
    let dir: string;
    let repo: string;
    const files: Record<string, string> = {};

    beforeAll(async () => {
      dir = await tempDir();
      repo = join(dir, 'models');
      await writeModel(repo, 'mlp', '1', smallMlp([4, 8, 1], 2));
      await mkdir(join(repo, 'broken', '1'), { recursive: true });
      await writeFile(join(repo, 'broken', '1', 'model.onnx'), 'definitely not onnx');
      for (const name of ['good', 'nan', 'f64', 'wide', 'nocol', 'ragged', 'clash']) files[name] = join(dir, `${name}.parquet`);
      await runPython(
        `import sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq
d = dict(zip(['good','nan','f64','wide','nocol','ragged','clash'], sys.argv[1:]))
x = np.arange(40, dtype=np.float32).reshape(10, 4)
lst = lambda a: pa.array(list(a))
pq.write_table(pa.table({'features': lst(x)}), d['good'])
y = x.copy(); y[3, 2] = np.nan
pq.write_table(pa.table({'features': lst(y)}), d['nan'])
pq.write_table(pa.table({'features': lst(x.astype(np.float64))}), d['f64'])
pq.write_table(pa.table({'features': lst(np.zeros((10, 5), np.float32))}), d['wide'])
pq.write_table(pa.table({'feats': lst(x)}), d['nocol'])
rows = [list(r) for r in x]; rows[6] = rows[6][:3]
pq.write_table(pa.table({'features': pa.array(rows, type=pa.list_(pa.float32()))}), d['ragged'])
pq.write_table(pa.table({'features': lst(x), 'score': pa.array(np.zeros(10))}), d['clash'])`,
        Object.values(files),
      );
      const good = await readFile(files['good']!);
      files['truncated'] = join(dir, 'truncated.parquet');
      await writeFile(files['truncated'], good.subarray(0, Math.floor(good.length * 0.6)));
      files['garbage'] = join(dir, 'garbage.parquet');
      await writeFile(files['garbage'], Buffer.from('PAR1 this is not really parquet at all PAR1'));
      await copyFile(files['good']!, join(dir, 'copy.parquet'));
    }, 300_000);

    const cases: [string, () => string[], RegExp][] = [
      ['a corrupt file', () => ['--input', files['garbage']!], /garbage\.parquet/],
      ['a truncated file', () => ['--input', files['truncated']!], /truncated\.parquet/],
      ['a missing input column', () => ['--input', files['nocol']!], /missing input column "features" \(float32 \[n,4\]\); columns are "feats"/],
      ['a wrong dtype', () => ['--input', files['f64']!], /column "features" is List<Float64>.*needs .*float32/],
      ['a wrong width', () => ['--input', files['wide']!], /column "features" row 0: list of length 5, model input "features" needs float32 \[n,4\]/],
      ['a ragged row', () => ['--input', files['ragged']!], /column "features" row 6: list of length 3/],
      ['NaN in features', () => ['--input', files['nan']!], /input "features": non-finite value NaN at row 3, column 2/],
      ['an unknown model', () => ['--input', files['good']!, '--model', 'nope'], /unknown model "nope" in repository .*; available: broken, mlp/],
      ['an unknown version', () => ['--input', files['good']!, '--version', '9'], /model "mlp" version "9" does not exist; served versions: 1/],
      ['a model that fails to load', () => ['--input', files['good']!, '--model', 'broken'], /model broken:1 \(.*model\.onnx\) failed to load/],
      ['an unwritable output path', () => ['--input', files['good']!, '--output', join(files['good']!, 'sub', 'out.parquet')], /good\.parquet\/sub\/out\.parquet": cannot create its folder/],
      ['a passthrough column named like an output', () => ['--input', files['clash']!], /column "score" has the name of a model output/],
      ['a missing input file', () => ['--input', join(dir, 'nope.parquet')], /nope\.parquet/],
    ];

    it.each(cases)('%s', async (_what, args, message) => {
      const out = join(dir, 'out', `${_what.replace(/\W+/g, '-')}.parquet`);
      await mkdir(join(dir, 'out'), { recursive: true });
      const extra = args();
      const res = await runCli(['predict', '--model-repo', repo, '--model', 'mlp', '--output', out, '--no-progress', ...extra]);
      expect(res.code).not.toBe(0);
      expect(res.stderr).toMatch(/^inferq: error: /);
      expect(res.stderr).toMatch(message);
      expect(existsSync(out)).toBe(false);
      expect((await readdir(join(dir, 'out'))).filter((f) => f.includes(_what.replace(/\W+/g, '-')))).toEqual([]); // no temp file either
    });

    it('never destroys its input: an output that is the input (by any spelling or a symlink) is refused, and an existing output needs --overwrite', async () => {
      const input = join(dir, 'keep.parquet');
      await copyFile(files['good']!, input);
      const before = await readFile(input);
      await symlink(input, join(dir, 'link.parquet'));
      const run = (output: string, ...extra: string[]) => runCli(['predict', '--model-repo', repo, '--model', 'mlp', '--input', input, '--output', output, '--no-progress', ...extra]);
      for (const output of [input, join(dir, 'out', '..', 'keep.parquet'), `file://${input}`, join(dir, 'link.parquet')]) {
        const res = await run(output, '--overwrite');
        expect(res.code, output).toBe(1);
        expect(res.stderr).toMatch(/^inferq: error: --output ".*" is the input file ".*keep\.parquet": refusing to overwrite the input/);
        expect(res.stderr.trim().split('\n')).toHaveLength(1);
      }
      expect(await readFile(input)).toEqual(before);
      const out = join(dir, 'exists.parquet');
      await writeFile(out, 'a file that was here before');
      const refused = await run(out);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/exists\.parquet already exists; pass --overwrite to replace it/);
      expect(await readFile(out, 'utf8')).toBe('a file that was here before');
      const replaced = await run(out, '--overwrite');
      expect(replaced.code, replaced.stderr).toBe(0);
      expect((await readFile(out)).subarray(0, 4).toString()).toBe('PAR1');
      // A folder output counts as existing when its _SUCCESS marker is there.
      const folder = join(dir, 'folder-out');
      await mkdir(folder);
      await writeFile(join(folder, '_SUCCESS'), '');
      expect((await run(`${folder}/`)).stderr).toMatch(/_SUCCESS already exists; pass --overwrite/);
    });

    it('passes NaN through when asked (--nan pass)', async () => {
      const out = join(dir, 'nan-pass.parquet');
      const res = await runCli(['predict', '--model-repo', repo, '--model', 'mlp', '--input', files['nan']!, '--output', out, '--nan', 'pass', '--no-progress']);
      expect(res.code, res.stderr).toBe(0);
      expect(existsSync(out)).toBe(true);
    });
  });
});
