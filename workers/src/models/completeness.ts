/**
 * When a version folder counts as complete (docs/models.md, "Adding a version"):
 *
 * - its model file is present: `model.onnx`, `saved_model.pb`, or `model.json` with every
 *   weights file its manifest lists;
 * - if any version of the model carries a `_READY` or `_SUCCESS` marker, versions without one
 *   are ignored (the writer signals completion itself);
 * - otherwise a version that appears while the worker runs is taken once its files' names,
 *   sizes and mtimes are the same on two scans in a row (the {@link Fingerprint}).
 *
 * The safest way to publish is still to copy into a folder whose name is not an integer
 * (`.4.tmp`) and rename it to `4`: a rename is atomic, so no scan sees half of it.
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { modelFormatOf } from '../runners/select.js';
import type { ModelFormat } from '../runners/select.js';

/** Files whose presence says a version folder was written completely. */
export const READY_MARKERS = ['_READY', '_SUCCESS'] as const;

/** Names, sizes and mtimes of every file under a version folder: equal on two scans = not being written. */
export type Fingerprint = string;

export interface VersionScan {
  readonly version: string;
  readonly format: ModelFormat;
  readonly marker: boolean;
  readonly fingerprint: Fingerprint;
}

/** Deepest folder level a fingerprint reads (a SavedModel keeps its weights in `variables/`). */
const MAX_DEPTH = 3;

/** The version folder's state, or `undefined` when it holds no complete model yet. */
export async function scanVersion(dir: string, version: string): Promise<VersionScan | undefined> {
  let format: ModelFormat;
  try {
    format = await modelFormatOf(dir);
  } catch {
    // No model file (yet), or an unreadable model.json: not a candidate until that changes.
    return undefined;
  }
  if (format === 'tfjs-graph' || format === 'tfjs-layers') {
    if (!(await weightsPresent(dir))) return undefined;
  }
  const files = await listFiles(dir, '', 0);
  if (files === undefined) return undefined;
  const marker = files.some((f) => (READY_MARKERS as readonly string[]).includes(f.path));
  const fingerprint = files.map((f) => `${f.path}:${f.size}:${f.mtimeMs}`).sort().join('\n');
  return { version, format, marker, fingerprint };
}

/** Whether every weights file a TF.js model.json's manifest lists is in the folder. */
export async function weightsPresent(dir: string): Promise<boolean> {
  let manifest: unknown;
  try {
    manifest = (JSON.parse(await readFile(join(dir, 'model.json'), 'utf8')) as { weightsManifest?: unknown }).weightsManifest;
  } catch {
    // A model.json still being written does not parse: incomplete.
    return false;
  }
  if (manifest === undefined) return true;
  if (!Array.isArray(manifest)) return false;
  const paths = manifest.flatMap((group: unknown) => {
    const p = (typeof group === 'object' && group !== null ? (group as { paths?: unknown }).paths : undefined) ?? [];
    return Array.isArray(p) ? p : [undefined];
  });
  for (const p of paths) {
    // Weights sit beside model.json: a path naming anything else is never complete.
    if (typeof p !== 'string' || p === '' || p.includes('/') || p.includes('\\') || p.startsWith('.')) return false;
    const s = await stat(join(dir, p)).catch(() => undefined);
    if (s === undefined || !s.isFile()) return false;
  }
  return true;
}

interface FileEntry {
  readonly path: string;
  readonly size: number;
  readonly mtimeMs: number;
}

async function listFiles(dir: string, prefix: string, depth: number): Promise<FileEntry[] | undefined> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    // Removed between the listing and now: not a candidate this scan.
    return undefined;
  }
  const out: FileEntry[] = [];
  for (const e of entries) {
    const path = prefix === '' ? e.name : `${prefix}/${e.name}`;
    if (e.isDirectory()) {
      if (depth >= MAX_DEPTH) continue;
      const sub = await listFiles(join(dir, e.name), path, depth + 1);
      if (sub === undefined) return undefined;
      out.push(...sub);
    } else if (e.isFile()) {
      const s = await stat(join(dir, e.name)).catch(() => undefined);
      if (s === undefined) return undefined;
      out.push({ path, size: s.size, mtimeMs: s.mtimeMs });
    }
  }
  return out;
}
