/**
 * The run record of a distributed offline run, in Redis:
 *
 * ```
 *  <prefix>:offline:run:<runId>         hash: kind, mode, params (JSON), units, tasks, rows, lock TTL,
 *                                        created / launched / updated / finished, state, error
 *  <prefix>:offline:run:<runId>:done    set of done task indices (predict; precompute counts its chunk checkpoint)
 * ```
 *
 * Whoever can write to Redis can write a record: every read goes through {@link parseRunRecord}
 * (zod), and a kind's params through that kind's own schema and the worker's allow-lists.
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { InvalidInputError, printable } from '@inferq/shared';

export const OFFLINE_KINDS = ['precompute', 'predict'] as const;
export type OfflineKind = (typeof OFFLINE_KINDS)[number];

/** The default queue of offline tasks (never a serving queue: a serving worker would dead-letter them). */
export const OFFLINE_QUEUE = 'inferq-offline';

/** What a run id looks like: the UTC start to the second and 6 random hex digits. */
export const RUN_ID = /^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$/;
/** A new run id: the UTC time to the second and 6 random hex digits (sorts by start). */
export const newRunId = (): string => `${new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${randomBytes(3).toString('hex')}`;

/** A queue name (BullMQ key part). */
export const QUEUE_NAME = /^[A-Za-z0-9_.-]{1,100}$/;
/** Most characters of a run's params (a spec's text, a predict's model and folders). */
export const MAX_PARAMS_CHARS = 512 * 1024;
/** Most tasks of one run. */
export const MAX_TASKS = 1_000_000;

export interface OfflineKeys {
  run(runId: string): string;
  done(runId: string): string;
}

export function offlineKeys(prefix: string): OfflineKeys {
  const base = `${prefix}:offline`;
  return {
    run: (runId) => `${base}:run:${runId}`,
    done: (runId) => `${base}:run:${runId}:done`,
  };
}

const count = (max: number) =>
  z
    .string()
    .regex(/^\d{1,16}$/, 'a whole number')
    .transform(Number)
    .pipe(z.number().int().nonnegative().max(max));
const iso = z.string().regex(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/, 'an ISO time');

const recordSchema = z.object({
  v: z.literal('1'),
  kind: z.enum(OFFLINE_KINDS),
  /** queue: tasks on a BullMQ queue; shard: `--shard i/N` processes (no queue). */
  mode: z.enum(['queue', 'shard']),
  queue: z.string().regex(QUEUE_NAME).optional(),
  params: z.string().min(2).max(MAX_PARAMS_CHARS),
  /** Units of progress: chunks (precompute), tasks (predict). */
  units: count(Number.MAX_SAFE_INTEGER),
  tasks: count(MAX_TASKS).pipe(z.number().min(1)),
  totalRows: count(Number.MAX_SAFE_INTEGER),
  lockTtlMs: count(3_600_000).pipe(z.number().min(1000)),
  /** The lock the run holds (table or output folder), for messages and status. */
  holds: z.string().max(2000),
  createdAt: iso,
  launchedAt: iso,
  /** Units done when the run was (re)launched: rates count from there. */
  launchUnits: count(Number.MAX_SAFE_INTEGER),
  updatedAt: iso,
  state: z.enum(['running', 'complete', 'failed']),
  error: z.string().max(2000).optional(),
  finishedAt: iso.optional(),
});

export type RunRecord = z.infer<typeof recordSchema> & { readonly runId: string };

/** Validates a record read from Redis; throws InvalidInputError (BAD_JOB_DATA) naming the field. */
export function parseRunRecord(runId: string, raw: Record<string, string>): RunRecord {
  if (!RUN_ID.test(runId)) throw new InvalidInputError(`run id "${printable(runId)}" is not a run id`, { code: 'BAD_JOB_DATA' });
  if (Object.keys(raw).length === 0) throw new InvalidInputError(`run ${runId}: no run record (it never existed, or it was deleted)`, { code: 'BAD_JOB_DATA' });
  const parsed = recordSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new InvalidInputError(`run ${runId}: record field ${issue.path.join('.') || '(top level)'}: ${issue.message}`, { code: 'BAD_JOB_DATA' });
  }
  return { ...parsed.data, runId };
}

export async function readRunRecord(redis: Redis, keys: OfflineKeys, runId: string): Promise<RunRecord> {
  return parseRunRecord(runId, RUN_ID.test(runId) ? await redis.hgetall(keys.run(runId)) : {});
}

/** What a launch writes: a new record, or the fields a resumed one gets. */
export interface NewRun {
  readonly runId: string;
  readonly kind: OfflineKind;
  readonly mode: 'queue' | 'shard';
  readonly queue?: string | undefined;
  readonly params: unknown;
  readonly units: number;
  readonly tasks: number;
  readonly totalRows: number;
  readonly lockTtlMs: number;
  readonly holds: string;
}

/** Writes a new record, or (same run id) marks it running again from now: the kind's params are kept. */
export async function launchRecord(redis: Redis, keys: OfflineKeys, run: NewRun, unitsDone: number): Promise<void> {
  const now = new Date().toISOString();
  const key = keys.run(run.runId);
  const fields: Record<string, string> = {
    v: '1',
    kind: run.kind,
    mode: run.mode,
    params: JSON.stringify(run.params),
    units: String(run.units),
    tasks: String(run.tasks),
    totalRows: String(run.totalRows),
    lockTtlMs: String(run.lockTtlMs),
    holds: run.holds,
    launchedAt: now,
    launchUnits: String(unitsDone),
    updatedAt: now,
    state: 'running',
    ...(run.queue === undefined ? {} : { queue: run.queue }),
  };
  await redis.multi().hsetnx(key, 'createdAt', now).hset(key, fields).hdel(key, 'error', 'finishedAt').exec();
}

const FAIL = `if redis.call('HGET', KEYS[1], 'state') == 'running' then
  redis.call('HSET', KEYS[1], 'state', 'failed', 'error', ARGV[1], 'updatedAt', ARGV[2])
  return 1
end
return 0`;

/** Marks a running run failed with `code: reason` (a completed run stays complete). */
export async function failRun(redis: Redis, keys: OfflineKeys, runId: string, code: string, reason: string): Promise<void> {
  await redis.eval(FAIL, 1, keys.run(runId), printable(`${code}: ${reason}`, 1000), new Date().toISOString());
}

export async function touchRun(redis: Redis, keys: OfflineKeys, runId: string): Promise<void> {
  await redis.hset(keys.run(runId), 'updatedAt', new Date().toISOString());
}

export async function completeRun(redis: Redis, keys: OfflineKeys, runId: string): Promise<void> {
  const now = new Date().toISOString();
  await redis.hset(keys.run(runId), 'state', 'complete', 'finishedAt', now, 'updatedAt', now);
}

/** Tasks of a run, `tasks` of them over `units` units: task t covers units [t·k, min((t+1)·k, units)). */
export function taskUnits(units: number, tasks: number, task: number): [number, number] {
  const k = Math.ceil(units / tasks);
  return [Math.min(units, task * k), Math.min(units, (task + 1) * k)];
}

/** A run's params (JSON from Redis: untrusted) checked against the schema of its kind; InvalidInputError (BAD_JOB_DATA) names the bad field. */
export function parseRunParams<T>(schema: z.ZodType<T>, text: string, runId: string): T {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new InvalidInputError(`run ${runId}: params are not JSON (${(err as Error).message})`, { code: 'BAD_JOB_DATA' });
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new InvalidInputError(`run ${runId}: params.${issue.path.join('.') || '(top level)'}: ${issue.message}`, { code: 'BAD_JOB_DATA' });
  }
  return parsed.data;
}
