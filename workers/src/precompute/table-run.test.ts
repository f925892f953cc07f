import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { tableKeys } from '@inferq/shared';
import { parseLocation } from '../io/store.js';
import { findResumable, recordRun } from './table-run.js';
import type { RunMeta } from './table-run.js';

const meta: RunMeta = { specHash: 'h1', model: 'm', version: '1', to: 'parquet', buckets: 10, totalRows: 1000, chunks: 4 };
const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe('findResumable', () => {
  it('resumes the run of the same spec, model, target and space; a space of another size (a rewritten input) is a new run', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'inferq-table-run-'));
    dirs.push(dir);
    const parquet = parseLocation(dir);
    const keys = tableKeys('inferq', 't');
    await recordRun(undefined, keys, parquet, 'run-1', meta);
    expect(await findResumable(undefined, keys, parquet, meta)).toBe('run-1');
    expect(await findResumable(undefined, keys, parquet, { ...meta, totalRows: 900, chunks: 4 })).toBeUndefined();
    expect(await findResumable(undefined, keys, parquet, { ...meta, chunks: 5 })).toBeUndefined();
    expect(await findResumable(undefined, keys, parquet, { ...meta, buckets: 9 })).toBeUndefined();
    expect(await findResumable(undefined, keys, parquet, { ...meta, specHash: 'h2' })).toBeUndefined();
  });
});
