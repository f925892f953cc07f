/** Checks an offline command's output before any work: never the input itself, never an existing file unless asked. */
import { realpath } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ConfigError } from '@inferq/shared';
import { LocalStore, parseLocation } from '../io/store.js';
import type { Location } from '../io/store.js';

export interface OutputGuard {
  /** The input as the user gave it (a local path or URI). */
  readonly input: string;
  /** Where the output file goes. */
  readonly target: Location;
  /** Other files the output writes (a folder's `_SUCCESS`): existing ones count as an existing output too. */
  readonly markers?: readonly string[];
  readonly overwrite: boolean;
}

/** Throws ConfigError when the output is the input (whatever the spelling or symlinks) or already exists without `overwrite`. */
export async function guardOutput(g: OutputGuard): Promise<void> {
  const input = parseLocation(g.input);
  if ((await identity(input)) === (await identity(g.target))) {
    throw new ConfigError(`--output "${g.target.uri}" is the input file "${g.input}": refusing to overwrite the input; choose another output`);
  }
  if (g.overwrite) return;
  for (const path of [g.target.path, ...(g.markers ?? [])]) {
    if (await g.target.store.exists(path)) {
      throw new ConfigError(`--output "${g.target.uri}": ${path} already exists; pass --overwrite to replace it`);
    }
  }
}

/** One spelling per file: the real path on local disk (symlinks and `..` resolved), the store and path on HDFS. */
async function identity(loc: Location): Promise<string> {
  if (!(loc.store instanceof LocalStore)) return `${loc.store.description}:${loc.path}`;
  return `file:${await realLocalPath(loc.path)}`;
}

/** The real path of a file, or of its deepest existing folder joined with the rest when it does not exist yet. */
async function realLocalPath(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    const parent = dirname(path);
    if (parent === path) return path;
    return join(await realLocalPath(parent), basename(path));
  }
}
