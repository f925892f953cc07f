import { mkdir, mkdtemp, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidInputError, SinkRefusedError } from '@inferq/shared';
import { silentLogger } from '../logging.js';
import { ParquetSink } from './parquet-sink.js';
import { SinkSet, canonicalKey } from './sink-set.js';

const open = (uri: string): ParquetSink => new ParquetSink({ location: uri, logger: silentLogger() });

describe('SinkSet', () => {
  it('spells each folder one way: local paths as file:// URIs, HDFS with . and .. resolved', () => {
    expect(canonicalKey('/data/out/')).toBe('file:///data/out');
    expect(canonicalKey('file:///data/out/./a/../b')).toBe('file:///data/out/b');
    expect(canonicalKey('webhdfs://NN:9870/r/x/../y/')).toBe('webhdfs://nn:9870/r/y');
    expect(() => canonicalKey('s3://bucket/x')).toThrow(/unknown scheme "s3"/);
  });

  it('a job sink is allowed only inside an allowed folder of the same store', () => {
    const set = new SinkSet({ defaults: [open('/data/all')], allowJobSinksUnder: ['webhdfs://nn:9870/jobs', '/data/jobs'], open });
    expect(set.check('parquet:webhdfs://nn:9870/jobs/team-a', 'j')).toBe('webhdfs://nn:9870/jobs/team-a');
    expect(set.check('/data/jobs/x/y', 'j')).toBe('file:///data/jobs/x/y');
    expect(set.check('/data/all', 'j')).toBe('file:///data/all'); // the worker's own sink
    const refused = (spec: string): string => {
      try {
        set.check(spec, 'job-1');
      } catch (err) {
        return (err as Error).message;
      }
      return 'allowed';
    };
    expect(refused('webhdfs://nn:9870/jobs/../secret')).toMatch(/job sink "webhdfs:\/\/nn:9870\/jobs\/\.\.\/secret" is not allowed: this worker takes job sinks under "webhdfs:\/\/nn:9870\/jobs", "\/data\/jobs" only \(job job-1\)/);
    expect(refused('/data/jobs-evil/x')).toMatch(/is not allowed/); // a sibling with the same prefix
    expect(refused('webhdfs://other:9870/jobs/a')).toMatch(/is not allowed/); // another cluster
    expect(refused('file:///etc')).toMatch(/is not allowed/);
    expect(refused('ftp://x/y')).toMatch(/job sink "ftp:\/\/x\/y": .*unknown scheme "ftp"/);
  });

  it('a job\'s rows go to the worker\'s sinks and its own, each folder opened once; without an allow-list job sinks are refused', async () => {
    const root = await mkdtemp(join(tmpdir(), 'inferq-sinkset-'));
    const opened: string[] = [];
    const set = new SinkSet({ defaults: [open(`${root}/all`)], allowJobSinksUnder: [`${root}/jobs`], open: (uri) => (opened.push(uri), open(uri)), maxJobSinks: 2 });
    expect((await set.forJob(undefined, 'j')).map((s) => set.keyOf(s))).toEqual([`file://${root}/all`]);
    expect((await set.forJob([`${root}/jobs/a`, `parquet:${root}/jobs/a/`, `${root}/all`], 'j')).map((s) => set.keyOf(s))).toEqual([`file://${root}/all`, `file://${root}/jobs/a`]);
    await set.forJob([`${root}/jobs/a`], 'k');
    expect(opened).toEqual([`file://${root}/jobs/a`]);
    await set.forJob([`${root}/jobs/b`], 'k');
    await expect(set.forJob([`${root}/jobs/c`], 'k')).rejects.toThrow(/already writes to 2 job sinks, its limit/);
    expect(set.all().length).toBe(3);
    const closed = new SinkSet({ defaults: [], open });
    expect(closed.active).toBe(false);
    await expect(closed.forJob([`${root}/jobs/a`], 'j')).rejects.toThrow(/this worker takes no job sinks \(start it with --allow-job-sinks <folder>\)/);
  });

  it('refuses job sinks that escape through a symlink, contain control characters, or cannot be written (before any row is buffered)', async () => {
    const root = await mkdtemp(join(tmpdir(), 'inferq-sinkset-'));
    const outside = await mkdtemp(join(tmpdir(), 'inferq-outside-'));
    await mkdir(join(root, 'jobs'), { recursive: true });
    await symlink(outside, join(root, 'jobs', 'link'));
    await writeFile(join(root, 'jobs', 'a-file'), 'not a folder');
    const set = new SinkSet({ defaults: [], allowJobSinksUnder: [`${root}/jobs`], open });
    await expect(set.forJob([`${root}/jobs/link/x`], 'j')).rejects.toThrow(/is not allowed: it resolves to .*inferq-outside-.*\/x, outside ".*\/jobs" \(a symlink\)/);
    await expect(set.forJob([`${root}/jobs/bad\u0000name`], 'j')).rejects.toThrow(/job sink ".*bad\\u0000name" contains a control character/);
    const underFile = set.forJob([`${root}/jobs/a-file/sub`], 'j');
    await expect(underFile).rejects.toBeInstanceOf(SinkRefusedError);
    await expect(underFile).rejects.toThrow(/job sink "file:\/\/.*\/jobs\/a-file\/sub" cannot be written: .*ENOTDIR/);
    await expect(set.forJob([`${root}/jobs/link/x`], 'j')).rejects.toBeInstanceOf(InvalidInputError);
    // A good folder next to them opens (and is created by the probe).
    expect((await set.forJob([`${root}/jobs/ok`], 'j')).map((s) => set.keyOf(s))).toEqual([`file://${root}/jobs/ok`]);
  });

  it('roll records read back from a queue name only roll files inside a sink this worker may write', async () => {
    const root = await mkdtemp(join(tmpdir(), 'inferq-sinkset-'));
    const set = new SinkSet({ defaults: [open(`${root}/all`)], allowJobSinksUnder: [`${root}/jobs`], open });
    const good = `${root}/all/model=m/version=1/date=2026-11-30/part-redis-q-ab12-00000000000000000000-00000000000000000003-1of1.parquet`;
    expect((await set.recordedFiles(`file://${root}/all`, [good], 'j'))?.files).toEqual([good]);
    for (const files of [
      ['/etc/passwd'],
      [`${root}/all/../../etc/passwd`],
      [`${root}/all/model=m/version=1/date=2026-11-30/../../../../x.parquet`],
      [`${root}/all/model=m/version=1/date=2026-11-30/not-a-part.txt`],
      [`${root}/all/model=m/part-redis-q-ab12-00000000000000000000-00000000000000000003-1of1.parquet`],
      'not an array',
      [42],
      [],
    ]) {
      expect(await set.recordedFiles(`file://${root}/all`, files, 'j'), JSON.stringify(files)).toBeUndefined();
    }
    // A sink key the worker may not write is no sink at all.
    expect(await set.recordedFiles('file:///etc', [good], 'j')).toBeUndefined();
  });
});
