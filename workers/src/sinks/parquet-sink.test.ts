/** The Parquet sink's roll naming and crash recovery, on local disk (its HDFS behaviour is in hdfs.test.ts). */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../../../test/helpers/models.js';
import { silentLogger } from '../logging.js';
import { ParquetSink } from './parquet-sink.js';
import type { SinkRecord } from './parquet-sink.js';

const record = (seq: number, model = 'm'): SinkRecord => ({
  seq,
  jobId: `j${seq}`,
  rowIds: undefined,
  rows: 2,
  model,
  version: '1',
  ts: Date.UTC(2026, 10, 22, 12),
  outputs: { score: { dtype: 'float32', shape: [2, 1], data: Float32Array.from([seq, seq + 0.5]) } },
});

describe('ParquetSink', () => {
  it('a roll writes one file per partition folder, named by its offset range, and keeps later records', async () => {
    const base = join(await tempDir(), 'out');
    const sink = new ParquetSink({ location: base, logger: silentLogger(), rollRows: 6 });
    for (const seq of [10, 11, 12]) sink.add('t-0', record(seq, seq === 11 ? 'other' : 'm'));
    expect(sink.due('t-0')).toBe(true); // 6 rows
    sink.add('t-0', record(14));
    const r = await sink.roll('t-0', 10, 12);
    expect(r.rows).toBe(6);
    expect(r.files.map((f) => f.slice(base.length))).toEqual([
      '/model=m/version=1/date=2026-11-22/part-t-0-00000000000000000010-00000000000000000012-1of2.parquet',
      '/model=other/version=1/date=2026-11-22/part-t-0-00000000000000000010-00000000000000000012-2of2.parquet',
    ]);
    expect(sink.has('t-0', 13, 20)).toBe(true); // 14 stays for the next roll
    expect(sink.has('t-0', 10, 12)).toBe(false);
    expect(await sink.recover('t-0')).toBe(12);
    expect(await sink.recover('t-1')).toBe(-1);
  });

  it('recover() deletes the files of a roll a crash left incomplete and reports only complete rolls', async () => {
    const base = join(await tempDir(), 'out');
    const sink = new ParquetSink({ location: base, logger: silentLogger() });
    sink.add('t-0', record(0));
    await sink.roll('t-0', 0, 0);
    // A roll of two files of which only one was renamed into place before the crash.
    sink.add('t-0', record(1, 'a'));
    sink.add('t-0', record(2, 'b'));
    const { files } = await sink.roll('t-0', 1, 2);
    const { unlink } = await import('node:fs/promises');
    await unlink(files[1]!);
    const fresh = new ParquetSink({ location: base, logger: silentLogger() });
    expect(await fresh.recover('t-0')).toBe(0);
    expect((await readdir(join(base, 'model=a/version=1/date=2026-11-22'))).filter((f) => f.endsWith('.parquet'))).toEqual([]);
    expect((await readdir(join(base, 'model=b/version=1/date=2026-11-22'))).filter((f) => f.endsWith('.parquet'))).toEqual([]);
    expect((await readdir(join(base, 'model=m/version=1/date=2026-11-22'))).filter((f) => f.endsWith('.parquet')).length).toBe(1);
  });
});
