/**
 * An offline predict over many files, cut into tasks: each task is a range of whole row
 * groups of one file, of about `targetRows` rows, and becomes one part file
 * (`part-<index>.parquet`). Only footers are read. The same input gives the same tasks, so a
 * rerun, or another process, finds the same part names.
 *
 *   a.parquet  [rg0 rg1 rg2 rg3]   b.parquet [rg0]   c.parquet [rg0 rg1]
 *               └ task 0 ┘└ 1 ┘               └ 2 ┘             └─ 3 ──┘
 */
import type { Field, Schema } from 'apache-arrow';
import { z } from 'zod';
import { ConfigError, DataIOError, InvalidInputError } from '@inferq/shared';
import { openParquet } from '../io/parquet.js';
import { listInputs, localInput, nameInput } from './inputs.js';
import type { HdfsClientOptions } from './inputs.js';

export interface PredictTask {
  /** 0-based, dense; the part file is part-<index padded to 5 digits>.parquet. */
  readonly index: number;
  /** The input file, as a location string (local path or webhdfs://…). */
  readonly file: string;
  /** [first, end) row groups of that file. */
  readonly rowGroups: readonly [number, number];
  /** Rows in that range. */
  readonly rows: number;
}

export interface PredictPlan {
  /** The input files, sorted. */
  readonly inputs: readonly string[];
  readonly tasks: readonly PredictTask[];
  readonly totalRows: number;
  /** Visible files in the input folders that are not `*.parquet` (not read). */
  readonly ignored: readonly string[];
}

export interface PlanOptions {
  /** About this many rows per task (whole row groups; a larger row group is a task of its own). Default {@link DEFAULT_TARGET_ROWS}. */
  readonly targetRows?: number;
  /** WebHDFS client options for HDFS inputs. */
  readonly webhdfs?: HdfsClientOptions;
}

export const DEFAULT_TARGET_ROWS = 1_000_000;
/** Part names have 5 digits: more tasks would no longer sort in input order. */
export const MAX_TASKS = 100_000;
/** Footers read at once (HDFS round trips overlap). */
const FOOTER_CONCURRENCY = 8;

/** Lists a file, folder or glob (local or webhdfs://), sorted, and splits it into tasks of about `targetRows` rows (whole row groups). */
export async function planPredict(input: string, options: PlanOptions = {}): Promise<PredictPlan> {
  const targetRows = options.targetRows ?? DEFAULT_TARGET_ROWS;
  if (!Number.isSafeInteger(targetRows) || targetRows < 1) throw new ConfigError(`targetRows must be a positive integer, got ${targetRows}`);
  const { files, ignored } = await listInputs(input, options.webhdfs);
  if (files.length === 0) {
    const note = ignored.length === 0 ? '' : ` (not Parquet by name: ${ignored.slice(0, 3).join(', ')}${ignored.length > 3 ? ', …' : ''})`;
    throw new DataIOError(`input "${input}": no Parquet files found${note}`);
  }
  const footers = await mapLimited(files, FOOTER_CONCURRENCY, (file) => readFooter(file, options.webhdfs));
  const first = footers[0]!;
  const tasks: PredictTask[] = [];
  let totalRows = 0;
  for (const [i, footer] of footers.entries()) {
    const file = files[i]!;
    const diff = schemaDifference(first.schema, footer.schema);
    if (diff !== undefined) {
      throw new InvalidInputError(`input "${file}": its columns differ from those of "${files[0]}" (${diff}); every file of a predict input needs the same columns`);
    }
    for (const [range, rows] of splitRowGroups(footer.rowGroupRows, targetRows)) {
      tasks.push({ index: tasks.length, file, rowGroups: range, rows });
      totalRows += rows;
    }
  }
  if (tasks.length > MAX_TASKS) {
    throw new ConfigError(`input "${input}": ${tasks.length} tasks of about ${targetRows} rows exceed ${MAX_TASKS} part files; ask for more rows per task`);
  }
  return { inputs: files, tasks, totalRows, ignored };
}

async function readFooter(file: string, webhdfs: HdfsClientOptions | undefined): Promise<{ schema: Schema; rowGroupRows: readonly number[] }> {
  const local = await localInput(file, webhdfs, [0, 0]);
  try {
    const reader = await openParquet(local.path);
    await reader.close();
    return { schema: reader.schema, rowGroupRows: reader.rowGroupRows };
  } catch (err) {
    throw nameInput(err, local, file);
  } finally {
    await local.release();
  }
}

/**
 * Row-group ranges of about `targetRows` rows: consecutive groups are added while the total
 * stays within the target; a file without row groups is one empty range (its part carries the schema).
 */
export function splitRowGroups(rowGroupRows: readonly number[], targetRows: number): [readonly [number, number], number][] {
  if (rowGroupRows.length === 0) return [[[0, 0], 0]];
  const out: [readonly [number, number], number][] = [];
  let start = 0;
  let rows = 0;
  rowGroupRows.forEach((n, g) => {
    if (g > start && rows + n > targetRows) {
      out.push([[start, g], rows]);
      start = g;
      rows = 0;
    }
    rows += n;
  });
  out.push([[start, rowGroupRows.length], rows]);
  return out;
}

/** How `other` differs from `base` (names and types, in order), or undefined when they match. */
export function schemaDifference(base: Schema, other: Schema): string | undefined {
  const show = (f: Field | undefined): string => (f === undefined ? 'nothing' : `"${f.name}" ${String(f.type)}`);
  const n = Math.max(base.fields.length, other.fields.length);
  for (let i = 0; i < n; i++) {
    const a = base.fields[i];
    const b = other.fields[i];
    if (a === undefined || b === undefined || a.name !== b.name || String(a.type) !== String(b.type)) {
      return `column ${i + 1} is ${show(b)}, expected ${show(a)}`;
    }
  }
  return undefined;
}

async function mapLimited<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const run = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, run));
  return out;
}

const MAX_ROW_GROUP = 2 ** 31 - 1;
const TaskSchema = z.object({
  index: z.number().int().min(0).max(MAX_TASKS - 1),
  // eslint-disable-next-line no-control-regex -- a control character has no place in a path
  file: z.string().min(1).max(4096).regex(/^[^\u0000-\u001f]*$/, 'must not hold control characters'),
  rowGroups: z
    .tuple([z.number().int().min(0).max(MAX_ROW_GROUP), z.number().int().min(0).max(MAX_ROW_GROUP)])
    .refine(([a, b]) => a <= b, 'first must not be past end'),
  rows: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
});

/**
 * Validates an untrusted task object read from a queue (shape only; the caller checks paths
 * against its allow-lists). Unknown keys are dropped. Throws InvalidInputError naming the bad field.
 */
export function parsePredictTask(data: unknown): PredictTask {
  const r = TaskSchema.safeParse(data);
  if (r.success) return { index: r.data.index, file: r.data.file, rowGroups: [r.data.rowGroups[0], r.data.rowGroups[1]], rows: r.data.rows };
  const issue = r.error.issues[0]!;
  const field = issue.path.length === 0 ? 'the task' : `field "${issue.path.join('.')}"`;
  const value = issue.path.reduce<unknown>((v, k) => (v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[k] : undefined), data);
  throw new InvalidInputError(`predict task: ${field}: ${issue.message} (got ${describeValue(value)})`);
}

function describeValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
  if (v === undefined || v === null || typeof v !== 'object') return String(v);
  return Array.isArray(v) ? `an array of ${v.length}` : 'an object';
}
