/**
 * The precompute worker trusts nothing it reads from Redis: jobs forged onto the schedules queue
 * by hand are refused with their reason (nothing imported, nothing written) and do not stop the
 * next valid scheduled run, which runs from the worker's own copy of the specs' folder. The
 * featurizer rule holds for `inferq precompute` too, and the precompute and schedule commands
 * end with one line when they cannot work (bad spec, Redis unreachable).
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdir, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tableFromArrays } from 'apache-arrow';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, tableKeys } from '@inferq/shared';
import { Producer } from '@inferq/producer';
import { forwardMlp } from '../examples/build/onnx-builder.js';
import { createParquetWriter, parseSpec, SCHEDULE_QUEUE } from '@inferq/workers';
import { redisServer } from './infra/servers.js';
import { runCli } from './helpers/cli.js';
import type { CliResult } from './helpers/cli.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { queueName, startWorker, waitFor } from './helpers/redis.js';

const url = await redisServer();
const FIXTURES = fileURLToPath(new URL('./fixtures/precompute/', import.meta.url));
const COUNTRIES = ['DE', 'FR', 'España', 'IT'];
const PROPERTIES = [101, 102, 103];
const v1 = smallMlp([6, 16, 2], 21);
const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

let dir: string;
let repo: string;
/** What `schedule add` reads (the scheduler's file system). */
let specsA: string;
/** The worker's copy of it (its --allow-specs). */
let specsB: string;
/** Files no spec may reach: evil.mjs leaves `marker` when imported. */
let outside: string;
let marker: string;
/** The worker's --allow-outputs. */
let outputs: string;
let redis: Redis;

async function writeParquet(path: string, columns: Record<string, BigInt64Array | string[]>): Promise<void> {
  const writer = await createParquetWriter(path);
  await writer.write(tableFromArrays(columns).batches[0]!);
  await writer.close();
}

beforeAll(async () => {
  dir = await tempDir('inferq-trust-');
  repo = join(dir, 'models');
  await writeModel(repo, 'scorer', '1', v1);
  await writeModel(join(dir, 'other-models'), 'scorer', '1', v1);
  outside = join(dir, 'outside');
  await mkdir(outside);
  await cp(join(FIXTURES, 'evil.mjs'), join(outside, 'evil.mjs'));
  await writeParquet(join(outside, 'data.parquet'), { country: ['DE'], nights: BigInt64Array.from([1n]), property: BigInt64Array.from([101n]) });
  marker = join(outside, 'imported.marker');
  specsA = join(dir, 'specs-a');
  await mkdir(join(specsA, 'team'), { recursive: true });
  await cp(join(FIXTURES, 'featurize.mjs'), join(specsA, 'team', 'featurize.mjs'));
  await writeParquet(join(specsA, 'team', 'properties.parquet'), { property_id: BigInt64Array.from([101n, 102n, 103n, 102n]) });
  await symlink(outside, join(specsA, 'team', 'link-out'));
  await symlink(join(outside, 'evil.mjs'), join(specsA, 'team', 'evil-link.mjs'));
  specsB = join(dir, 'specs-b');
  await cp(specsA, specsB, { recursive: true });
  outputs = join(dir, 'outputs');
  await mkdir(outputs);
  redis = new Redis(url);
});

afterAll(async () => {
  redis.disconnect();
  await rm(dir, { recursive: true, force: true });
});

/** country × nights × property (a Parquet column), encoded by a featurizer beside the spec: 120 rows. */
function specText(table: string, o: { featurizer?: string; property?: string; parquet?: string; nights?: string } = {}): string {
  return [
    `table: ${table}`,
    'model: scorer',
    'version: "1"',
    'space:',
    '  axes:',
    `    - { name: country, values: [${COUNTRIES.join(', ')}] }`,
    `    - { name: nights, range: { from: 1, to: ${o.nights ?? '10'} } }`,
    `    - ${o.property ?? '{ name: property, parquet: { path: properties.parquet, column: property_id } }'}`,
    'key: "{country}:{nights}:{property}"',
    'encode:',
    `  featurizer: "${o.featurizer ?? './featurize.mjs'}"`,
    'chunkRows: 16',
    ...(o.parquet === undefined ? [] : [`parquet: { path: "${o.parquet}" }`]),
  ].join('\n');
}

function expected(key: string): number[] {
  const [country, nights, property] = key.split(':');
  const x = new Float32Array(6);
  x[COUNTRIES.indexOf(country!)] = 1;
  x[4] = Number(nights);
  x[5] = PROPERTIES.indexOf(Number(property));
  return Array.from(forwardMlp(v1, { features: x }, 1));
}

/** The command failed by itself (not killed) with exactly one line on stderr. */
function oneLine(r: CliResult, line: RegExp): void {
  expect(r.signal, r.stderr).toBeNull();
  expect(r.code, r.stderr).toBe(1);
  const lines = r.stderr.trim().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(line);
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('the featurizer lies beside its spec', () => {
  it('a spec naming it by absolute path, with "..", by URL or not as a .mjs/.js file is refused, naming the value', () => {
    const bad = (featurizer: string): string => {
      try {
        parseSpec(specText('t', { featurizer }), 'spec.yaml', '/specs');
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as Error).message;
      }
      throw new Error(`accepted featurizer ${featurizer}`);
    };
    for (const f of ['../evil.mjs', 'lib/../../evil.mjs', '/srv/evil.mjs', 'file:///srv/evil.mjs', 'C:/evil.mjs', 'lib\\\\evil.mjs', './featurize.py']) {
      expect(bad(f)).toMatch(/^spec\.yaml: encode\.featurizer: ".*" must be a relative path inside the spec's folder \(no absolute path, no "\.\.", no URL\) to a \.mjs or \.js file$/);
    }
    expect(bad('../evil.mjs')).toContain('"../evil.mjs"');
    for (const f of ['./featurize.mjs', 'featurize.js', 'lib/featurize.mjs', './lib/..x.mjs']) {
      expect(parseSpec(specText('t', { featurizer: f }), 'spec.yaml', '/specs').spec.encode.featurizer).toBe(f);
    }
  });

  it('a model name or version that is not a plain folder, a Redis prefix with odd characters and a huge range are refused', () => {
    const bad = (text: string): string => {
      try {
        parseSpec(text, 'spec.yaml', '/specs');
      } catch (err) {
        return (err as Error).message;
      }
      throw new Error('accepted a bad spec');
    };
    expect(bad(specText('t').replace('model: scorer', 'model: ".."'))).toMatch(/^spec\.yaml: model: a model folder name/);
    expect(bad(specText('t').replace('model: scorer', 'model: "a/b"'))).toMatch(/^spec\.yaml: model: /);
    expect(bad(specText('t').replace('version: "1"', 'version: "../1"'))).toMatch(/^spec\.yaml: version: an integer/);
    expect(bad(`${specText('t')}\nredis: { prefix: "a b" }`)).toMatch(/^spec\.yaml: redis\.prefix: /);
    expect(bad(specText('t', { nights: '20000000' }))).toBe('spec.yaml: space.axes.1.range: 20000000 values, more than the 10000000 an axis may have');
  });

  it('inferq precompute refuses a featurizer outside the spec folder (by "..", absolute path or symlink) before importing it', async () => {
    const table = `t-${queueName()}`;
    const write = async (name: string, featurizer: string): Promise<string> => {
      const path = join(specsA, 'team', `${name}.yaml`);
      await writeFile(path, specText(table, { featurizer }));
      return path;
    };
    const run = async (path: string): Promise<CliResult> => runCli(['precompute', '--spec', path, '--model-repo', repo, '--redis', url, '--no-progress'], { timeoutMs: 90_000 });
    const [dots, absolute, link] = await Promise.all([
      run(await write('dots', '../link-out/evil.mjs')),
      run(await write('absolute', join(outside, 'evil.mjs'))),
      run(await write('link', './evil-link.mjs')),
    ]);
    oneLine(dots, /^inferq: error: .*dots\.yaml: encode\.featurizer: "\.\.\/link-out\/evil\.mjs" must be a relative path inside the spec's folder/);
    oneLine(absolute, /^inferq: error: .*absolute\.yaml: encode\.featurizer: ".*\/outside\/evil\.mjs" must be a relative path/);
    oneLine(link, /^inferq: error: encode\.featurizer "\.\/evil-link\.mjs" is outside the spec's folder .*specs-a\/team \(it resolves to .*\/outside\/evil\.mjs\)$/);
    expect(existsSync(marker)).toBe(false);
  }, 120_000);
});

describe('precompute and schedule commands end when they cannot work', () => {
  it('inferq precompute --to redis with a spec error exits 1 with one line (an empty range; a missing Parquet axis file)', async () => {
    const table = `t-${queueName()}`;
    const empty = join(specsA, 'team', 'empty.yaml');
    await writeFile(empty, specText(table).replace('range: { from: 1, to: 10 }', 'range: { from: 10, to: 1 }'));
    const missing = join(specsA, 'team', 'missing.yaml');
    await writeFile(missing, specText(table, { property: '{ name: property, parquet: { path: nowhere.parquet, column: property_id } }' }));
    const run = (path: string): Promise<CliResult> => runCli(['precompute', '--spec', path, '--to', 'redis', '--model-repo', repo, '--redis', url, '--no-progress'], { timeoutMs: 90_000 });
    const [a, b] = await Promise.all([run(empty), run(missing)]);
    oneLine(a, /^inferq: error: axis "nights": range from 10 to 1 is empty$/);
    oneLine(b, /^inferq: error: space\.axes\.2\.parquet\.path "nowhere\.parquet": cannot read it \(ENOENT\)$/);
    expect(await redis.exists(tableKeys('inferq', table).lock)).toBe(0);
  }, 120_000);

  it('with Redis unreachable, precompute, schedule add|list|remove and the precompute worker exit 1 with one line naming the server', async () => {
    const port = await closedPort();
    const down = `redis://127.0.0.1:${port}`;
    const spec = join(specsA, 'team', 'down.yaml');
    await writeFile(spec, specText(`t-${queueName()}`));
    const results = await Promise.all([
      runCli(['precompute', '--spec', spec, '--model-repo', repo, '--redis', down, '--no-progress'], { timeoutMs: 90_000 }),
      runCli(['schedule', 'add', 'nightly', '--cron', '0 3 * * *', '--spec', spec, '--redis', down], { timeoutMs: 90_000 }),
      runCli(['schedule', 'list', '--redis', down], { timeoutMs: 90_000 }),
      runCli(['schedule', 'remove', 'nightly', '--redis', down], { timeoutMs: 90_000 }),
      runCli(['worker', '--role', 'precompute', '--model-repo', repo, '--redis', down], { timeoutMs: 90_000 }),
    ]);
    for (const r of results) oneLine(r, new RegExp(`^inferq: error: redis 127\\.0\\.0\\.1:${port}: cannot connect: .*ECONNREFUSED`));
  }, 180_000);

  it('schedule add checks what the worker will: files outside --specs-root, a featurizer symlinked out, a spec folder outside the root', async () => {
    const axis = join(specsA, 'team', 'axis-out.yaml');
    await writeFile(axis, specText('t', { property: '{ name: property, parquet: { path: ../../outside/data.parquet, column: property } }' }));
    const link = join(specsA, 'team', 'feat-out.yaml');
    await writeFile(link, specText('t', { featurizer: './evil-link.mjs' }));
    const add = (spec: string, root: string): Promise<CliResult> => runCli(['schedule', 'add', 'x', '--cron', '0 3 * * *', '--spec', spec, '--specs-root', root, '--redis', url, '--prefix', queueName('p')], { timeoutMs: 90_000 });
    const [a, b, c] = await Promise.all([add(axis, specsA), add(link, specsA), add(link, outside)]);
    oneLine(a, /^inferq: error: space\.axes\.2\.parquet\.path "\.\.\/\.\.\/outside\/data\.parquet" is outside --specs-root .*specs-a$/);
    oneLine(b, /^inferq: error: encode\.featurizer "\.\/evil-link\.mjs" is outside the spec's folder/);
    oneLine(c, /^inferq: error: spec ".*feat-out\.yaml": its folder .*specs-a\/team is not inside --specs-root .*\/outside$/);
    expect(existsSync(marker)).toBe(false);
  }, 120_000);
});

describe('the precompute worker and forged schedule jobs', () => {
  it('refuses each forged job with its reason (logged once, escaped), imports and writes nothing, and runs the next valid schedule from its own copy of the specs', async () => {
    const prefix = queueName('p');
    const table = `t-${queueName()}`;
    const good = specText(table);
    const job = (text: string, over: Record<string, unknown> = {}, spec: Record<string, unknown> = {}): Record<string, unknown> => ({
      v: 2,
      schedule: 'forged',
      spec: { text, sha256: sha256(text), dir: 'team', file: 'spec.yaml', ...spec },
      to: 'redis',
      model: { name: 'scorer', version: '1' },
      ...over,
    });
    const { to: _to, ...noTarget } = job(good);
    const rowsSpec = specText(table).replace(/ {2}axes:\n(.*\n){3}/, '  rows: { parquet: data.parquet }\n');
    const forged: { what: string; data: unknown; reason: RegExp }[] = [
      { what: 'spec folder outside', data: job(good, {}, { dir: '../outside' }), reason: /spec\.dir: a folder relative to --allow-specs/ },
      { what: 'spec folder symlinked out', data: job(rowsSpec, {}, { dir: 'team/link-out' }), reason: /space\.rows\.parquet "data\.parquet" is outside --allow-specs .*specs-b \(it resolves to .*\/outside\/data\.parquet\)/ },
      { what: 'Parquet axis outside', data: job(specText(table, { property: `{ name: property, parquet: { path: "${outside}/data.parquet", column: property } }` })), reason: /space\.axes\.2\.parquet\.path ".*\/outside\/data\.parquet" is outside --allow-specs/ },
      { what: 'featurizer with ..', data: job(specText(table, { featurizer: '../../outside/evil.mjs' })), reason: /encode\.featurizer: "\.\.\/\.\.\/outside\/evil\.mjs" must be a relative path inside the spec's folder/ },
      { what: 'featurizer absolute', data: job(specText(table, { featurizer: join(outside, 'evil.mjs') })), reason: /encode\.featurizer: ".*\/outside\/evil\.mjs" must be a relative path/ },
      { what: 'featurizer symlinked out', data: job(specText(table, { featurizer: './evil-link.mjs' })), reason: /encode\.featurizer "\.\/evil-link\.mjs" is outside the spec's folder/ },
      { what: 'its own model repository', data: { ...job(good), modelRepo: join(dir, 'other-models') }, reason: /unknown field "modelRepo" \(a worker loads models only from its own --model-repo\)/ },
      { what: 'model name ..', data: job(good, { model: { name: '..', version: '1' } }), reason: /model\.name: a model folder name/ },
      { what: 'model other than its spec', data: job(good, { model: { name: 'scorer', version: '2' } }), reason: /model: the job names "scorer" version 2, its spec "scorer" version 1/ },
      { what: 'missing field', data: noTarget, reason: /^refused: to: / },
      { what: 'extra field', data: { ...job(good), redis: 'redis://elsewhere:6379' }, reason: /unknown field "redis"/ },
      { what: 'unparsable spec', data: job('table: ['), reason: /spec team\/spec\.yaml: not valid YAML/ },
      { what: 'hash mismatch', data: job(good, {}, { sha256: sha256('another spec') }), reason: /spec\.sha256 is not the sha256 of spec\.text/ },
      { what: 'output outside', data: job(specText(table, { parquet: join(dir, 'elsewhere') }), { to: 'parquet' }), reason: /parquet\.path ".*elsewhere" is not allowed: this worker writes Parquet under file:\/\/.*\/outputs only/ },
      { what: 'output climbing out', data: job(specText(table, { parquet: `${outputs}/../elsewhere` }), { to: 'both' }), reason: /parquet\.path ".*outputs\/\.\.\/elsewhere" is not allowed/ },
      { what: 'space too large', data: job(specText(table, { nights: '9000000', property: '{ name: property, range: { from: 1, to: 9000000 } }' })), reason: /space: at least 324000000000000 rows, more than the 1000000000 this worker runs/ },
      { what: 'format 1', data: { v: 1, spec: join(specsB, 'team', 'spec.yaml'), to: 'redis', modelRepo: join(dir, 'other-models') }, reason: /job format 1 .*add the schedule again with `inferq schedule add`/ },
      { what: 'bidi schedule name', data: job(good, { schedule: 'x\u202Ey' }), reason: /^refused: schedule: letters, digits/ },
      { what: 'not an object', data: 'rm -rf /', reason: /^refused: \(job data\): / },
    ];
    const w = startWorker(['--role', 'precompute', '--redis', url, '--prefix', prefix, '--model-repo', repo, '--allow-specs', specsB, '--allow-outputs', outputs]);
    const connection = new Redis(url, { maxRetriesPerRequest: null });
    const queue = new Queue(SCHEDULE_QUEUE, { connection, prefix });
    try {
      await w.ready;
      // Added by hand, as anyone who can write to Redis could; 3 attempts asked, none retried.
      const ids: string[] = [];
      for (const f of forged) ids.push((await queue.add('precompute', f.data, { attempts: 3 })).id!);
      await waitFor(async () => (await Promise.all(ids.map((id) => queue.getJobState(id)))).every((s) => s === 'failed'), 'every forged job to fail', 60_000, 100);
      for (const [i, f] of forged.entries()) {
        const failed = (await queue.getJob(ids[i]!))!;
        expect(failed.failedReason, f.what).toMatch(f.reason);
        expect(failed.attemptsMade, f.what).toBe(1);
      }
      expect(existsSync(marker)).toBe(false);
      expect(existsSync(join(dir, 'elsewhere'))).toBe(false);
      expect(await readdir(outputs)).toEqual([]);
      expect(await redis.exists(tableKeys('inferq', table).current)).toBe(0);
      // Each refusal is logged once, at warn, with the untrusted fields escaped.
      expect(w.output().match(/"msg":"scheduled job refused"/g)).toHaveLength(forged.length);
      expect(w.output()).toContain('x\\\\u202ey');
      expect(w.output()).not.toContain('\u202E');

      // The valid schedule: added from folder A; the worker has only its copy B (A is gone).
      const spec = join(specsA, 'team', 'spec.yaml');
      await writeFile(spec, specText(table, { parquet: join(outputs, 'tables', table) }));
      const name = `every-second-${table}`;
      const add = await runCli(['schedule', 'add', name, '--cron', '*/1 * * * * *', '--spec', spec, '--specs-root', specsA, '--to', 'both', '--model-repo', repo, '--redis', url, '--prefix', prefix]);
      expect(add.code, add.stderr).toBe(0);
      expect(add.stdout).toMatch(new RegExp(`"${name}" runs team/spec\\.yaml \\(sha256 [0-9a-f]{12}…, --to both\\)`));
      const list = await runCli(['schedule', 'list', '--redis', url, '--prefix', prefix]);
      expect(list.stdout).toMatch(new RegExp(`^${name}\\t\\*/1 \\* \\* \\* \\* \\*\\tnext 20\\S+\\tteam/spec\\.yaml\\tboth$`, 'm'));
      await rm(join(specsA, 'team'), { recursive: true });
      try {
        await waitFor(async () => (await redis.get(tableKeys('inferq', table).current)) !== null, 'the scheduled run', 90_000, 100);
      } finally {
        const rm = await runCli(['schedule', 'remove', name, '--redis', url, '--prefix', prefix]);
        expect(rm.code, rm.stderr).toBe(0);
      }
      const producer = new Producer({ redis: url });
      try {
        for (const key of ['DE:1:101', 'España:7:103', 'IT:10:102']) {
          const got = (await producer.lookup(table, key))!['score'] as number[];
          const want = expected(key);
          for (let k = 0; k < 2; k++) expect(Math.abs(got[k]! - want[k]!), key).toBeLessThan(1e-5);
        }
      } finally {
        await producer.close();
      }
      const runs = await readdir(join(outputs, 'tables', table));
      expect(runs.some((r) => existsSync(join(outputs, 'tables', table, r, '_SUCCESS')))).toBe(true);
      expect(existsSync(marker)).toBe(false);
    } finally {
      w.child.kill('SIGTERM');
      expect((await w.exited).code, w.output()).toBe(0);
      await queue.obliterate({ force: true });
      await queue.close();
      connection.disconnect();
    }
  }, 240_000);
});
