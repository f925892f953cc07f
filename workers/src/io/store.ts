/**
 * Where output files go: local disk or HDFS (over WebHDFS), behind one small interface.
 *
 *   file:///data/out, /data/out, out/        → local disk
 *   webhdfs://namenode:9870/data/out         → WebHDFS at http://namenode:9870 (Hadoop's own scheme)
 *   hdfs://namenode[:8020]/data/out          → WebHDFS at $WEBHDFS_URL, else http://namenode:9870
 *
 * Every write is atomic: the bytes go to a hidden temporary name in the destination's
 * folder (`_temporary/`, which Hive, Spark and pyarrow skip), and are renamed into place
 * once complete, replacing what was there. A reader never sees half a file.
 */
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, open, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DataIOError } from '@inferq/shared';
import { WebHdfs } from './webhdfs.js';
import type { WebHdfsOptions } from './webhdfs.js';

export interface StoreEntry {
  readonly name: string;
  readonly type: 'file' | 'dir';
  readonly size: number;
}

/** A file written under a hidden temporary name beside its destination, not visible yet. */
export interface StagedFile {
  readonly path: string;
  /** Renames it into place (replacing any file there); a reader sees all of it or nothing. */
  publish(): Promise<void>;
  /** Removes the temporary file (never throws). */
  discard(): Promise<void>;
}

export interface FileStore {
  /** Where it writes, for messages ("local disk", "hdfs http://…"). */
  readonly description: string;
  /** Copies a complete local file to `path` atomically, replacing any file there. */
  putFile(localPath: string, path: string): Promise<void>;
  /** Copies a complete local file beside `path` under a temporary name; `publish()` makes it `path`. */
  stage(localPath: string, path: string): Promise<StagedFile>;
  /** Creates a folder and its parents (nothing when it exists). */
  mkdirs(path: string): Promise<void>;
  /** Writes bytes to `path` atomically, replacing any file there. */
  putBytes(path: string, bytes: Uint8Array): Promise<void>;
  readFile(path: string): Promise<Buffer>;
  /** Entries of a folder; [] when it does not exist. */
  list(path: string): Promise<StoreEntry[]>;
  exists(path: string): Promise<boolean>;
  delete(path: string, recursive?: boolean): Promise<void>;
}

export interface Location {
  readonly store: FileStore;
  /** Path inside the store (absolute for HDFS, resolved for local disk). */
  readonly path: string;
  /** The location as the user wrote it. */
  readonly uri: string;
}

/** Parses an output location (see the module comment). */
export function parseLocation(uri: string, options: Omit<WebHdfsOptions, 'url'> = {}): Location {
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^/]*)(\/.*)?$/i.exec(uri);
  if (m === null) return { store: new LocalStore(), path: resolve(uri), uri };
  const scheme = m[1]!.toLowerCase();
  const authority = m[2]!;
  const path = m[3] ?? '/';
  if (scheme === 'file') return { store: new LocalStore(), path: fileURLToPath(uri), uri };
  if (scheme === 'webhdfs') return { store: new HdfsStore(new WebHdfs({ ...options, url: `http://${authority}` })), path, uri };
  // Hadoop's name for WebHDFS over TLS; the CA and token come from `options` or the CLI's defaults.
  if (scheme === 'swebhdfs') return { store: new HdfsStore(new WebHdfs({ ...options, url: `https://${authority}` })), path, uri };
  if (scheme === 'hdfs') {
    const url = process.env['WEBHDFS_URL'] ?? `http://${authority.replace(/:\d+$/, '')}:9870`;
    return { store: new HdfsStore(new WebHdfs({ ...options, url })), path, uri };
  }
  throw new DataIOError(`"${uri}": unknown scheme "${scheme}" (use a local path, file://, webhdfs://, swebhdfs:// or hdfs://)`);
}

const tmpName = (): string => `${process.pid}-${randomBytes(6).toString('hex')}`;

export class LocalStore implements FileStore {
  readonly description = 'local disk';

  async putFile(localPath: string, path: string): Promise<void> {
    await (await this.stage(localPath, path)).publish();
  }

  async stage(localPath: string, path: string): Promise<StagedFile> {
    const tmp = await this.tempFor(path);
    try {
      await copyFile(localPath, tmp);
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw err;
    }
    return {
      path,
      publish: () => this.publish(tmp, path),
      discard: () => rm(tmp, { force: true }).catch(() => undefined),
    };
  }

  async mkdirs(path: string): Promise<void> {
    await mkdir(path, { recursive: true });
  }

  async putBytes(path: string, bytes: Uint8Array): Promise<void> {
    const tmp = await this.tempFor(path);
    const fh = await open(tmp, 'wx');
    try {
      await fh.writeFile(bytes);
    } finally {
      await fh.close();
    }
    await this.publish(tmp, path);
  }

  private async tempFor(path: string): Promise<string> {
    const dir = join(dirname(path), '_temporary');
    await mkdir(dir, { recursive: true });
    return join(dir, `${posix.basename(path)}.${tmpName()}`);
  }

  /** fsync the file, rename it into place, fsync the folder: the rename survives a power cut. */
  private async publish(tmp: string, path: string): Promise<void> {
    const fh = await open(tmp, 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    const dir = await open(dirname(path), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }

  readFile(path: string): Promise<Buffer> {
    return readFile(path);
  }

  async list(path: string): Promise<StoreEntry[]> {
    try {
      const entries = await readdir(path, { withFileTypes: true });
      return Promise.all(entries.map(async (e) => ({ name: e.name, type: e.isDirectory() ? ('dir' as const) : ('file' as const), size: e.isDirectory() ? 0 : (await stat(join(path, e.name))).size })));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  async exists(path: string): Promise<boolean> {
    try {
      await stat(path);
      return true;
    } catch {
      return false;
    }
  }

  async delete(path: string, recursive = false): Promise<void> {
    await rm(path, { recursive, force: true });
  }
}

export class HdfsStore implements FileStore {
  readonly description: string;

  constructor(readonly client: WebHdfs) {
    this.description = `hdfs ${client.url}`;
  }

  async putFile(localPath: string, path: string): Promise<void> {
    await this.putBytes(path, await readFile(localPath));
  }

  async putBytes(path: string, bytes: Uint8Array): Promise<void> {
    await (await this.stageBytes(path, bytes)).publish();
  }

  async stage(localPath: string, path: string): Promise<StagedFile> {
    return this.stageBytes(path, await readFile(localPath));
  }

  async mkdirs(path: string): Promise<void> {
    await this.client.mkdirs(path);
  }

  private async stageBytes(path: string, bytes: Uint8Array): Promise<StagedFile> {
    const tmp = posix.join(posix.dirname(path), '_temporary', `${posix.basename(path)}.${tmpName()}`);
    await this.client.create(tmp, bytes, { overwrite: true });
    return {
      path,
      publish: async () => {
        // HDFS's RENAME does not replace: a file already there (a replay) is removed first.
        if (!(await this.client.rename(tmp, path))) {
          await this.client.delete(path);
          if (!(await this.client.rename(tmp, path))) throw new DataIOError(`hdfs: could not rename ${tmp} to ${path}`, { retriable: true });
        }
      },
      discard: async () => {
        await this.client.delete(tmp).catch(() => undefined);
      },
    };
  }

  readFile(path: string): Promise<Buffer> {
    return this.client.open(path);
  }

  async list(path: string): Promise<StoreEntry[]> {
    if ((await this.client.getFileStatus(path)) === undefined) return [];
    return (await this.client.listStatus(path)).map((s) => ({ name: s.pathSuffix, type: s.type === 'DIRECTORY' ? ('dir' as const) : ('file' as const), size: s.length }));
  }

  async exists(path: string): Promise<boolean> {
    return (await this.client.getFileStatus(path)) !== undefined;
  }

  async delete(path: string, recursive = false): Promise<void> {
    await this.client.delete(path, recursive);
  }
}

/**
 * A local copy of a folder tree (a model repository on HDFS, say): remote locations are
 * downloaded once into `into`; a local one is returned as it is.
 */
export async function localCopy(uri: string, into: string): Promise<string> {
  const loc = parseLocation(uri);
  if (loc.store instanceof LocalStore) return loc.path;
  if ((await loc.store.list(loc.path)).length === 0) throw new DataIOError(`"${uri}": no such folder, or it is empty (${loc.store.description})`);
  const walk = async (from: string, to: string): Promise<void> => {
    await mkdir(to, { recursive: true });
    for (const e of await loc.store.list(from)) {
      if (e.name.startsWith('_') || e.name.startsWith('.')) continue;
      const src = posix.join(from, e.name);
      if (e.type === 'dir') await walk(src, join(to, e.name));
      else {
        const fh = await open(join(to, e.name), 'w');
        try {
          await fh.writeFile(await loc.store.readFile(src));
        } finally {
          await fh.close();
        }
      }
    }
  };
  await walk(loc.path, into);
  return into;
}
