/**
 * One predict task → one part file, exactly once however often it runs:
 *
 *   part-<index>.parquet exists? ─yes─► skipped (a part only ever appears whole, by rename)
 *        │ no
 *   input (an HDFS file is copied to a local temporary file) ─► its row-group range ─► model
 *        ─► local: .part-….inprogress beside it, renamed into place
 *           HDFS:  a local temporary file, then staged under _temporary/ and renamed into place
 *
 * Two processes running the same task write the same rows under the same name; the last
 * rename wins and nothing is duplicated. `_SUCCESS` is written once every part exists.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { DataIOError } from '@inferq/shared';
import type { NonFinitePolicy } from '@inferq/shared';
import type { LoadedModel } from '../models/loaded-model.js';
import { openParquet } from '../io/parquet.js';
import { LocalStore, parseLocation } from '../io/store.js';
import type { Location } from '../io/store.js';
import { localInput, nameInput } from './inputs.js';
import type { HdfsClientOptions } from './inputs.js';
import type { PredictTask } from './plan.js';
import { predictReader } from './predict.js';

export interface PredictTaskOptions {
  /** The output folder (local path or webhdfs://…). */
  readonly outputDir: string;
  /** Default 'reject'. */
  readonly nonFinite?: NonFinitePolicy;
  /** Aborts between chunks; no part is written. */
  readonly signal?: AbortSignal;
  /** WebHDFS client options for HDFS inputs and outputs. */
  readonly webhdfs?: HdfsClientOptions;
  /** Called after each written chunk, with the task's rows. */
  readonly onProgress?: (p: { rows: number; totalRows: number }) => void;
}

export interface PredictTaskResult {
  /** Rows of the part (the task's rows when skipped). */
  readonly rows: number;
  /** The part's location. */
  readonly path: string;
  /** True when the part was already there and nothing ran. */
  readonly skipped: boolean;
  /** Model batches run, and the rows in them (0 when skipped). */
  readonly batches: number;
  readonly batchedRows: number;
  /** Size of the part written (0 when skipped). */
  readonly bytes: number;
}

export const SUCCESS_MARKER = '_SUCCESS';

/** The part file name of task `index`: part-00007.parquet. */
export function partName(index: number): string {
  return `part-${String(index).padStart(5, '0')}.parquet`;
}

/** The output folder as a location, and a location string for a file inside it. */
function outputFolder(outputDir: string, webhdfs: HdfsClientOptions | undefined): { loc: Location; child: (name: string) => { path: string; uri: string } } {
  const loc = parseLocation(outputDir, webhdfs);
  const base = outputDir.replace(/\/+$/, '');
  return { loc, child: (name) => ({ path: posix.join(loc.path, name), uri: loc.store instanceof LocalStore ? join(loc.path, name) : `${base}/${name}` }) };
}

/** Predicts one task into <outputDir>/part-<index>.parquet via a temporary name + rename; if that part already exists, does nothing and says so. */
export async function runPredictTask(model: LoadedModel, task: PredictTask, options: PredictTaskOptions): Promise<PredictTaskResult> {
  const { loc, child } = outputFolder(options.outputDir, options.webhdfs);
  const part = child(partName(task.index));
  if (await loc.store.exists(part.path)) return { rows: task.rows, path: part.uri, skipped: true, batches: 0, batchedRows: 0, bytes: 0 };
  const remote = !(loc.store instanceof LocalStore);
  const input = await localInput(task.file, options.webhdfs, task.rowGroups);
  const staging = remote ? await mkdtemp(join(tmpdir(), 'inferq-part-')) : undefined;
  try {
    const reader = await openParquet(input.path);
    try {
      checkRange(task, reader.rowGroupRows);
      const summary = await predictReader(model, reader, {
        output: staging === undefined ? part.path : join(staging, partName(task.index)),
        rowGroups: task.rowGroups,
        source: `input "${task.file}"`,
        ...(options.nonFinite === undefined ? {} : { nonFinite: options.nonFinite }),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
        ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
      });
      if (staging !== undefined) await loc.store.putFile(summary.output, part.path);
      return { rows: summary.rows, path: part.uri, skipped: false, batches: summary.batches, batchedRows: Math.round(summary.meanBatchSize * summary.batches), bytes: summary.bytes };
    } finally {
      await reader.close();
    }
  } catch (err) {
    throw nameInput(err, input, task.file);
  } finally {
    await input.release();
    if (staging !== undefined) await rm(staging, { recursive: true, force: true });
  }
}

/** The task must still describe the file: a file rewritten since planning would otherwise give a part of other rows. */
function checkRange(task: PredictTask, rowGroupRows: readonly number[]): void {
  const [first, end] = task.rowGroups;
  if (end > rowGroupRows.length) {
    throw new DataIOError(`input "${task.file}": task ${task.index} wants row groups [${first}, ${end}) but the file has ${rowGroupRows.length}; was it rewritten after the run was planned?`);
  }
  const rows = rowGroupRows.slice(first, end).reduce((a, b) => a + b, 0);
  if (rows !== task.rows) {
    throw new DataIOError(`input "${task.file}": row groups [${first}, ${end}) hold ${rows} rows, task ${task.index} expected ${task.rows}; was it rewritten after the run was planned?`);
  }
}

/** Writes <outputDir>/_SUCCESS when every part-<i> for i < tasks exists (idempotent); returns false if a part is missing. */
export async function finishPredictOutput(outputDir: string, tasks: number, options: { webhdfs?: HdfsClientOptions } = {}): Promise<boolean> {
  const { loc, child } = outputFolder(outputDir, options.webhdfs);
  const present = new Set((await loc.store.list(loc.path)).filter((e) => e.type === 'file').map((e) => e.name));
  for (let i = 0; i < tasks; i++) if (!present.has(partName(i))) return false;
  await loc.store.putBytes(child(SUCCESS_MARKER).path, new Uint8Array(0));
  return true;
}
