import { describe, expect, it } from 'vitest';
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

  it('a job\'s rows go to the worker\'s sinks and its own, each folder opened once; without an allow-list job sinks are refused', () => {
    const opened: string[] = [];
    const set = new SinkSet({ defaults: [open('/data/all')], allowJobSinksUnder: ['/data/jobs'], open: (uri) => (opened.push(uri), open(uri)), maxJobSinks: 2 });
    expect(set.forJob(undefined, 'j').map((s) => set.keyOf(s))).toEqual(['file:///data/all']);
    expect(set.forJob(['/data/jobs/a', 'parquet:/data/jobs/a/', '/data/all'], 'j').map((s) => set.keyOf(s))).toEqual(['file:///data/all', 'file:///data/jobs/a']);
    set.forJob(['/data/jobs/a'], 'k');
    expect(opened).toEqual(['file:///data/jobs/a']);
    set.forJob(['/data/jobs/b'], 'k');
    expect(() => set.forJob(['/data/jobs/c'], 'k')).toThrow(/already writes to 2 job sinks, its limit/);
    expect(set.all().length).toBe(3);
    const closed = new SinkSet({ defaults: [], open });
    expect(closed.active).toBe(false);
    expect(() => closed.forJob(['/data/jobs/a'], 'j')).toThrow(/this worker takes no job sinks \(start it with --allow-job-sinks <folder>\)/);
  });
});
