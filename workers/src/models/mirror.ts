/**
 * A model repository on HDFS, mirrored into a local folder (runners load from local files).
 * Each sync lists the remote repository (LISTSTATUS) and brings its changes over:
 *
 * - a version folder is copied once it carries a `_READY`/`_SUCCESS` marker, or its files'
 *   names and sizes are the same on two syncs in a row; the copy goes to a hidden
 *   `.<version>.tmp` folder renamed into place, so the local scan never sees half of it;
 * - a version folder gone from HDFS is removed locally (rollback);
 * - model-level `config.yaml` files are copied when their bytes change (policy changes).
 */
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { DataIOError } from '@inferq/shared';
import { parseLocation } from '../io/store.js';
import type { FileStore, Location } from '../io/store.js';
import type { Logger } from '../logging.js';
import { READY_MARKERS } from './completeness.js';
import { MODEL_NAME } from './repository.js';

const VERSION_DIR = /^\d{1,18}$/;
const CONFIG_FILE = 'config.yaml';

export class RepoMirror {
  private readonly remote: Location;
  private readonly local: string;
  private readonly log: Logger;
  /** Remote fingerprint of each version folder at the last sync, by `model/version`. */
  private readonly seen = new Map<string, string>();
  /** Remote fingerprint each local copy was made from. */
  private readonly copied = new Map<string, string>();
  private first = true;

  constructor(uri: string, local: string, logger: Logger) {
    this.remote = parseLocation(uri);
    this.local = local;
    this.log = logger.child({ component: 'model-mirror', repo: uri });
  }

  /** Brings the remote repository's changes over; the first sync copies every version there is. */
  async sync(): Promise<void> {
    const store = this.remote.store;
    const models = (await store.list(this.remote.path)).filter((e) => e.type === 'dir' && MODEL_NAME.test(e.name));
    if (this.first && models.length === 0) throw new DataIOError(`"${this.remote.uri}": no model folder there (${store.description})`);
    for (const m of models) await this.syncModel(store, m.name);
    const names = new Set(models.map((m) => m.name));
    for (const k of [...this.copied.keys()]) {
      const [name, version] = k.split('/') as [string, string];
      if (!names.has(name)) await this.removeVersion(name, version);
    }
    this.first = false;
  }

  private async syncModel(store: FileStore, name: string): Promise<void> {
    const remoteDir = posix.join(this.remote.path, name);
    const localDir = join(this.local, name);
    await mkdir(localDir, { recursive: true });
    const entries = await store.list(remoteDir);
    if (entries.some((e) => e.type === 'file' && e.name === CONFIG_FILE)) {
      await replaceIfChanged(join(localDir, CONFIG_FILE), await store.readFile(posix.join(remoteDir, CONFIG_FILE)));
    } else {
      await rm(join(localDir, CONFIG_FILE), { force: true });
    }
    const versions = entries.filter((e) => e.type === 'dir' && VERSION_DIR.test(e.name)).map((e) => e.name);
    for (const v of versions) {
      const k = `${name}/${v}`;
      const files = await listTree(store, posix.join(remoteDir, v), '');
      const fingerprint = files.map((f) => `${f.path}:${f.size}`).sort().join('\n');
      const marked = files.some((f) => (READY_MARKERS as readonly string[]).includes(f.path));
      const stable = this.first || marked || this.seen.get(k) === fingerprint;
      this.seen.set(k, fingerprint);
      if (!stable || this.copied.get(k) === fingerprint) continue;
      await this.copyVersion(store, posix.join(remoteDir, v), localDir, v, files.map((f) => f.path));
      this.copied.set(k, fingerprint);
      if (!this.first) this.log.info({ model: name, version: v }, 'model version copied from HDFS');
    }
    for (const k of [...this.seen.keys()].filter((x) => x.startsWith(`${name}/`))) {
      const v = k.slice(name.length + 1);
      if (!versions.includes(v)) await this.removeVersion(name, v);
    }
  }

  private async removeVersion(name: string, version: string): Promise<void> {
    const k = `${name}/${version}`;
    this.seen.delete(k);
    if (!this.copied.delete(k)) return;
    await rm(join(this.local, name, version), { recursive: true, force: true });
    this.log.info({ model: name, version }, 'model version removed from HDFS: local copy removed');
  }

  private async copyVersion(store: FileStore, from: string, localDir: string, version: string, paths: readonly string[]): Promise<void> {
    const tmp = join(localDir, `.${version}.tmp`);
    await rm(tmp, { recursive: true, force: true });
    for (const p of paths) {
      const to = join(tmp, ...p.split('/'));
      await mkdir(join(to, '..'), { recursive: true });
      await writeFile(to, await store.readFile(posix.join(from, p)));
    }
    await mkdir(tmp, { recursive: true });
    await rm(join(localDir, version), { recursive: true, force: true });
    await rename(tmp, join(localDir, version));
  }
}

/** Files under a remote folder (paths relative to it, `/`-separated), three levels deep at most. */
async function listTree(store: FileStore, dir: string, prefix: string, depth = 0): Promise<{ path: string; size: number }[]> {
  const out: { path: string; size: number }[] = [];
  for (const e of await store.list(dir)) {
    // Remote names become local paths: only plain names.
    if (e.name === '' || e.name === '.' || e.name === '..' || e.name.includes('/') || e.name.includes('\\')) continue;
    const path = prefix === '' ? e.name : `${prefix}/${e.name}`;
    if (e.type === 'dir') {
      if (depth < 3) out.push(...(await listTree(store, posix.join(dir, e.name), path, depth + 1)));
    } else {
      out.push({ path, size: e.size });
    }
  }
  return out;
}

async function replaceIfChanged(path: string, bytes: Buffer): Promise<void> {
  const current = await readFile(path).catch(() => undefined);
  if (current !== undefined && current.equals(bytes)) return;
  const tmp = `${path}.tmp`;
  await writeFile(tmp, bytes);
  await rename(tmp, path);
}
