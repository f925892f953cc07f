/** Progress of a distributed offline run, from its record: for `inferq precompute status` and `--wait`. */
import type { Redis } from 'ioredis';
import { DeadlineExceededError } from '@inferq/shared';
import { offlineKeys, readRunRecord } from './record.js';
import type { RunRecord } from './record.js';

export interface RunStatus {
  readonly runId: string;
  readonly kind: RunRecord['kind'];
  readonly mode: RunRecord['mode'];
  readonly state: RunRecord['state'];
  readonly queue: string | undefined;
  /** What the run locks: `table "t"`, `output "…"`. */
  readonly holds: string;
  /** Chunks (precompute) or tasks (predict). */
  readonly units: number;
  readonly unitsDone: number;
  readonly tasks: number;
  readonly totalRows: number;
  /** Rows done, counted from the units done (chunks are equal but for the last). */
  readonly rowsDone: number;
  /** Since the run was (re)launched; 0 before any unit is done. */
  readonly rowsPerSecond: number;
  /** Seconds left at that rate; undefined when finished or not measurable yet. */
  readonly etaSeconds: number | undefined;
  readonly createdAt: string;
  readonly launchedAt: string;
  readonly updatedAt: string;
  readonly finishedAt: string | undefined;
  /** `CODE: reason` of the task that failed the run. */
  readonly error: string | undefined;
}

/** Units a run has done, as its kind counts them. */
export type UnitsDone = (record: RunRecord, redis: Redis) => Promise<number>;

/** The status of a run now. */
export async function runStatus(redis: Redis, prefix: string, runId: string, unitsDone: UnitsDone, now = Date.now()): Promise<RunStatus> {
  const r = await readRunRecord(redis, offlineKeys(prefix), runId);
  return statusOf(r, r.state === 'complete' ? r.units : Math.min(r.units, await unitsDone(r, redis)), now);
}

/** The status of a record with `done` units done, at `now` (pure: exported for tests). */
export function statusOf(r: RunRecord, done: number, now: number): RunStatus {
  const perUnit = r.units === 0 ? 0 : r.totalRows / r.units;
  const end = r.finishedAt === undefined ? now : Date.parse(r.finishedAt);
  const seconds = Math.max(0.001, (end - Date.parse(r.launchedAt)) / 1000);
  const unitRate = Math.max(0, done - r.launchUnits) / seconds;
  return {
    runId: r.runId,
    kind: r.kind,
    mode: r.mode,
    state: r.state,
    queue: r.queue,
    holds: r.holds,
    units: r.units,
    unitsDone: done,
    tasks: r.tasks,
    totalRows: r.totalRows,
    rowsDone: done >= r.units ? r.totalRows : Math.round(done * perUnit),
    rowsPerSecond: unitRate * perUnit,
    etaSeconds: r.state !== 'running' || unitRate === 0 ? undefined : (r.units - done) / unitRate,
    createdAt: r.createdAt,
    launchedAt: r.launchedAt,
    updatedAt: r.updatedAt,
    finishedAt: r.finishedAt,
    error: r.error,
  };
}

export interface WaitOptions {
  /** Give up after this long (a DeadlineExceededError). Default: no limit. */
  readonly timeoutMs?: number | undefined;
  /** Poll this often. Default 1000 ms. */
  readonly everyMs?: number | undefined;
  readonly onProgress?: ((s: RunStatus) => void) | undefined;
  readonly signal?: AbortSignal | undefined;
}

/** Follows a run until it is complete or failed; returns its last status. */
export async function waitForRun(redis: Redis, prefix: string, runId: string, unitsDone: UnitsDone, options: WaitOptions = {}): Promise<RunStatus> {
  const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
  for (;;) {
    options.signal?.throwIfAborted();
    const s = await runStatus(redis, prefix, runId, unitsDone);
    options.onProgress?.(s);
    if (s.state !== 'running') return s;
    if (Date.now() >= deadline) throw new DeadlineExceededError(`run ${runId}: not finished after ${Math.round((options.timeoutMs ?? 0) / 1000)} s (${s.unitsDone} of ${s.units} done); it goes on`);
    await new Promise((r) => setTimeout(r, Math.min(options.everyMs ?? 1000, Math.max(10, deadline - Date.now()))));
  }
}

const duration = (s: number): string => (s < 90 ? `${s.toFixed(0)} s` : s < 5400 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`);
const n = (x: number): string => Math.round(x).toLocaleString('en-US');

/** One line of a status, for people: `run R (precompute, table "t"): running, 12/40 chunks, 30 % …`. */
export function formatStatus(s: RunStatus): string {
  const unit = s.kind === 'precompute' ? 'chunks' : 'tasks';
  const pct = s.units === 0 ? 100 : (100 * s.unitsDone) / s.units;
  const parts = [
    `run ${s.runId} (${s.kind}, ${s.holds}${s.mode === 'shard' ? `, ${s.tasks} shards` : `, ${s.tasks} tasks on queue ${s.queue ?? '?'}`}): ${s.state}`,
    `${n(s.unitsDone)}/${n(s.units)} ${unit} (${pct.toFixed(0)} %)`,
    `${n(s.rowsDone)}/${n(s.totalRows)} rows`,
    `${n(s.rowsPerSecond)} rows/s`,
  ];
  if (s.etaSeconds !== undefined) parts.push(`ETA ${duration(s.etaSeconds)}`);
  parts.push(`updated ${s.updatedAt}`);
  if (s.error !== undefined) parts.push(`error: ${s.error}`);
  return parts.join(', ');
}
