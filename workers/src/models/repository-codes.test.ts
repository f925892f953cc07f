import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { UnknownModelError } from '@inferq/shared';
import { smallMlp, tempDir, writeModel } from '../../../test/helpers/models.js';
import { ModelRepository } from './repository.js';

/** What `work` rejects with: an UnknownModelError, as [code, message]. */
async function refusal(work: Promise<unknown>): Promise<[string, string]> {
  const err: unknown = await work.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UnknownModelError);
  return [(err as UnknownModelError).code, (err as UnknownModelError).message];
}

describe('ModelRepository: error codes', () => {
  it('an unknown or invalid model is UNKNOWN_MODEL; an unknown, unserved or invalid version UNKNOWN_VERSION', async () => {
    const root = await tempDir();
    for (const v of ['1', '2']) await writeModel(root, 'm', v, smallMlp());
    await writeFile(join(root, 'm', 'config.yaml'), 'versionPolicy: { specific: [2] }\n');
    const repo = new ModelRepository(root);
    expect(await refusal(repo.resolve('nope'))).toEqual(['UNKNOWN_MODEL', expect.stringContaining('unknown model "nope"')]);
    expect(await refusal(repo.resolve('..'))).toEqual(['UNKNOWN_MODEL', expect.stringContaining('model name ".." is not valid')]);
    expect(await refusal(repo.resolve('m', '3'))).toEqual(['UNKNOWN_VERSION', expect.stringContaining('version "3" does not exist')]);
    expect(await refusal(repo.resolve('m', '1'))).toEqual(['UNKNOWN_VERSION', expect.stringContaining('version "1" is present but not served')]);
    expect(await refusal(repo.resolve('m', '../1'))).toEqual(['UNKNOWN_VERSION', expect.stringContaining('versions are integers')]);
    expect((await repo.resolve('m', '2')).version).toBe('2');
  });
});
