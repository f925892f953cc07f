import { mkdir, mkdtemp, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidInputError, SinkRefusedError } from '@inferq/shared';
import { silentLogger } from '../logging.js';
import { ParquetSink } from './parquet-sink.js';
import { SinkSet } from './sink-set.js';

const open = (uri: string): ParquetSink => new ParquetSink({ location: uri, logger: silentLogger() });

/** The error `check` throws for `spec`: an InvalidInputError coded SINK_NOT_ALLOWED. */
function refusal(set: SinkSet, spec: string): string {
  try {
    set.check(spec, 'job-1');
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidInputError);
    expect((err as InvalidInputError).code).toBe('SINK_NOT_ALLOWED');
    return (err as Error).message;
  }
  throw new Error(`job sink "${spec}" was allowed`);
}

describe('SinkSet: error codes', () => {
  it('every job sink refusal is SINK_NOT_ALLOWED: outside the allowed folders, invalid, a control character, over the limit', () => {
    const set = new SinkSet({ defaults: [open('/data/all')], allowJobSinksUnder: ['/data/jobs'], open, maxJobSinks: 0 });
    expect(refusal(set, '/data/elsewhere')).toMatch(/is not allowed: this worker takes job sinks under "\/data\/jobs" only/);
    expect(refusal(set, 'ftp://x/y')).toMatch(/unknown scheme "ftp"/);
    expect(refusal(set, '/data/jobs/a\nb')).toMatch(/contains a control character/);
    expect(refusal(set, '/data/jobs/a')).toMatch(/already writes to 0 job sinks, its limit/);
    expect(refusal(new SinkSet({ defaults: [open('/data/all')], open }), '/data/jobs/a')).toMatch(/takes no job sinks/);
  });

  it('a job sink that escapes through a symlink is SINK_NOT_ALLOWED; one that cannot be written stays SINK_REFUSED', async () => {
    const root = await mkdtemp(join(tmpdir(), 'inferq-sinkcodes-'));
    const outside = await mkdtemp(join(tmpdir(), 'inferq-outside-'));
    await mkdir(join(root, 'jobs'));
    await symlink(outside, join(root, 'jobs', 'link'));
    await writeFile(join(root, 'jobs', 'a-file'), 'not a folder');
    const set = new SinkSet({ defaults: [], allowJobSinksUnder: [`${root}/jobs`], open });
    const escaped = await rejection(set.forJob([`${root}/jobs/link/x`], 'job-1'));
    expect(escaped).toBeInstanceOf(InvalidInputError);
    expect(escaped).toMatchObject({ code: 'SINK_NOT_ALLOWED', message: expect.stringMatching(/\(a symlink\)/) });
    const unwritable = await rejection(set.forJob([`${root}/jobs/a-file/sub`], 'job-1'));
    expect(unwritable).toBeInstanceOf(SinkRefusedError);
    expect(unwritable).toMatchObject({ code: 'SINK_REFUSED', message: expect.stringMatching(/cannot be written: .*ENOTDIR/) });
  });
});

async function rejection(work: Promise<unknown>): Promise<unknown> {
  return work.then(
    () => new Error('it was allowed'),
    (e: unknown) => e,
  );
}
