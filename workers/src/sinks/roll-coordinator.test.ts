import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SinkRefusedError } from '@inferq/shared';
import { openParquet } from '../io/parquet.js';
import { silentLogger } from '../logging.js';
import { ParquetSink } from './parquet-sink.js';
import { noMetrics } from '../ops/hooks.js';
import type { WorkerMetrics } from '../ops/hooks.js';
import { RollAbandonedError, RollCoordinator, sinkLabel } from './roll-coordinator.js';
import type { SinkJob } from './roll-coordinator.js';
import { SinkSet } from './sink-set.js';
import { MemoryJournal } from '../sources/memory/source.js';


const open = (uri: string): ParquetSink => new ParquetSink({ location: uri, logger: silentLogger(), rollRows: 1_000_000, rollMs: 3_600_000 });

function result(rows: number): { outputs: { score: { dtype: 'float32'; shape: number[]; data: Float32Array } }; rows: number; model: string; version: string } {
  return { outputs: { score: { dtype: 'float32', shape: [rows, 1], data: Float32Array.from({ length: rows }, (_, i) => i) } }, rows, model: 'm', version: '1' };
}

const job = (id: string, over: Partial<SinkJob> = {}): SinkJob => ({ id, run: `${id}:1`, rerun: false, rowIds: undefined, sinks: undefined, ...over });

async function partFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      if (e.name === '_temporary') continue;
      if (e.isDirectory()) await walk(join(d, e.name));
      else out.push(join(d, e.name));
    }
  };
  await walk(dir);
  return out.sort();
}

/** The job_id column of every row of the files, sorted. */
async function jobIdsIn(files: readonly string[]): Promise<string[]> {
  const ids: string[] = [];
  for (const f of files) {
    const reader = await openParquet(f);
    for await (const batch of reader.batches()) ids.push(...(batch.getChild('job_id')!.toArray() as string[]));
    await reader.close();
  }
  return ids.sort();
}

async function setup(): Promise<{ root: string; journal: MemoryJournal; coordinator: (group: string) => { c: RollCoordinator; sinks: SinkSet } }> {
  const root = await mkdtemp(join(tmpdir(), 'inferq-rolls-'));
  const journal = new MemoryJournal();
  return {
    root,
    journal,
    coordinator: (group) => {
      const sinks = new SinkSet({ defaults: [open(join(root, 'all'))], allowJobSinksUnder: [join(root, 'jobs')], open });
      return { c: new RollCoordinator({ sinks, journal, group, logger: silentLogger(), maxWaiting: 1000, tickMs: 5 }), sinks };
    },
  };
}

describe('RollCoordinator', () => {
  it('a job run again after its rows were published (a crash before the acknowledgement) is not written twice; one whose file is gone is', async () => {
    const { root, coordinator } = await setup();
    const first = coordinator('p1').c;
    const writes = [first.write(job('a'), result(2)), first.write(job('b', { sinks: [join(root, 'jobs', 't')] }), result(3))];
    await first.flush(Date.now() + 10_000);
    expect(await Promise.all(writes)).toEqual(['written', 'written']);
    // a's rows in the worker's sink; b's in it and in its own (one roll or two, as the jobs arrived).
    const written = await partFiles(root);
    expect(written.filter((f) => f.includes('/jobs/t/'))).toHaveLength(1);
    expect(await jobIdsIn(written.filter((f) => f.includes('/all/')))).toEqual(['a', 'a', 'b', 'b', 'b']);
    // The process "crashed" before acknowledging: the same runs come to another process.
    const second = coordinator('p2').c;
    expect(await second.write(job('a', { rerun: true }), result(2))).toBe('already');
    expect(await second.write(job('b', { rerun: true, sinks: [join(root, 'jobs', 't')] }), result(3))).toBe('already');
    expect(second.stats.alreadySunk).toBe(2);
    // b's file in its own sink is gone (never published): only that sink gets b's rows again.
    await rm(written.find((f) => f.includes('/jobs/'))!);
    const again = second.write(job('b', { rerun: true, sinks: [join(root, 'jobs', 't')] }), result(3));
    await second.flush(Date.now() + 10_000);
    expect(await again).toBe('written');
    const now = await partFiles(root);
    expect(now.filter((f) => f.includes('/all/'))).toEqual(written.filter((f) => f.includes('/all/')));
    expect(now.filter((f) => f.includes('/jobs/'))).toHaveLength(1);
    // A first run (rerun false) never reads the journal, whatever it holds.
    const third = coordinator('p3').c;
    const fresh = third.write(job('a'), result(2));
    await third.flush(Date.now() + 10_000);
    expect(await fresh).toBe('written');
  });

  it('a job sink that refuses for good fails only its jobs; the rest of the roll is written, without the refused jobs\' rows anywhere', async () => {
    const { root, journal, coordinator } = await setup();
    await mkdir(join(root, 'jobs', 'bad'), { recursive: true });
    await writeFile(join(root, 'jobs', 'bad', 'model=m'), 'in the way of the partition folder');
    const { c } = coordinator('p1');
    const good = c.write(job('good'), result(2));
    const bad = c.write(job('bad', { sinks: [join(root, 'jobs', 'bad')] }), result(2));
    bad.catch(() => undefined);
    const alsoGood = c.write(job('also-good', { sinks: [join(root, 'jobs', 'fine')] }), result(1));
    await c.flush(Date.now() + 10_000);
    await expect(good).resolves.toBe('written');
    await expect(alsoGood).resolves.toBe('written');
    await expect(bad).rejects.toBeInstanceOf(SinkRefusedError);
    await expect(bad).rejects.toThrow(/job sink "file:\/\/.*\/jobs\/bad" refused the rows: .*ENOTDIR/);
    expect(c.stats.refused).toBe(1);
    expect(journal.records.has('bad:1/bad')).toBe(false);
    expect(await jobIdsIn(await partFiles(join(root, 'all')))).toEqual(['also-good', 'good', 'good']);
    expect(await jobIdsIn(await partFiles(join(root, 'jobs', 'fine')))).toEqual(['also-good']);
    expect(await partFiles(join(root, 'jobs', 'bad'))).toEqual([join(root, 'jobs', 'bad', 'model=m')]);
  });

  it('a worker sink that refuses for good is fatal: nothing is written or acknowledged, and later writes are refused at once', async () => {
    const root = await mkdtemp(join(tmpdir(), 'inferq-rolls-'));
    await mkdir(join(root, 'all'), { recursive: true });
    await writeFile(join(root, 'all', 'model=m'), 'in the way');
    const sinks = new SinkSet({ defaults: [open(join(root, 'all'))], open });
    const fatal: Error[] = [];
    const c = new RollCoordinator({ sinks, journal: new MemoryJournal(), group: 'p1', logger: silentLogger(), maxWaiting: 1000, tickMs: 5, onFatal: (e) => fatal.push(e) });
    const w = c.write(job('x'), result(1));
    w.catch(() => undefined);
    expect(await c.flush(Date.now() + 10_000)).toBe(false);
    await expect(w).rejects.toBeInstanceOf(RollAbandonedError);
    expect(fatal).toHaveLength(1);
    expect(fatal[0]!.message).toMatch(/ENOTDIR/);
    await expect(c.write(job('y'), result(1))).rejects.toBeInstanceOf(RollAbandonedError);
    expect(await partFiles(join(root, 'all'))).toEqual([join(root, 'all', 'model=m')]);
  });

  it('drain() gives up at its deadline: waiting jobs are rejected (never acknowledged), and a roll stuck retrying stops', async () => {
    const { root, coordinator } = await setup();
    const { c } = coordinator('p1');
    // An HDFS that is not there: every stage fails with a retriable error.
    const remote = new SinkSet({ defaults: [new ParquetSink({ location: 'webhdfs://127.0.0.1:1/x', logger: silentLogger() })], open });
    const stuck = new RollCoordinator({ sinks: remote, journal: new MemoryJournal(), group: 'p2', logger: silentLogger(), maxWaiting: 1000, tickMs: 5 });
    const w = stuck.write(job('z'), result(1));
    w.catch(() => undefined);
    const t0 = Date.now();
    expect(await stuck.flush(Date.now() + 1500)).toBe(false);
    expect(Date.now() - t0).toBeLessThan(3000);
    await expect(w).rejects.toBeInstanceOf(RollAbandonedError);
    // An idle coordinator drains at once.
    expect(await c.flush(Date.now() + 1000)).toBe(true);
    expect(await partFiles(root)).toEqual([]);
  });

  it('tells the metrics each sink\'s rolled rows and failed attempts: the worker\'s own by URI (no credentials), job sinks as "job"', async () => {
    const { root } = await setup();
    await mkdir(join(root, 'jobs', 'bad'), { recursive: true });
    await writeFile(join(root, 'jobs', 'bad', 'model=m'), 'in the way of the partition folder');
    const seen: [string, string, number?][] = [];
    const metrics: WorkerMetrics = {
      ...noMetrics,
      sink: (label) => ({ rolled: (rows, seconds) => seen.push([label, 'rolled', seconds >= 0 ? rows : -1]), failed: () => seen.push([label, 'failed']) }),
    };
    const sinks = new SinkSet({ defaults: [open(join(root, 'all'))], allowJobSinksUnder: [join(root, 'jobs')], open });
    const c = new RollCoordinator({ sinks, journal: new MemoryJournal(), group: 'p1', logger: silentLogger(), maxWaiting: 1000, tickMs: 5, metrics });
    const writes = [c.write(job('a'), result(2)), c.write(job('b', { sinks: [join(root, 'jobs', 'fine')] }), result(3)), c.write(job('c', { sinks: [join(root, 'jobs', 'bad')] }), result(4))];
    writes[2]!.catch(() => undefined);
    await c.flush(Date.now() + 10_000);
    await Promise.allSettled(writes);
    const own = join(root, 'all');
    expect(sinkLabel(sinks, sinks.defaults()[0]!)).toBe(own);
    // One roll or two, as the jobs arrived: the refused job sink fails once, and c's rows go nowhere.
    const total = (label: string, what: string): number => seen.filter(([l, w]) => l === label && w === what).reduce((n, [, , rows]) => n + (rows ?? 1), 0);
    expect(total(own, 'rolled')).toBe(2 + 3);
    expect(total('job', 'rolled')).toBe(3);
    expect(total('job', 'failed')).toBe(1);
    expect(total(own, 'failed')).toBe(0);
    expect(new Set(seen.map(([l]) => l))).toEqual(new Set([own, 'job']));

    const remote = new SinkSet({ defaults: [new ParquetSink({ location: 'webhdfs://someone:secret@127.0.0.1:1/x', logger: silentLogger() })], open });
    expect(sinkLabel(remote, remote.defaults()[0]!)).toBe('webhdfs://127.0.0.1:1/x');
  });
});
