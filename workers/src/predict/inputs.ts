/**
 * The Parquet files behind an offline predict's `--input`: one file, a folder, or a glob,
 * on local disk or HDFS, listed the way pyarrow.dataset and Spark list a dataset:
 *
 *   file          → that file, whatever its name
 *   folder        → every `*.parquet` below it, recursively (partition folders such as `date=…/`)
 *   glob          → `*` and `?` in any path segment; a matched file is taken, a matched folder is walked
 *
 * Names starting with `_` or `.` (`_SUCCESS`, `_temporary/`, `.crc` files, in-progress
 * temporaries) are skipped at every level, as Hive, Spark and pyarrow do. Other visible
 * files inside a folder that do not end in `.parquet` are returned as `ignored`, so the
 * caller can say so. The list is sorted (code-unit order): the same input gives the same list.
 */
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { DataIOError } from '@inferq/shared';
import { HdfsStore, LocalStore, parseLocation } from '../io/store.js';
import type { FileStore, Location } from '../io/store.js';
import type { WebHdfsOptions } from '../io/webhdfs.js';
import { sparseCopy } from './sparse-input.js';

/** WebHDFS client options for `webhdfs://` / `hdfs://` locations (the URL comes from the location). */
export type HdfsClientOptions = Omit<WebHdfsOptions, 'url'>;

export interface InputListing {
  /** Parquet files, as location strings (an absolute local path, or the input's scheme and authority + path). */
  readonly files: readonly string[];
  /** Visible files inside the folders walked that are not `*.parquet`. */
  readonly ignored: readonly string[];
}

const WILDCARD = /[*?]/;
const hidden = (name: string): boolean => name.startsWith('_') || name.startsWith('.');

/** Whether `input` holds a glob wildcard (`*` or `?`). */
export function isGlob(input: string): boolean {
  return WILDCARD.test(input);
}

/** A glob segment as a regular expression: `*` any run of characters, `?` one character, the rest literal. */
export function segmentPattern(segment: string): RegExp {
  const body = segment.replace(/[.+^${}()|[\]\\*?]/g, (c) => (c === '*' ? '[^/]*' : c === '?' ? '[^/]' : `\\${c}`));
  return new RegExp(`^${body}$`);
}

/** Lists the files of a file, folder or glob (see the module comment). */
export async function listInputs(input: string, webhdfs: HdfsClientOptions = {}): Promise<InputListing> {
  const loc = parseLocation(input, webhdfs);
  const prefix = locationPrefix(input, loc);
  const files = new Set<string>();
  const ignored = new Set<string>();
  const walk = async (dir: string): Promise<void> => {
    for (const e of await listDir(loc.store, dir, input)) {
      if (hidden(e.name)) continue;
      const path = posix.join(dir, e.name);
      if (e.type === 'dir') await walk(path);
      else if (e.name.endsWith('.parquet')) files.add(path);
      else ignored.add(path);
    }
  };
  const take = async (path: string, kind: 'file' | 'dir'): Promise<void> => {
    if (kind === 'dir') await walk(path);
    else files.add(path);
  };
  if (!isGlob(loc.path)) {
    const kind = await kindOf(loc.store, loc.path, input);
    if (kind === undefined) throw new DataIOError(`input "${input}": no such file or folder (${loc.store.description})`);
    await take(loc.path, kind);
  } else {
    for (const m of await expandGlob(loc.store, loc.path, input)) await take(m.path, m.kind);
  }
  const located = (paths: Set<string>): string[] => [...paths].sort(byCodeUnit).map((p) => prefix + p);
  return { files: located(files), ignored: located(ignored) };
}

/** Whether a location is a file, a folder, or nothing. */
export async function locationKind(uri: string, webhdfs: HdfsClientOptions = {}): Promise<'file' | 'dir' | undefined> {
  const loc = parseLocation(uri, webhdfs);
  return kindOf(loc.store, loc.path, uri);
}

/**
 * Whether listing `input` would take a file at store path `path` (same store as the input's):
 * the file itself, a file below the folder, or a match of the glob (or below a matched folder).
 */
export function inputCovers(input: string, path: string): boolean {
  const inputPath = parseLocation(input).path.replace(/\/+$/, '') || '/';
  const want = inputPath.split('/');
  const have = path.split('/');
  if (have.length < want.length) return false;
  const matched = want.every((seg, i) => (WILDCARD.test(seg) ? segmentPattern(seg).test(have[i]!) : seg === have[i]));
  return matched && have.slice(want.length).every((seg) => !hidden(seg));
}

/** Entries matching a glob path, segment by segment from its first wildcard. */
async function expandGlob(store: FileStore, path: string, input: string): Promise<{ path: string; kind: 'file' | 'dir' }[]> {
  const segments = path.split('/');
  const firstWild = segments.findIndex((s) => WILDCARD.test(s));
  let current: { path: string; kind: 'file' | 'dir' }[] = [{ path: segments.slice(0, firstWild).join('/') || '/', kind: 'dir' }];
  for (let i = firstWild; i < segments.length; i++) {
    const segment = segments[i]!;
    if (segment === '') continue; // a trailing or doubled slash
    const pattern = WILDCARD.test(segment) ? segmentPattern(segment) : undefined;
    const next: { path: string; kind: 'file' | 'dir' }[] = [];
    for (const c of current) {
      if (c.kind !== 'dir') continue;
      for (const e of await listDir(store, c.path, input)) {
        // A wildcard does not match hidden names unless the pattern itself starts with one.
        const matches = pattern === undefined ? e.name === segment : pattern.test(e.name) && (!hidden(e.name) || hidden(segment));
        if (matches) next.push({ path: posix.join(c.path, e.name), kind: e.type });
      }
    }
    current = next;
  }
  return current;
}

async function kindOf(store: FileStore, path: string, uri: string): Promise<'file' | 'dir' | undefined> {
  try {
    if (store instanceof HdfsStore) {
      const s = await store.client.getFileStatus(path);
      return s === undefined ? undefined : s.type === 'DIRECTORY' ? 'dir' : 'file';
    }
    const s = await stat(path);
    return s.isDirectory() ? 'dir' : 'file';
  } catch (err) {
    // ENOTDIR: a parent is a file, so nothing is there.
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new DataIOError(`"${uri}": cannot read ${path} (${(err as Error).message})`, { cause: err });
  }
}

async function listDir(store: FileStore, path: string, input: string): Promise<{ name: string; type: 'file' | 'dir' }[]> {
  try {
    return await store.list(path);
  } catch (err) {
    throw new DataIOError(`input "${input}": cannot list ${path} (${(err as Error).message})`, { cause: err });
  }
}

/** What goes before a store path to make a location string again: "" on local disk, "webhdfs://host:port" otherwise. */
function locationPrefix(input: string, loc: Location): string {
  if (loc.store instanceof LocalStore) return '';
  return /^[a-z][a-z0-9+.-]*:\/\/[^/]*/i.exec(input)![0];
}

const byCodeUnit = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** A local path for an input file: the file itself on local disk, a temporary copy of an HDFS file. */
export interface LocalInput {
  readonly path: string;
  /** Removes the temporary copy, if one was made. */
  release(): Promise<void>;
}

/** An error about a temporary copy, reworded to name the file as the user gave it. */
export function nameInput(err: unknown, local: LocalInput, file: string): unknown {
  if (!(err instanceof DataIOError) || local.path === file) return err;
  return new DataIOError(err.message.replaceAll(local.path, file), { cause: err, retriable: err.retriable });
}

/**
 * `rowGroups`: only these row groups will be read (`[0, 0]`: only the footer), so an HDFS file is
 * copied sparsely, footer and those row groups only, when the JavaScript decoder reads every column.
 */
export async function localInput(file: string, webhdfs: HdfsClientOptions = {}, rowGroups?: readonly [number, number]): Promise<LocalInput> {
  const loc = parseLocation(file, webhdfs);
  if (loc.store instanceof LocalStore) return { path: loc.path, release: () => Promise.resolve() };
  const dir = await mkdtemp(join(tmpdir(), 'inferq-input-'));
  const path = join(dir, posix.basename(loc.path) || 'input.parquet');
  try {
    const sparse = rowGroups !== undefined && loc.store instanceof HdfsStore && (await sparseCopy(loc.store.client, loc.path, path, rowGroups));
    if (!sparse) await writeFile(path, await loc.store.readFile(loc.path));
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw new DataIOError(`input "${file}": cannot read it from ${loc.store.description} (${(err as Error).message})`, { cause: err });
  }
  return { path, release: () => rm(dir, { recursive: true, force: true }) };
}
