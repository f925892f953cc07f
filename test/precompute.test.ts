/**
 * Precompute mode against the real Redis (and the real HDFS for Parquet): spec validation,
 * table contents equal to the model, readers never see a mixed table during a rerun, crash
 * and resume, lookups from the SDK, cron schedules.
 */
import { spawn } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, parseTablePointer, tableKeys } from '@inferq/shared';
import { Producer } from '@inferq/producer';
import type { TableRow } from '@inferq/producer';
import { forwardMlp } from '../examples/build/onnx-builder.js';
import { ModelPool, ModelRepository, parseSpec, RedisWorker, SCHEDULE_QUEUE, silentLogger, WebHdfs } from '@inferq/workers';
import { runCli, cliArgv, REPO_ROOT } from './helpers/cli.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { dropQueue, queueName, startWorker, waitFor } from './helpers/redis.js';
import { runPython } from './infra/python.js';
import { startRedis } from './infra/redis.js';
import { hdfsServer, redisServer } from './infra/servers.js';

const url = await redisServer();
const webhdfs = await hdfsServer();
// One non-ASCII value: keys are UTF-8 bytes end to end (bucket hash, Redis fields, Parquet).
const COUNTRIES = ['DE', 'FR', 'España', 'IT'];
const v1 = smallMlp([6, 16, 2], 21);
const v2 = smallMlp([6, 16, 2], 22);
let repo: string;
let dir: string;
let redis: Redis;

beforeAll(async () => {
  dir = await tempDir('inferq-precompute-');
  repo = join(dir, 'models');
  await writeModel(repo, 'scorer', '1', v1);
  await writeModel(repo, 'scorer', '2', v2);
  await writeFile(join(repo, 'scorer', 'config.yaml'), 'versionPolicy: all\n');
  redis = new Redis(url);
});

afterAll(() => {
  redis.disconnect();
});

/** A spec over country × nights × property (6 features: onehot 4, number, index). */
function specText(table: string, opts: { version?: string; properties?: number; chunkRows?: number; parquet?: string } = {}): string {
  return [
    `table: ${table}`,
    'model: scorer',
    `version: "${opts.version ?? '1'}"`,
    'space:',
    '  axes:',
    `    - { name: country, values: [${COUNTRIES.join(', ')}] }`,
    '    - { name: nights, range: { from: 1, to: 10 } }',
    `    - { name: property, range: { from: 1, to: ${opts.properties ?? 50} } }`,
    'key: "{country}:{nights}:{property}"',
    'encode:',
    '  features:',
    '    - { axis: country, as: onehot }',
    '    - { axis: nights, as: number }',
    '    - { axis: property, as: index }',
    `chunkRows: ${opts.chunkRows ?? 256}`,
    'redis: { graceSeconds: 60 }',
    ...(opts.parquet === undefined ? [] : [`parquet: { path: "${opts.parquet}" }`]),
  ].join('\n');
}

async function writeSpec(name: string, text: string): Promise<string> {
  const path = join(dir, `${name}.yaml`);
  await writeFile(path, text);
  return path;
}

/** What the model says for a key, computed here from the same encoding. */
function expected(spec: typeof v1, key: string): number[] {
  const [country, nights, property] = key.split(':');
  const x = new Float32Array(6);
  x[COUNTRIES.indexOf(country!)] = 1;
  x[4] = Number(nights);
  x[5] = Number(property) - 1;
  return Array.from(forwardMlp(spec, { features: x }, 1));
}

function expectRow(row: TableRow | undefined, spec: typeof v1, key: string): void {
  expect(row, key).toBeDefined();
  const got = row!['score'] as number[];
  const want = expected(spec, key);
  for (let i = 0; i < 2; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThan(1e-5);
}

async function tableRows(table: string): Promise<number> {
  const ptr = parseTablePointer(await redis.get(tableKeys('inferq', table).current));
  if (ptr === undefined) return 0;
  let n = 0;
  for (let b = 0; b < ptr.buckets; b++) n += await redis.hlen(tableKeys('inferq', table).bucket(ptr.runId, b));
  return n;
}

describe('precompute spec', () => {
  it('bad specs fail with the file, the field and the value', () => {
    const bad = (text: string): string => {
      try {
        parseSpec(text, 'spec.yaml', '/');
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as Error).message;
      }
      throw new Error('accepted a bad spec');
    };
    expect(bad('table: [')).toMatch(/^spec\.yaml: not valid YAML/);
    expect(bad(specText('t').replace('key: "{country}:{nights}:{property}"', 'key: "{country}:{room}"'))).toBe('spec.yaml: key: "{room}" is not an axis (axes: country, nights, property)');
    expect(bad(specText('t').replace('{ name: nights, range: { from: 1, to: 10 } }', '{ name: nights }'))).toBe('spec.yaml: space.axes.1: an axis needs exactly one of values, range or parquet');
    expect(bad(specText('t').replace('as: index', 'as: hash'))).toMatch(/^spec\.yaml: encode\.features\.2\.as: /);
    expect(bad(specText('t bad'))).toMatch(/^spec\.yaml: table: letters, digits/);
  });

  it('an encoding that does not fit the model input is refused before any work, naming both sides', async () => {
    const path = await writeSpec('wide', specText('wide').replace("    - { axis: property, as: index }", "    - { axis: property, as: index }\n    - { axis: nights, as: number }"));
    const r = await runCli(['precompute', '--spec', path, '--model-repo', repo, '--redis', url, '--no-progress']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('encode.features make 7 columns (country:onehot=4, nights:number=1, property:index=1, nights:number=1), but input "features" is [-1, 6]');
  });
});

describe('inferq precompute', () => {
  it('fills a Redis table and Parquet on HDFS (with _SUCCESS) that equal the model; the SDK reads single keys and batches', async () => {
    const table = `t-${queueName()}`;
    const hdfsDir = `/inferq-test/tables/${table}`;
    const host = webhdfs.replace(/^http:\/\//, '');
    const path = await writeSpec(table, specText(table, { parquet: `webhdfs://${host}${hdfsDir}` }));
    const r = await runCli(['precompute', '--spec', path, '--to', 'both', '--model-repo', repo, '--redis', url, '--no-progress']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/inferq precompute: table \S+ run \S+: 2,000 rows in .* rows\/s; 2,000 rows in the table; redis: current → \S+ \(20 buckets\); parquet: webhdfs:/);
    expect(await tableRows(table)).toBe(2000);
    const producer = new Producer({ redis: url });
    try {
      const sample = ['DE:1:1', 'FR:7:33', 'IT:10:50', 'España:3:12'];
      for (const key of sample) expectRow(await producer.lookup(table, key), v1, key);
      const keys = Array.from({ length: 100 }, (_, i) => `${COUNTRIES[i % 4]}:${1 + (i % 10)}:${1 + ((i * 7) % 50)}`);
      const rows = await producer.lookupMany(table, keys);
      keys.forEach((k, i) => expectRow(rows[i], v1, k));
      expect(await producer.lookup(table, 'XX:1:1')).toBeUndefined();
      expect(await producer.lookup('no-such-table', 'DE:1:1')).toBeUndefined();
    } finally {
      await producer.close();
    }
    // Parquet: one file per chunk under the run's folder, then _SUCCESS.
    const fs = new WebHdfs({ url: webhdfs });
    const runId = parseTablePointer(await redis.get(tableKeys('inferq', table).current))!.runId;
    const files = (await fs.listStatus(`${hdfsDir}/${runId}`)).map((s) => s.pathSuffix).filter((n) => !n.startsWith('_temporary')).sort();
    expect(files).toEqual(['_SUCCESS', ...Array.from({ length: 8 }, (_, i) => `part-0000${i}.parquet`)]);
    const local = await tempDir();
    for (const f of files.filter((n) => n.endsWith('.parquet'))) await writeFile(join(local, f), await fs.open(`${hdfsDir}/${runId}/${f}`));
    const out = JSON.parse(
      await runPython(
        "import json,sys,pyarrow.dataset as ds\nt=ds.dataset(sys.argv[1],format='parquet').to_table()\nr=t.to_pylist()\nprint(json.dumps({'rows':t.num_rows,'keys':len({x['key'] for x in r}),'cols':t.column_names,'one':[x for x in r if x['key']=='FR:7:33'][0]['score'],'es':[[x['country'],x['score']] for x in r if x['key']=='España:3:12']}))",
        [local],
      ),
    ) as { rows: number; keys: number; cols: string[]; one: number[]; es: [string, number[]][] };
    expect(out.rows).toBe(2000);
    expect(out.keys).toBe(2000);
    expect(out.cols).toEqual(['key', 'country', 'nights', 'property', 'score']);
    const want = expected(v1, 'FR:7:33');
    expect(Math.abs(out.one[0]! - want[0]!)).toBeLessThan(1e-5);
    expect(out.es.length).toBe(1);
    expect(out.es[0]![0]).toBe('España');
    expect(Math.abs(out.es[0]![1][1]! - expected(v1, 'España:3:12')[1]!)).toBeLessThan(1e-5);
  }, 120_000);

  it('axes from a Parquet column, entity rows from a Parquet file, and a featurizer module', async () => {
    await runPython(
      [
        'import sys, pyarrow as pa, pyarrow.parquet as pq',
        "pq.write_table(pa.table({'property_id': pa.array([101, 102, 103, 102], pa.int64())}), sys.argv[1] + '/properties.parquet')",
        "c = ['DE','FR','España','IT']",
        "pq.write_table(pa.table({'country': [c[i % 4] for i in range(30)], 'nights': pa.array([1 + i % 10 for i in range(30)], pa.int64()), 'property': pa.array([1 + (i * 7) % 50 for i in range(30)], pa.int64())}), sys.argv[1] + '/entities.parquet')",
      ].join('\n'),
      [dir],
    );
    await writeFile(
      join(dir, 'feat.mjs'),
      `const C = ['DE', 'FR', 'España', 'IT'];
export default function featurize(columns, rows) {
  const data = new Float32Array(rows * 6);
  for (let r = 0; r < rows; r++) {
    data[r * 6 + C.indexOf(columns.country[r])] = 1;
    data[r * 6 + 4] = Number(columns.nights[r]);
    data[r * 6 + 5] = Number(columns.property[r]) - 1;
  }
  return { features: { dtype: 'float32', shape: [rows, 6], data } };
}
`,
    );
    const producer = new Producer({ redis: url });
    try {
      // A: the property axis is the distinct property_id values of a Parquet file (3 of them).
      const a = `t-${queueName()}`;
      const specA = specText(a).replace('{ name: property, range: { from: 1, to: 50 } }', '{ name: property, parquet: { path: properties.parquet, column: property_id } }');
      const ra = await runCli(['precompute', '--spec', await writeSpec(a, specA), '--model-repo', repo, '--redis', url, '--no-progress']);
      expect(ra.code, ra.stderr).toBe(0);
      expect(await tableRows(a)).toBe(4 * 10 * 3);
      const x = new Float32Array([0, 0, 1, 0, 7, 2]); // España, 7 nights, property 103 = index 2
      const want = Array.from(forwardMlp(v1, { features: x }, 1));
      const got = (await producer.lookup(a, 'España:7:103'))!['score'] as number[];
      for (let i = 0; i < 2; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThan(1e-5);
      // B: one row per entity of a Parquet file, encoded by a featurizer module.
      const b = `t-${queueName()}`;
      const specB = [`table: ${b}`, 'model: scorer', 'version: "1"', 'space:', '  rows: { parquet: entities.parquet }', 'key: "{country}:{nights}:{property}"', 'encode:', '  featurizer: ./feat.mjs', 'chunkRows: 8'].join('\n');
      const rb = await runCli(['precompute', '--spec', await writeSpec(b, specB), '--model-repo', repo, '--redis', url, '--no-progress']);
      expect(rb.code, rb.stderr).toBe(0);
      expect(rb.stdout).toContain('30 rows in the table');
      for (const i of [0, 13, 29]) {
        const key = `${COUNTRIES[i % 4]}:${1 + (i % 10)}:${1 + ((i * 7) % 50)}`;
        expectRow(await producer.lookup(b, key), v1, key);
      }
    } finally {
      await producer.close();
    }
  }, 120_000);

  it('readers never see a mixed table while a rerun with a new model version is in progress', async () => {
    const table = `t-${queueName()}`;
    const first = await writeSpec(`${table}-1`, specText(table, { properties: 1000, chunkRows: 1000 }));
    expect((await runCli(['precompute', '--spec', first, '--model-repo', repo, '--redis', url, '--no-progress'])).code).toBe(0);
    const second = await writeSpec(`${table}-2`, specText(table, { version: '2', properties: 1000, chunkRows: 1000 }));
    const keys = Array.from({ length: 100 }, (_, i) => `${COUNTRIES[i % 4]}:${1 + (i % 10)}:${1 + ((i * 37) % 1000)}`);
    const producer = new Producer({ redis: url, tableCacheMs: 0 });
    const child = spawn(process.execPath, cliArgv(['precompute', '--spec', second, '--model-repo', repo, '--redis', url, '--no-progress']), { cwd: REPO_ROOT, stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    let running = true;
    void exited.then(() => (running = false));
    const seen = { v1: 0, v2: 0 };
    try {
      while (running) {
        const rows = await producer.lookupMany(table, keys);
        const isV1 = rows.map((r, i) => Math.abs((r!['score'] as number[])[0]! - expected(v1, keys[i]!)[0]!) < 1e-5);
        // Every key of one call comes from one version: all v1, or all v2.
        expect(new Set(isV1).size).toBe(1);
        if (isV1[0]) seen.v1++;
        else {
          keys.forEach((k, i) => expectRow(rows[i], v2, k));
          seen.v2++;
        }
      }
      expect(await exited).toBe(0);
      expect(seen.v1).toBeGreaterThan(0); // it read while the rerun ran …
      const after = await producer.lookupMany(table, keys);
      keys.forEach((k, i) => expectRow(after[i], v2, k)); // … and the new version once it was swapped in
      // The old version stays readable for the grace period (60 s in this spec), then expires.
      const oldMeta = (await redis.keys(`inferq:table:${table}:*:meta`)).sort();
      expect(oldMeta).toHaveLength(2);
      const ttls = await Promise.all(oldMeta.map((k) => redis.ttl(k)));
      expect(ttls.filter((t) => t > 0 && t <= 60)).toHaveLength(1); // the old run's keys expire …
      expect(ttls.filter((t) => t === -1)).toHaveLength(1); // … the current run's do not
      const oldRun = oldMeta[ttls.findIndex((t) => t > 0)]!.split(':').at(-2)!;
      expect(await redis.ttl(tableKeys('inferq', table).bucket(oldRun, 0))).toBeGreaterThan(0);
    } finally {
      await producer.close();
    }
  }, 180_000);

  it('a run killed mid-way resumes: the rerun computes only the missing chunks, and the table is complete', async () => {
    const table = `t-${queueName()}`;
    const path = await writeSpec(table, specText(table, { properties: 2500, chunkRows: 1000 }));
    const keys = tableKeys('inferq', table);
    const child = spawn(process.execPath, cliArgv(['precompute', '--spec', path, '--model-repo', repo, '--redis', url, '--no-progress', '--lock-ttl-ms', '2000']), {
      cwd: REPO_ROOT,
      stdio: 'ignore',
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    await waitFor(async () => {
      const runId = await redis.get(keys.running);
      return runId !== null && (await redis.scard(keys.done(runId))) >= 10;
    }, 'ten chunks done', 60_000, 10);
    child.kill('SIGKILL');
    await exited;
    const runId = (await redis.get(keys.running))!;
    const doneAtKill = await redis.scard(keys.done(runId));
    expect(doneAtKill).toBeLessThan(100);
    expect(await redis.get(keys.current)).toBeNull(); // the partial run was never visible
    // The dead run's lock expires (2 s) …
    await waitFor(async () => (await redis.exists(keys.lock)) === 0, 'the dead run’s lock to expire', 10_000, 100);
    const r = await runCli(['precompute', '--spec', path, '--model-repo', repo, '--redis', url, '--no-progress']);
    expect(r.code, r.stderr).toBe(0);
    const m = /run (\S+): ([\d,]+) rows .*\(resumed: (\d+) of 100 chunks were already done\)/.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    expect(m![1]).toBe(runId);
    expect(Number(m![3])).toBeGreaterThanOrEqual(doneAtKill);
    expect(Number(m![2]!.replace(/,/g, ''))).toBe(100_000 - Number(m![3]) * 1000);
    expect(await tableRows(table)).toBe(100_000);
    const producer = new Producer({ redis: url });
    try {
      for (const key of ['DE:1:1', 'IT:10:2500', 'España:5:1234']) expectRow(await producer.lookup(table, key), v1, key);
    } finally {
      await producer.close();
    }
  }, 180_000);

  it('Redis refusing writes mid-run (maxmemory) fails the run naming the chunk and the reply, publishes nothing; the rerun resumes and completes', async () => {
    const server = await startRedis(); // its own server: this test fills its memory
    const admin = new Redis(server.url);
    try {
      const table = `t-${queueName()}`;
      const keys = tableKeys('inferq', table);
      const path = await writeSpec(table, specText(table, { properties: 2500, chunkRows: 1000 }));
      // Room for the lock, the run's metadata and a few chunks, not for 100,000 rows.
      const used = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))![1]);
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      await admin.config('SET', 'maxmemory', String(used + 1_500_000));
      const r = await runCli(['precompute', '--spec', path, '--model-repo', repo, '--redis', server.url, '--no-progress']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/inferq: error: redis 127\.0\.0\.1:\d+: writing chunk \d+ failed: OOM command not allowed when used memory > 'maxmemory'/);
      expect(await admin.get(keys.current)).toBeNull(); // nothing published
      const runId = (await admin.get(keys.running))!;
      const done = await admin.scard(keys.done(runId));
      expect(done).toBeGreaterThan(0);
      expect(done).toBeLessThan(100);
      expect(await admin.exists(keys.lock)).toBe(0); // released on the way out
      await admin.config('SET', 'maxmemory', '0');
      const again = await runCli(['precompute', '--spec', path, '--model-repo', repo, '--redis', server.url, '--no-progress']);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stdout).toMatch(new RegExp(`run ${runId}: .*\\(resumed: \\d+ of 100 chunks were already done\\)`));
      const producer = new Producer({ redis: server.url });
      try {
        for (const key of ['DE:1:1', 'IT:10:2500', 'España:5:1234', 'FR:3:777']) expectRow(await producer.lookup(table, key), v1, key);
        expect((await producer.lookupMany(table, Array.from({ length: 100 }, (_, i) => `DE:${1 + (i % 10)}:${1 + i * 25}`))).every((row) => row !== undefined)).toBe(true);
      } finally {
        await producer.close();
      }
    } finally {
      admin.disconnect();
      await server.stop();
    }
  }, 180_000);

  it('a second run of a table while one is in progress is refused (one run per table at a time)', async () => {
    const table = `t-${queueName()}`;
    await redis.set(tableKeys('inferq', table).lock, 'someone-else', 'PX', 30_000);
    const path = await writeSpec(table, specText(table));
    const r = await runCli(['precompute', '--spec', path, '--model-repo', repo, '--redis', url, '--no-progress']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`table "${table}": a run is already in progress (held by someone-else)`);
    await redis.del(tableKeys('inferq', table).lock);
  }, 60_000);

  it('lookupOrPredict(): a hit comes from the table, a miss from the model (through a worker)', async () => {
    const table = `t-${queueName()}`;
    const path = await writeSpec(table, specText(table));
    expect((await runCli(['precompute', '--spec', path, '--model-repo', repo, '--redis', url, '--no-progress'])).code).toBe(0);
    const queue = queueName();
    const pool = new ModelPool(new ModelRepository(repo), { logger: silentLogger(), batching: { maxDelayMs: 1 } });
    const worker = new RedisWorker({ redis: url, queue, models: pool, logger: silentLogger() });
    await worker.start();
    const producer = new Producer({ redis: url, queue });
    try {
      const features = (key: string): number[][] => {
        const [c, n, p] = key.split(':');
        const x = [0, 0, 0, 0, Number(n), Number(p) - 1];
        x[COUNTRIES.indexOf(c!)] = 1;
        return [x];
      };
      const hit = await producer.lookupOrPredict(table, 'FR:2:3', 'scorer', features('FR:2:3'), { version: '1', timeoutMs: 10_000 });
      expect(hit.source).toBe('table');
      expectRow(hit.row, v1, 'FR:2:3');
      const miss = await producer.lookupOrPredict(table, 'FR:2:77', 'scorer', features('FR:2:77'), { version: '1', timeoutMs: 10_000 });
      expect(miss.source).toBe('model');
      expectRow(miss.row, v1, 'FR:2:77');
    } finally {
      await producer.close();
      await worker.close(5000);
      await pool.close();
      await dropQueue(url, queue);
    }
  }, 60_000);
});

describe('precompute schedules', () => {
  it('schedule add / list / remove; a short cron pattern fires and the precompute worker publishes new versions (the spec only in the job)', async () => {
    const table = `t-${queueName()}`;
    const prefix = queueName('p'); // a schedules queue of this test's own
    const path = await writeSpec(table, specText(table));
    const name = `every-second-${table}`;
    const add = await runCli(['schedule', 'add', name, '--cron', '*/1 * * * * *', '--spec', path, '--model-repo', repo, '--redis', url, '--prefix', prefix]);
    expect(add.code, add.stderr).toBe(0);
    await rm(path); // the job carries the spec's text: the worker reads no file of it
    const list = await runCli(['schedule', 'list', '--redis', url, '--prefix', prefix]);
    expect(list.stdout).toContain(`${name}\t*/1 * * * * *\tnext 20`);
    expect(list.stdout).toContain(`\t./${table}.yaml\tredis\n`);
    // No --allow-specs: it runs only specs that name no file, like this one.
    const w = startWorker(['--role', 'precompute', '--redis', url, '--prefix', prefix, '--model-repo', repo]);
    try {
      await w.ready;
      const current = tableKeys('inferq', table).current;
      await waitFor(async () => (await redis.get(current)) !== null, 'a first scheduled run', 60_000, 100);
      const firstRun = await redis.get(current);
      await waitFor(async () => (await redis.get(current)) !== firstRun, 'a second scheduled run (a new version)', 60_000, 100);
      expect(await tableRows(table)).toBe(2000);
    } finally {
      const removed = await runCli(['schedule', 'remove', name, '--redis', url, '--prefix', prefix]);
      expect(removed.code, removed.stderr).toBe(0);
      w.child.kill('SIGTERM');
      await w.exited;
    }
    expect((await runCli(['schedule', 'list', '--redis', url, '--prefix', prefix])).stdout).not.toContain(name);
    await dropQueue(url, SCHEDULE_QUEUE, prefix);
    const again = await runCli(['schedule', 'remove', name, '--redis', url, '--prefix', prefix]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`no schedule named "${name}"`);
  }, 180_000);
});
