/**
 * HDFS (a real MiniDFSCluster over WebHDFS, started by test/infra) and the Parquet sink:
 * the WebHDFS client, `inferq predict --output` to HDFS with _SUCCESS, and Kafka workers
 * writing results to Parquet on HDFS: read back by pyarrow, exactly once across a
 * kill -9 and an HDFS outage.
 */
import { mkdtemp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { KafkaProducer, Producer } from '@inferq/producer';
import { forwardMlp } from '../examples/build/onnx-builder.js';
import { KafkaWorker, ModelPool, ModelRepository, ParquetSink, silentLogger, WebHdfs, WebHdfsError } from '@inferq/workers';
import { startHdfs } from './infra/hdfs.js';
import { runPython } from './infra/python.js';
import { hdfsServer, kafkaServer, redisServer } from './infra/servers.js';
import { runCli } from './helpers/cli.js';
import { committedTotal, createTopic, topicName, withAdmin } from './helpers/kafka.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { dropQueue, queueName, readStream, startWorker, waitFor } from './helpers/redis.js';

const webhdfs = await hdfsServer();
const brokers = await kafkaServer();
const hostPort = webhdfs.replace(/^http:\/\//, '');
const spec = smallMlp([4, 16, 2], 9);
let repo: string;
let fs: WebHdfs;

beforeAll(async () => {
  repo = join(await tempDir(), 'models');
  await writeModel(repo, 'mlp', '1', spec);
  fs = new WebHdfs({ url: webhdfs, user: 'inferq-test' });
});

afterAll(async () => {
  await fs.delete('/inferq-test', true).catch(() => undefined);
});

function features(rows: number, seed: number): number[][] {
  return Array.from({ length: rows }, (_, r) => Array.from({ length: 4 }, (_, c) => Math.sin(seed * 7 + r * 4 + c)));
}

/** Copies an HDFS folder tree to a local temp folder (pyarrow has no libhdfs here), skipping _temporary. */
async function download(client: WebHdfs, root: string): Promise<string> {
  const local = await mkdtemp(join(tmpdir(), 'inferq-hdfs-copy-'));
  const walk = async (dir: string, to: string): Promise<void> => {
    await mkdir(to, { recursive: true });
    for (const s of await client.listStatus(dir)) {
      if (s.pathSuffix === '_temporary') continue;
      const p = posix.join(dir, s.pathSuffix);
      if (s.type === 'DIRECTORY') await walk(p, join(to, s.pathSuffix));
      else await writeFile(join(to, s.pathSuffix), await client.open(p));
    }
  };
  await walk(root, local);
  return local;
}

/**
 * Reads a sink dataset with pyarrow (Hive partitioning) and checks every row against the
 * model: returns { rows, distinct (job_id,row) pairs, partition values, max error, files }.
 */
const READ_DATASET = `
import json, sys, glob, os
import pyarrow.dataset as ds
root = sys.argv[1]
files = sorted(glob.glob(os.path.join(root, '**', '*.parquet'), recursive=True))
t = ds.dataset(root, format='parquet', partitioning='hive').to_table()
rows = t.to_pylist()
print(json.dumps({
  'rows': len(rows),
  'distinct': len({(r['job_id'], r['row']) for r in rows}),
  'models': sorted({r['model'] for r in rows}),
  'versions': sorted({str(r['version']) for r in rows}),
  'dates': sorted({str(r['date']) for r in rows}),
  'columns': t.column_names,
  'files': [os.path.relpath(f, root) for f in files],
  'sample': [{k: (v if not hasattr(v, 'isoformat') else v.isoformat()) for k, v in r.items()} for r in rows[:3]],
  'all': [[r['job_id'], r['row'], r['score'][0], r['score'][1]] for r in rows],
}))
`;

interface Dataset {
  rows: number;
  distinct: number;
  models: string[];
  versions: string[];
  dates: string[];
  columns: string[];
  files: string[];
  all: [string, number, number, number][];
}

/** Every row equals the model's forward pass of the features its job was sent with. */
function expectRowsMatch(d: Dataset, featuresOf: (jobId: string) => number[][]): void {
  for (const [jobId, row, s0, s1] of d.all) {
    const x = featuresOf(jobId);
    const want = forwardMlp(spec, { features: Float32Array.from(x[row]!) }, 1);
    expect(Math.abs(s0 - want[0]!)).toBeLessThan(1e-5);
    expect(Math.abs(s1 - want[1]!)).toBeLessThan(1e-5);
  }
}

describe('WebHDFS client (real HDFS)', () => {
  it('CREATE (two-step 307), APPEND, OPEN, MKDIRS, RENAME, LISTSTATUS, GETFILESTATUS, DELETE', async () => {
    const dir = `/inferq-test/client-${Date.now()}`;
    expect(await fs.mkdirs(`${dir}/sub`)).toBe(true);
    await fs.create(`${dir}/a.txt`, new TextEncoder().encode('hello'));
    await fs.append(`${dir}/a.txt`, new TextEncoder().encode(', world'));
    expect((await fs.open(`${dir}/a.txt`)).toString()).toBe('hello, world');
    const big = Uint8Array.from({ length: 3 * 1024 * 1024 }, (_, i) => (i * 31) & 0xff);
    await fs.create(`${dir}/big.bin`, big);
    expect(Buffer.compare(await fs.open(`${dir}/big.bin`), Buffer.from(big))).toBe(0);
    expect(await fs.rename(`${dir}/a.txt`, `${dir}/sub/b.txt`)).toBe(true);
    expect((await fs.listStatus(dir)).map((s) => `${s.pathSuffix}:${s.type}`).sort()).toEqual(['big.bin:FILE', 'sub:DIRECTORY']);
    expect((await fs.getFileStatus(`${dir}/sub/b.txt`))?.length).toBe(12);
    expect(await fs.getFileStatus(`${dir}/nope`)).toBeUndefined();
    expect(await fs.delete(dir, true)).toBe(true);
    expect(await fs.getFileStatus(dir)).toBeUndefined();
  });

  it('errors carry the RemoteException and are not retried when they are the caller’s', async () => {
    const dir = `/inferq-test/errors-${Date.now()}`;
    await fs.create(`${dir}/x`, new Uint8Array([1]));
    const exists = await fs.create(`${dir}/x`, new Uint8Array([2])).catch((e: unknown) => e);
    expect(exists).toBeInstanceOf(WebHdfsError);
    expect((exists as WebHdfsError).exception).toBe('FileAlreadyExistsException');
    expect((exists as WebHdfsError).status).toBe(403);
    expect((exists as WebHdfsError).retriable).toBe(false);
    const missing = await fs.open(`${dir}/missing`).catch((e: unknown) => e);
    expect((missing as WebHdfsError).exception).toBe('FileNotFoundException');
    expect((missing as Error).message).toContain(`${dir}/missing`);
  });

  it('an HDFS that is down for a while: requests are retried with backoff and succeed once it is back', async () => {
    const own = await startHdfs();
    try {
      const client = new WebHdfs({ url: own.url, attempts: 30 });
      await client.create('/r/before', new Uint8Array([1]));
      await own.stop();
      const pending = client.create('/r/during', new Uint8Array([2, 3]));
      pending.catch(() => undefined); // awaited below; this only keeps an early failure from counting as unhandled
      const failFast = await new WebHdfs({ url: own.url, attempts: 2 }).open('/r/before').catch((e: unknown) => e);
      expect(failFast).toBeInstanceOf(WebHdfsError);
      expect((failFast as WebHdfsError).retriable).toBe(true);
      await own.start();
      await pending;
      expect([...(await client.open('/r/during'))]).toEqual([2, 3]);
    } finally {
      await own.destroy();
    }
  }, 180_000);
});

describe('inferq predict --output on HDFS', () => {
  it('writes part-00000.parquet and _SUCCESS into an HDFS folder; pyarrow reads the predictions', async () => {
    const dir = `/inferq-test/predict-${Date.now()}`;
    const r = await runCli(['predict', '--model-repo', 'examples/models', '--model', 'digit-tags', '--input', 'examples/data/digits.parquet', '--output', `webhdfs://${hostPort}${dir}/`, '--no-progress']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`→ webhdfs://${hostPort}${dir}/part-00000.parquet`);
    expect((await fs.listStatus(dir)).map((s) => s.pathSuffix).sort()).toEqual(['_SUCCESS', '_temporary', 'part-00000.parquet']);
    expect((await fs.listStatus(`${dir}/_temporary`)).length).toBe(0);
    const local = await download(fs, dir);
    const out = JSON.parse(
      await runPython(
        `import json,sys,pyarrow.parquet as pq\nt=pq.read_table(sys.argv[1]+'/part-00000.parquet')\nprint(json.dumps({'rows':t.num_rows,'cols':t.column_names}))`,
        [local],
      ),
    ) as { rows: number; cols: string[] };
    expect(out.rows).toBe(1797);
    expect(out.cols).toContain('tags');
    // hdfs://host/path reaches WebHDFS at $WEBHDFS_URL.
    const viaHdfs = await runCli(['predict', '--model-repo', 'examples/models', '--model', 'digit-tags', '--input', 'examples/data/digits.parquet', '--output', `hdfs://namenode${dir}/again.parquet`, '--no-progress'], {
      env: { ...process.env, WEBHDFS_URL: webhdfs },
    });
    expect(viaHdfs.code, viaHdfs.stderr).toBe(0);
    expect((await fs.getFileStatus(`${dir}/again.parquet`))?.length).toBeGreaterThan(1000);
  }, 120_000);
});

describe('a model repository on HDFS', () => {
  it('inferq predict --model-repo webhdfs://… loads the model from HDFS', async () => {
    const root = `/inferq-test/models-${Date.now()}`;
    await fs.create(`${root}/digit-tags/1/model.onnx`, await readFile('examples/models/digit-tags/1/model.onnx'));
    const out = join(await tempDir(), 'out.parquet');
    const r = await runCli(['predict', '--model-repo', `webhdfs://${hostPort}${root}`, '--model', 'digit-tags', '--input', 'examples/data/digits.parquet', '--output', out, '--no-progress']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('1,797 rows');
    expect(r.stdout).toContain('model digit-tags:1');
    const missing = await runCli(['predict', '--model-repo', `webhdfs://${hostPort}/inferq-test/no-such-repo`, '--model', 'digit-tags', '--input', 'examples/data/digits.parquet', '--output', `${out}.2`, '--no-progress']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('/inferq-test/no-such-repo": no such folder, or it is empty');
  }, 120_000);
});

describe('Kafka workers with a Parquet sink on HDFS', () => {
  const args = (topic: string, sink: string, more: string[] = []): string[] => [
    '--transport', 'kafka', '--topic', topic, '--group', `g-${topic}`, '--brokers', brokers.join(','), '--model-repo', repo, '--models', 'mlp', '--threads', '1',
    '--sink', `parquet:${sink}`, '--sink-roll-rows', '400', '--sink-roll-ms', '300', '--session-timeout-ms', '6000', ...more,
  ];

  it('results land once in model=/version=/date= folders, read back by pyarrow equal to the model; offsets follow the rolls', async () => {
    const topic = topicName();
    await createTopic(brokers, topic, 3);
    const dir = `/inferq-test/sink-${topic}`;
    const producer = new KafkaProducer({ brokers, topic });
    const w = startWorker(args(topic, `webhdfs://${hostPort}${dir}`));
    try {
      await w.ready;
      const n = 300;
      await Promise.all(Array.from({ length: n }, (_, k) => producer.enqueue('mlp', features(1 + (k % 4), k), { jobId: `s-${k}`, rowIds: Array.from({ length: 1 + (k % 4) }, (_, i) => `r${k}.${i}`) })));
      await waitFor(async () => (await committedTotal(brokers, `g-${topic}`, topic)) === n, 'every offset committed after its roll', 60_000, 200);
      const d = JSON.parse(await runPython(READ_DATASET, [await download(fs, dir)])) as Dataset;
      const total = Array.from({ length: n }, (_, k) => 1 + (k % 4)).reduce((a, b) => a + b, 0);
      expect(d.rows).toBe(total);
      expect(d.distinct).toBe(total);
      expect(d.models).toEqual(['mlp']);
      expect(d.versions).toEqual(['1']);
      expect(d.dates).toEqual([new Date().toISOString().slice(0, 10)]);
      expect(d.columns).toEqual(['job_id', 'row', 'row_id', 'score', 'ts', 'model', 'version', 'date']);
      expect(d.files.every((f) => /^model=mlp\/version=1\/date=\d{4}-\d\d-\d\d\/part-[\w-]+-\d{20}-\d{20}-1of1\.parquet$/.test(f))).toBe(true);
      expectRowsMatch(d, (id) => {
        const k = Number(id.slice(2));
        return features(1 + (k % 4), k);
      });
    } finally {
      w.child.kill('SIGTERM');
      await w.exited;
      await producer.close();
    }
  }, 180_000);

  it('the same sink on local disk (file://): pyarrow reads the same dataset', async () => {
    const topic = topicName();
    await createTopic(brokers, topic, 2);
    const dir = await mkdtemp(join(tmpdir(), 'inferq-sink-local-'));
    const producer = new KafkaProducer({ brokers, topic });
    const w = startWorker(args(topic, `file://${dir}/results`));
    try {
      await w.ready;
      await Promise.all(Array.from({ length: 120 }, (_, k) => producer.enqueue('mlp', features(3, k), { jobId: `l-${k}` })));
      await waitFor(async () => (await committedTotal(brokers, `g-${topic}`, topic)) === 120, 'every offset committed after its roll', 60_000, 100);
      const d = JSON.parse(await runPython(READ_DATASET, [`${dir}/results`])) as Dataset;
      expect(d.rows).toBe(360);
      expect(d.distinct).toBe(360);
      expectRowsMatch(d, (id) => features(3, Number(id.slice(2))));
    } finally {
      w.child.kill('SIGTERM');
      await w.exited;
      await producer.close();
    }
  }, 120_000);

  it('a replay of messages a published roll already holds (a crash between roll and commit) writes nothing twice', async () => {
    const topic = topicName();
    await createTopic(brokers, topic, 1);
    const dir = await mkdtemp(join(tmpdir(), 'inferq-sink-replay-'));
    const producer = new KafkaProducer({ brokers, topic });
    const run = async (): Promise<KafkaWorker> => {
      const pool = new ModelPool(new ModelRepository(repo), { logger: silentLogger(), batching: { maxDelayMs: 1 } });
      const sink = new ParquetSink({ location: dir, logger: silentLogger(), rollMs: 100 });
      const worker = new KafkaWorker({ brokers, topic, group: `g-${topic}`, models: pool, logger: silentLogger(), sinks: [sink], sessionTimeoutMs: 6000 });
      await worker.start();
      await waitFor(async () => (await committedTotal(brokers, `g-${topic}`, topic)) === 10, 'all 10 committed', 30_000, 50);
      await worker.close(10_000);
      await pool.close();
      return worker;
    };
    try {
      await Promise.all(Array.from({ length: 10 }, (_, k) => producer.enqueue('mlp', features(2, k), { jobId: `p-${k}` })));
      const first = await run();
      expect(first.stats.rolls).toBeGreaterThan(0);
      const files = JSON.parse(await runPython(READ_DATASET, [dir])) as Dataset;
      expect(files.rows).toBe(20);
      // As if the worker had died after publishing the roll and before committing: the group is back at 0.
      await withAdmin(brokers, (admin) => admin.setOffsets({ groupId: `g-${topic}`, topic, partitions: [{ partition: 0, offset: '0' }] }));
      const second = await run();
      expect(second.stats.skippedWritten).toBe(10);
      expect(second.stats.completed).toBe(0);
      const after = JSON.parse(await runPython(READ_DATASET, [dir])) as Dataset;
      expect(after.files).toEqual(files.files);
      expect(after.rows).toBe(20);
    } finally {
      await producer.close();
    }
  }, 120_000);

  it('kill -9 during rolls: no partial file is ever visible, and after restart and replay every row is there exactly once', async () => {
    const topic = topicName();
    await createTopic(brokers, topic, 3);
    const dir = `/inferq-test/kill-${topic}`;
    const producer = new KafkaProducer({ brokers, topic });
    // Enough work (150,000 rows, 30 rolls of 5,000) that the kill lands mid-run.
    const n = 3000;
    await Promise.all(Array.from({ length: n }, (_, k) => producer.enqueue('mlp', features(50, k), { jobId: `k-${k}` })));
    const victim = startWorker(args(topic, `webhdfs://${hostPort}${dir}`, ['--sink-roll-rows', '5000']));
    let next: ReturnType<typeof startWorker> | undefined;
    try {
      await victim.ready;
      await waitFor(async () => (await committedTotal(brokers, `g-${topic}`, topic)) >= 100, 'a first roll committed', 60_000, 5);
      victim.child.kill('SIGKILL');
      await victim.exited;
      expect(await committedTotal(brokers, `g-${topic}`, topic)).toBeLessThan(n); // it died mid-run
      // What a reader sees right after the crash: only complete files (each one parses).
      const atCrash = JSON.parse(await runPython(READ_DATASET, [await download(fs, dir)])) as Dataset;
      expect(atCrash.distinct).toBe(atCrash.rows);
      next = startWorker(args(topic, `webhdfs://${hostPort}${dir}`));
      await next.ready;
      await waitFor(async () => (await committedTotal(brokers, `g-${topic}`, topic)) === n, 'every offset committed', 120_000, 200);
      const d = JSON.parse(await runPython(READ_DATASET, [await download(fs, dir)])) as Dataset;
      expect(d.rows).toBe(n * 50);
      expect(d.distinct).toBe(n * 50);
      expectRowsMatch({ ...d, all: d.all.filter((_, i) => i % 997 === 0) }, (id) => features(50, Number(id.slice(2))));
    } finally {
      next?.child.kill('SIGTERM');
      await next?.exited;
      await producer.close();
    }
  }, 240_000);

  it('HDFS down for a while: nothing is acknowledged, rolls are retried, then everything is written once', async () => {
    const own = await startHdfs();
    const ownHostPort = own.url.replace(/^http:\/\//, '');
    const topic = topicName();
    await createTopic(brokers, topic, 2);
    const producer = new KafkaProducer({ brokers, topic });
    const w = startWorker(args(topic, `webhdfs://${ownHostPort}/out`));
    try {
      await w.ready;
      await Promise.all(Array.from({ length: 100 }, (_, k) => producer.enqueue('mlp', features(2, k), { jobId: `h-${k}` })));
      await waitFor(async () => (await committedTotal(brokers, `g-${topic}`, topic)) === 100, 'the first 100 written and committed', 60_000, 100);
      await own.stop();
      await Promise.all(Array.from({ length: 200 }, (_, k) => producer.enqueue('mlp', features(2, 100 + k), { jobId: `h-${100 + k}` })));
      // The worker processes them, but cannot publish the rolls: the offsets must not move.
      await waitFor(() => w.output().includes('sink roll failed'), 'a failed roll to be reported', 60_000, 100);
      expect(await committedTotal(brokers, `g-${topic}`, topic)).toBe(100);
      await own.start();
      await waitFor(async () => (await committedTotal(brokers, `g-${topic}`, topic)) === 300, 'everything committed once HDFS is back', 120_000, 200);
      const d = JSON.parse(await runPython(READ_DATASET, [await download(new WebHdfs({ url: own.url }), '/out')])) as Dataset;
      expect(d.rows).toBe(600);
      expect(d.distinct).toBe(600);
      expect(w.child.exitCode).toBeNull();
    } finally {
      w.child.kill('SIGTERM');
      await w.exited;
      await producer.close();
      await own.destroy();
    }
  }, 300_000);
});

describe('Redis workers with a Parquet sink on HDFS', async () => {
  const redisUrl = await redisServer();
  const args = (queue: string, sink: string, more: string[] = []): string[] => [
    '--transport', 'redis', '--queue', queue, '--redis', redisUrl, '--model-repo', repo, '--models', 'mlp', '--threads', '1',
    '--sink', `parquet:${sink}`, '--sink-roll-rows', '400', '--sink-roll-ms', '300', ...more,
  ];
  const idle = async (queue: string): Promise<boolean> => {
    const q = new Queue(queue, { connection: { url: redisUrl }, prefix: 'inferq' });
    try {
      const c = await q.getJobCounts('wait', 'active', 'delayed', 'prioritized');
      return Object.values(c).every((v) => v === 0);
    } finally {
      await q.close();
    }
  };

  it('every job\'s rows are written once; a job id used again after its job completed is a new job, written again', async () => {
    const queue = queueName();
    const dir = `/inferq-test/redis-sink-${queue}`;
    const producer = new Producer({ redis: redisUrl, queue });
    const w = startWorker(args(queue, `webhdfs://${hostPort}${dir}`));
    try {
      await w.ready;
      const n = 400;
      await Promise.all(Array.from({ length: n }, (_, k) => producer.enqueue('mlp', features(1 + (k % 3), k), { jobId: `r-${k}` })));
      await waitFor(() => idle(queue), 'the queue to drain', 60_000, 100);
      const total = Array.from({ length: n }, (_, k) => 1 + (k % 3)).reduce((a, b) => a + b, 0);
      const d = JSON.parse(await runPython(READ_DATASET, [await download(fs, dir)])) as Dataset;
      expect(d.rows).toBe(total);
      expect(d.distinct).toBe(total);
      expectRowsMatch(d, (id) => {
        const k = Number(id.slice(2));
        return features(1 + (k % 3), k);
      });
      // The same id once its job completed is a new job (BullMQ forgot the old one): its row is written too.
      await producer.enqueue('mlp', features(1, 0), { jobId: 'r-0' });
      await waitFor(async () => (JSON.parse(await runPython(READ_DATASET, [await download(fs, dir)])) as Dataset).rows === total + 1, 'the new job\'s row', 30_000, 200);
    } finally {
      w.child.kill('SIGTERM');
      await w.exited;
      await producer.close();
      await dropQueue(redisUrl, queue);
    }
  }, 180_000);

  it('a job names sinks of its own: its rows go there too, only under allowed folders, packed or not, once', async () => {
    const queue = queueName();
    const root = `/inferq-test/redis-jobsinks-${queue}`;
    const uri = (path: string): string => `webhdfs://${hostPort}${root}${path}`;
    const w = startWorker(args(queue, uri('/all'), ['--allow-job-sinks', uri('/jobs')]));
    // Linger: jobs that name the same sinks travel as one pack.
    const producer = new Producer({ redis: redisUrl, queue, linger: { ms: 10 } });
    const redis = new Redis(redisUrl);
    try {
      await w.ready;
      const n = 60;
      const teamA = (k: number): boolean => k % 3 === 0;
      const ids = await Promise.all(
        Array.from({ length: n }, (_, k) => producer.enqueue('mlp', features(1 + (k % 2), k), teamA(k) ? { sinks: [`parquet:${uri('/jobs/team-a')}`] } : {})),
      );
      const seed = new Map(ids.map((id, k) => [id, k]));
      // Refused before the job runs: outside the allowed folder, and escaping it with "..".
      const outside = await producer.enqueue('mlp', features(1, 1), { jobId: 'outside', sinks: [uri('/elsewhere')] });
      const escape = await producer.enqueue('mlp', features(1, 1), { jobId: 'escape', sinks: [uri('/jobs/../all2')] });
      await waitFor(() => idle(queue), 'the queue to drain', 60_000, 100);
      const dead = await readStream(redis, `inferq:${queue}:dead`);
      const reasons = new Map(dead.map((e) => [e.fields.get('id')!.toString(), e.fields.get('reason')!.toString()]));
      expect([...reasons.keys()].sort()).toEqual([escape, outside].sort());
      expect(reasons.get(outside)).toMatch(/job sink ".*\/elsewhere" is not allowed: this worker takes job sinks under ".*\/jobs" only/);
      expect(reasons.get(escape)).toMatch(/is not allowed/);
      const featuresOf = (id: string): number[][] => features(1 + (seed.get(id)! % 2), seed.get(id)!);
      const rowsOf = (ks: number[]): number => ks.reduce((a, k) => a + 1 + (k % 2), 0);
      const all = Array.from({ length: n }, (_, k) => k);
      const everything = JSON.parse(await runPython(READ_DATASET, [await download(fs, `${root}/all`)])) as Dataset;
      expect(everything.rows).toBe(rowsOf(all));
      expect(everything.distinct).toBe(rowsOf(all));
      expectRowsMatch(everything, featuresOf);
      const team = JSON.parse(await runPython(READ_DATASET, [await download(fs, `${root}/jobs/team-a`)])) as Dataset;
      expect(team.rows).toBe(rowsOf(all.filter(teamA)));
      expect(new Set(team.all.map(([id]) => id))).toEqual(new Set(ids.filter((_, k) => teamA(k))));
      expectRowsMatch(team, featuresOf);
      expect((await fs.listStatus(root)).map((st) => st.pathSuffix).sort()).toEqual(['all', 'jobs']);
      expect(team.distinct).toBe(team.rows);
    } finally {
      w.child.kill('SIGTERM');
      await w.exited;
      await producer.close();
      redis.disconnect();
      await dropQueue(redisUrl, queue);
    }
  }, 180_000);

  it('kill -9 of a worker mid-run: its jobs are taken over and every row is written exactly once', async () => {
    const queue = queueName();
    const dir = `/inferq-test/redis-kill-${queue}`;
    const producer = new Producer({ redis: redisUrl, queue });
    const more = ['--lock-duration-ms', '2000', '--sink-roll-rows', '1000'];
    const victim = startWorker(args(queue, `webhdfs://${hostPort}${dir}`, more));
    const survivor = startWorker(args(queue, `webhdfs://${hostPort}${dir}`, more));
    try {
      await Promise.all([victim.ready, survivor.ready]);
      const n = 2000;
      await Promise.all(Array.from({ length: n }, (_, k) => producer.enqueue('mlp', features(5, k), { jobId: `v-${k}` })));
      await waitFor(async () => (await fs.getFileStatus(dir)) !== undefined, 'the first rolls', 60_000, 20);
      victim.child.kill('SIGKILL');
      await victim.exited;
      await waitFor(() => idle(queue), 'the queue to drain', 120_000, 200);
      const d = JSON.parse(await runPython(READ_DATASET, [await download(fs, dir)])) as Dataset;
      expect(d.rows).toBe(n * 5);
      expect(d.distinct).toBe(n * 5);
    } finally {
      survivor.child.kill('SIGTERM');
      await survivor.exited;
      await producer.close();
      await dropQueue(redisUrl, queue);
    }
  }, 240_000);
});
