import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../../../test/helpers/models.js';
import { silentLogger } from '../logging.js';
import { RepoMirror } from './mirror.js';

const put = async (root: string, path: string, text: string): Promise<void> => {
  await mkdir(join(root, path, '..'), { recursive: true });
  await writeFile(join(root, path), text);
};
const versions = async (root: string, model: string): Promise<string[]> => (await readdir(join(root, model)).catch(() => [])).filter((n) => n !== 'config.yaml').sort();

// The store behind a mirror is an interface (io/store.ts): a local folder stands in for HDFS here; test/model-lifecycle.test.ts runs it against HDFS.
describe('RepoMirror', () => {
  it('copies versions once stable or marked, under a hidden name, follows removals and model-level config', async () => {
    const remote = await tempDir();
    const local = await tempDir();
    await put(remote, 'm/1/model.onnx', 'one');
    await put(remote, 'm/config.yaml', 'versionPolicy: all\n');
    const mirror = new RepoMirror(remote, local, silentLogger());
    await mirror.sync();
    expect(await versions(local, 'm')).toEqual(['1']);
    expect(await readdir(join(local, 'm'))).toContain('config.yaml');

    await put(remote, 'm/2/model.onnx', 'tw');
    await mirror.sync();
    expect(await versions(local, 'm')).toEqual(['1']); // seen once
    await put(remote, 'm/2/model.onnx', 'two');
    await mirror.sync();
    expect(await versions(local, 'm')).toEqual(['1']); // grew between two listings
    await mirror.sync();
    expect(await versions(local, 'm')).toEqual(['1', '2']);

    await put(remote, 'm/3/model.onnx', 'three');
    await put(remote, 'm/3/_READY', '');
    await mirror.sync();
    expect(await versions(local, 'm')).toEqual(['1', '2', '3']); // a marker counts at once
    expect((await readdir(join(local, 'm', '3'))).sort()).toEqual(['_READY', 'model.onnx']);

    await rm(join(remote, 'm', '2'), { recursive: true });
    await rm(join(remote, 'm', 'config.yaml'));
    await mirror.sync();
    expect(await readdir(join(local, 'm'))).toEqual(expect.not.arrayContaining(['2', 'config.yaml']));

    await put(remote, 'n/1/model.onnx', 'n');
    await rm(join(remote, 'm'), { recursive: true });
    await mirror.sync();
    expect(await versions(local, 'm')).toEqual([]);
    expect(await versions(local, 'n')).toEqual([]); // appeared after the first sync: seen once
    await mirror.sync();
    expect(await versions(local, 'n')).toEqual(['1']);
  });
});
