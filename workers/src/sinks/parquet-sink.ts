/**
 * The Parquet sink: result rows buffered per source group (a Kafka partition), written as
 * Parquet files in Hive-style partition folders, each file published atomically.
 *
 * ```
 *  add(group, record) ─► buffer of the group (records in sequence order: Kafka offsets)
 *  roll(group, first, last) ─► records with first ≤ seq ≤ last, split by folder
 *        <base>/model=<m>/version=<v>/[<subfolder>/]date=<yyyy-mm-dd>/part-<group>-<first>-<last>-<k>of<n>.parquet
 *        each written to a local temp file, copied under _temporary/, renamed into place
 *  recover(group) ─► highest `last` of a roll whose n files are all in place; files of a
 *        roll left incomplete by a crash are deleted (that roll was never acknowledged:
 *        its messages are delivered again and written again)
 * ```
 *
 * A roll covers a contiguous range of the group's sequence (first..last), the range the
 * transport acknowledges right after the roll; its file names are fixed by that range, so
 * a replay of an acknowledged roll is recognised (recover) instead of written twice.
 *
 * Columns: job_id (utf8), row (int32, the row's index in its job), row_id (utf8, null
 * when the job gave none), one column per model output (float32 scalar, or a
 * fixed_size_list for wider outputs), ts (timestamp[ms], UTC). model, version and date are
 * the partition folders' columns (Hive style: a reader of the base folder gets them from
 * the path), so they are not repeated inside the files.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { Field, Int32, RecordBatch, Schema, Struct, TimestampMillisecond, Utf8, makeData, vectorFromArray } from 'apache-arrow';
import type { Data } from 'apache-arrow';
import { z } from 'zod';
import { ConfigError, DataIOError, allocate, elementCount } from '@inferq/shared';
import type { Tensor, TensorMap } from '@inferq/shared';
import { createParquetWriter } from '../io/parquet.js';
import { utf8Data } from '../io/utf8.js';
import type { ParquetCompression } from '../io/parquet.js';
import { parseLocation } from '../io/store.js';
import type { FileStore, Location, StagedFile } from '../io/store.js';
import type { Logger } from '../logging.js';
import { tensorToColumn } from '../predict/columns.js';
import { describeWriteError, isPermanentWriteError } from './write-errors.js';

export interface SinkRecord {
  /** Position in the group's sequence (the Kafka offset). */
  readonly seq: number;
  readonly jobId: string;
  readonly rowIds: readonly string[] | undefined;
  readonly outputs: TensorMap;
  readonly rows: number;
  readonly model: string;
  readonly version: string;
  /** Epoch ms; decides the date folder. */
  readonly ts: number;
}

export interface ParquetSinkOptions {
  /** Base folder: a local path, file://, webhdfs:// or hdfs:// URI. */
  readonly location: string;
  /** Roll when a group holds this many rows. Default 100,000. */
  readonly rollRows?: number;
  /** … or about this many bytes of outputs. Default 64 MiB. */
  readonly rollBytes?: number;
  /** … or when its oldest record is this old. Default 10 s. */
  readonly rollMs?: number;
  readonly compression?: ParquetCompression;
  readonly logger: Logger;
  /**
   * A folder level after `version=` (e.g. `shadow=true`), for rows kept apart from the served
   * ones. Default none. A sink with one is not recovered: its part files sit a level deeper.
   */
  readonly subfolder?: string;
}

/** Roll thresholds when none is given. */
export const PARQUET_SINK_DEFAULTS = { rollRows: 100_000, rollBytes: 64 * 1024 * 1024, rollMs: 10_000 } as const;

const positive = z.number().int().positive().optional();
const optionsSchema = z.object({
  location: z.string().min(1),
  rollRows: positive,
  rollBytes: positive,
  rollMs: positive,
  subfolder: z.string().regex(/^[A-Za-z0-9_-]+=[A-Za-z0-9_-]+$/, 'expected key=value (letters, digits, _ and -)').optional(),
});

export interface RollResult {
  readonly files: readonly string[];
  readonly rows: number;
}

export interface RollPlan {
  readonly group: string;
  readonly first: number;
  readonly last: number;
  /** The files the roll writes, in order. */
  readonly paths: readonly string[];
  /** The jobs whose rows it holds. */
  readonly jobIds: readonly string[];
  readonly files: readonly { readonly path: string; readonly records: readonly SinkRecord[] }[];
}

interface GroupBuffer {
  records: SinkRecord[];
  rows: number;
  bytes: number;
  since: number;
}

const FILE_RE = /^part-(.+)-(\d{20})-(\d{20})-(\d+)of(\d+)\.parquet$/;

export class ParquetSink {
  readonly location: Location;
  private readonly store: FileStore;
  private readonly opts: ParquetSinkOptions;
  private readonly groups = new Map<string, GroupBuffer>();
  private readonly log: Logger;

  private readonly rollRows: number;
  private readonly rollBytes: number;
  private readonly rollMs: number;

  constructor(options: ParquetSinkOptions) {
    const checked = optionsSchema.safeParse(options);
    if (!checked.success) {
      const issue = checked.error.issues[0]!;
      throw new ConfigError(`parquet sink option "${issue.path.join('.')}": ${issue.message}`);
    }
    this.opts = options;
    this.rollRows = options.rollRows ?? PARQUET_SINK_DEFAULTS.rollRows;
    this.rollBytes = options.rollBytes ?? PARQUET_SINK_DEFAULTS.rollBytes;
    this.rollMs = options.rollMs ?? PARQUET_SINK_DEFAULTS.rollMs;
    this.location = parseLocation(options.location);
    this.store = this.location.store;
    this.log = options.logger.child({ sink: options.location });
  }

  /** The base folder as given. */
  get uri(): string {
    return this.opts.location;
  }

  /** A sink on the same folder with the same settings whose files go a level deeper, under `subfolder`. */
  withSubfolder(subfolder: string): ParquetSink {
    return new ParquetSink({ ...this.opts, subfolder });
  }

  add(group: string, record: SinkRecord): void {
    let g = this.groups.get(group);
    if (g === undefined) this.groups.set(group, (g = { records: [], rows: 0, bytes: 0, since: Date.now() }));
    if (g.records.length === 0) g.since = Date.now();
    g.records.push(record);
    g.rows += record.rows;
    for (const t of Object.values(record.outputs)) g.bytes += t.data.byteLength;
  }

  /** Whether the group's buffer is due to roll (rows, bytes or age). */
  due(group: string): boolean {
    const g = this.groups.get(group);
    if (g === undefined || g.records.length === 0) return false;
    return g.rows >= this.rollRows || g.bytes >= this.rollBytes || Date.now() - g.since >= this.rollMs;
  }

  /** Whether the group holds records with first ≤ seq ≤ last. */
  has(group: string, first: number, last: number): boolean {
    return (this.groups.get(group)?.records ?? []).some((r) => r.seq >= first && r.seq <= last);
  }

  /** Drops a group's buffer (its source partition was revoked: those messages go to the next owner). */
  drop(group: string): void {
    this.groups.delete(group);
  }

  /**
   * Plans the roll of `group`'s records with first ≤ seq ≤ last (less the sequence numbers
   * in `exclude`): which files it will write (one per partition folder), before anything is
   * written — so a transport can record them first (the Redis worker does, per job).
   */
  planRoll(group: string, first: number, last: number, exclude?: ReadonlySet<number>): RollPlan {
    const taken = (this.groups.get(group)?.records ?? [])
      .filter((r) => r.seq >= first && r.seq <= last && exclude?.has(r.seq) !== true)
      .sort((a, b) => a.seq - b.seq);
    const byFolder = new Map<string, SinkRecord[]>();
    for (const r of taken) {
      const date = `date=${new Date(r.ts).toISOString().slice(0, 10)}`;
      const folder = posix.join(this.location.path, `model=${escapeValue(r.model)}`, `version=${escapeValue(r.version)}`, ...(this.opts.subfolder === undefined ? [] : [this.opts.subfolder]), date);
      let list = byFolder.get(folder);
      if (list === undefined) byFolder.set(folder, (list = []));
      list.push(r);
    }
    const n = byFolder.size;
    const files = [...byFolder].map(([folder, records], i) => ({ path: posix.join(folder, `part-${group}-${pad(first)}-${pad(last)}-${i + 1}of${n}.parquet`), records }));
    return { group, first, last, paths: files.map((f) => f.path), jobIds: [...new Set(taken.map((r) => r.jobId))], files };
  }

  /**
   * Writes one planned file under a temporary name beside its destination; nothing is visible
   * until `publish()`. Throws DataIOError naming the folder and the cause, retriable unless
   * the store refused for good (see isPermanentWriteError).
   */
  async stageFile(file: RollPlan['files'][number]): Promise<StagedFile> {
    const local = await mkdtemp(join(tmpdir(), 'inferq-sink-'));
    try {
      const tmp = join(local, 'part.parquet');
      const writer = await createParquetWriter(tmp, { compression: this.opts.compression ?? 'snappy' });
      try {
        await writer.write(toRecordBatch(file.records));
        await writer.close();
      } catch (err) {
        await writer.abort();
        throw err;
      }
      try {
        return await this.store.stage(tmp, file.path);
      } catch (err) {
        throw new DataIOError(`sink "${this.opts.location}": writing ${file.path} failed: ${describeWriteError(err)}`, { cause: err, retriable: !isPermanentWriteError(err) });
      }
    } finally {
      await rm(local, { recursive: true, force: true });
    }
  }

  /** Drops a written roll's records from the buffer; records past its range stay. */
  release(plan: Pick<RollPlan, 'group' | 'first' | 'last'>): void {
    const g = this.groups.get(plan.group);
    if (g === undefined) return;
    g.records = g.records.filter((r) => r.seq < plan.first || r.seq > plan.last);
    g.rows = g.records.reduce((s, r) => s + r.rows, 0);
    g.bytes = g.records.reduce((s, r) => s + Object.values(r.outputs).reduce((b, t) => b + t.data.byteLength, 0), 0);
    g.since = Date.now();
  }

  /** Writes a planned roll: every file staged first, then all published; resolves when every file is in place. */
  async writeRoll(plan: RollPlan): Promise<RollResult> {
    const staged: StagedFile[] = [];
    try {
      for (const file of plan.files) staged.push(await this.stageFile(file));
      for (const f of staged) await f.publish();
    } catch (err) {
      await Promise.all(staged.map((f) => f.discard()));
      throw err;
    }
    this.release(plan);
    const rows = plan.files.reduce((s, f) => s + f.records.reduce((n, r) => n + r.rows, 0), 0);
    this.log.debug({ group: plan.group, first: plan.first, last: plan.last, files: plan.files.length, rows }, 'sink roll published');
    return { files: plan.paths, rows };
  }

  /** Checks the base folder can be written (creating it), so a folder that never can is refused before a job runs. */
  async probe(): Promise<void> {
    try {
      await this.store.mkdirs(posix.join(this.location.path, '_temporary'));
    } catch (err) {
      throw new DataIOError(`sink "${this.opts.location}": cannot create the folder: ${describeWriteError(err)}`, { cause: err, retriable: !isPermanentWriteError(err) });
    }
  }

  /** Writes the records of `group` with first ≤ seq ≤ last as one roll (planRoll + writeRoll). */
  roll(group: string, first: number, last: number): Promise<RollResult> {
    return this.writeRoll(this.planRoll(group, first, last));
  }

  /** Whether every file of a recorded roll is in place ('complete'), some are ('partial'), or none ('absent'). */
  async rollState(paths: readonly string[]): Promise<'complete' | 'partial' | 'absent'> {
    const present = await Promise.all(paths.map((p) => this.store.exists(p)));
    const n = present.filter(Boolean).length;
    return n === paths.length ? 'complete' : n === 0 ? 'absent' : 'partial';
  }

  /** Deletes the files of a roll a crash left partial (its jobs are written again in new rolls). */
  async deleteFiles(paths: readonly string[]): Promise<void> {
    for (const p of paths) await this.store.delete(p);
  }

  /**
   * The highest `last` of the group's complete rolls (-1 when none), after deleting the
   * files of incomplete ones. Records up to it are already written: skip them on replay.
   */
  async recover(group: string): Promise<number> {
    const rolls = new Map<string, { n: number; paths: string[]; last: number }>();
    for (const path of await this.partFiles()) {
      const m = FILE_RE.exec(posix.basename(path));
      if (m === null || m[1] !== group) continue;
      const id = `${m[2]}-${m[3]}`;
      let roll = rolls.get(id);
      if (roll === undefined) rolls.set(id, (roll = { n: Number(m[5]), paths: [], last: Number(m[3]) }));
      roll.paths.push(path);
    }
    let watermark = -1;
    for (const roll of rolls.values()) {
      if (roll.paths.length >= roll.n) {
        watermark = Math.max(watermark, roll.last);
      } else {
        this.log.warn({ group, files: roll.paths }, 'removing the files of a roll a crash left incomplete (its messages are written again)');
        for (const p of roll.paths) await this.store.delete(p);
      }
    }
    return watermark;
  }

  /** Every part file under the base folder (model=/version=/date= levels). */
  private async partFiles(): Promise<string[]> {
    const out: string[] = [];
    const walk = async (dir: string, depth: number): Promise<void> => {
      for (const e of await this.store.list(dir)) {
        if (e.name.startsWith('_') || e.name.startsWith('.')) continue;
        const p = posix.join(dir, e.name);
        if (e.type === 'dir' && depth < 3) await walk(p, depth + 1);
        else if (e.type === 'file' && depth === 3) out.push(p);
      }
    };
    await walk(this.location.path, 0);
    return out;
  }
}

const pad = (n: number): string => String(n).padStart(20, '0');

/** Hive partition values: path separators and '=' are percent-encoded, as Hive does. */
function escapeValue(v: string): string {
  return v.replace(/[%/=\\:\n]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

/** One record batch of the given records (same model and version, so the same outputs). */
function toRecordBatch(records: readonly SinkRecord[]): RecordBatch {
  const total = records.reduce((s, r) => s + r.rows, 0);
  const jobIds: string[] = new Array<string>(total);
  const rowIds: (string | null)[] = new Array<string | null>(total);
  const rowIndex = new Int32Array(total);
  const ts: number[] = new Array<number>(total);
  let at = 0;
  for (const r of records) {
    for (let i = 0; i < r.rows; i++, at++) {
      jobIds[at] = r.jobId;
      rowIds[at] = r.rowIds?.[i] ?? null;
      rowIndex[at] = i;
      ts[at] = r.ts;
    }
  }
  const fields: Field[] = [new Field('job_id', new Utf8(), false), new Field('row', new Int32(), false), new Field('row_id', new Utf8(), true)];
  const children: Data[] = [utf8Data(jobIds), makeData({ type: new Int32(), length: total, data: rowIndex }), utf8Data(rowIds)];
  for (const name of Object.keys(records[0]!.outputs)) {
    const { field, data } = tensorToColumn(name, concatTensors(records.map((r) => r.outputs[name]!)));
    fields.push(field);
    children.push(data);
  }
  fields.push(new Field('ts', new TimestampMillisecond('UTC'), false));
  children.push(vectorFromArray(ts, new TimestampMillisecond('UTC')).data[0]!);
  const schema = new Schema(fields);
  return new RecordBatch(schema, makeData({ type: new Struct(fields), length: total, children, nullCount: 0 }));
}

function concatTensors(parts: readonly Tensor[]): Tensor {
  const first = parts[0]!;
  const rows = parts.reduce((s, t) => s + (t.shape[0] ?? 0), 0);
  const shape = [rows, ...first.shape.slice(1)];
  const data = allocate(first.dtype, elementCount(shape));
  let at = 0;
  for (const t of parts) {
    (data as Float32Array).set(t.data as Float32Array, at);
    at += t.data.length;
  }
  return { dtype: first.dtype, shape, data };
}
