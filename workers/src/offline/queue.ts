/**
 * Offline tasks on a BullMQ queue. A task's job id is `<runId>.<index>` (BullMQ refuses ':' in
 * custom ids), so enqueueing a task that is already queued, running or delayed adds nothing: a
 * relaunch re-enqueues only what is missing, and retries what failed for good.
 */
import { Queue } from 'bullmq';
import type { Job, JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { InvalidInputError, printable } from '@inferq/shared';
import { OFFLINE_KINDS, RUN_ID } from './record.js';
import type { OfflineKind } from './record.js';

export const taskJobId = (runId: string, index: number): string => `${runId}.${index}`;

/**
 * Every task's job options: retriable failures (a server that did not answer) are retried with
 * backoff; completed jobs are dropped (the run's own done set is the record); failed ones are kept
 * for inspection and retried by a relaunch.
 */
export const TASK_JOB_OPTIONS: JobsOptions = { attempts: 5, backoff: { type: 'exponential', delay: 1000 }, removeOnComplete: true, removeOnFail: { count: 10_000 } };

const taskSchema = z
  .object({
    v: z.literal(1),
    kind: z.enum(OFFLINE_KINDS),
    run: z.string().regex(RUN_ID, 'a run id'),
    index: z.number().int().nonnegative(),
    /** What the kind needs of this task beyond its index (predict: its file and row groups). */
    payload: z.unknown().optional(),
  })
  .strict();

export type TaskData = z.infer<typeof taskSchema>;

/** Validates a task job's data (untrusted) and its id; throws InvalidInputError (BAD_JOB_DATA, ID_MISMATCH) naming the field. */
export function parseTask(data: unknown, jobId: string | undefined): TaskData {
  const parsed = taskSchema.safeParse(data);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length === 0 ? '(job data)' : issue.path.join('.');
    throw new InvalidInputError(`task ${printable(jobId ?? '?')}: ${where}: ${issue.message}`, { code: 'BAD_JOB_DATA' });
  }
  const task = parsed.data;
  if (jobId !== taskJobId(task.run, task.index)) throw new InvalidInputError(`task ${printable(jobId ?? '?')}: its data names task ${taskJobId(task.run, task.index)}`, { code: 'ID_MISMATCH' });
  return task;
}

export interface EnqueueResult {
  /** Tasks added to the queue now. */
  readonly added: number;
  /** Tasks that had failed for good and were sent back to the queue. */
  readonly retried: number;
  /** Tasks already waiting, delayed or running. */
  readonly present: number;
}

/**
 * Enqueues the run's tasks `indices` (those not done). `fresh`: the run is new, so none can be
 * on the queue yet and their states are not asked for.
 */
export async function enqueueTasks(
  connection: Redis,
  queueName: string,
  prefix: string,
  task: { kind: OfflineKind; run: string; payload?: (index: number) => unknown },
  indices: readonly number[],
  fresh: boolean,
): Promise<EnqueueResult> {
  const queue = new Queue(queueName, { connection, prefix });
  let added = 0;
  let retried = 0;
  let present = 0;
  try {
    const job = (index: number): { name: string; data: TaskData; opts: JobsOptions } => ({
      name: task.kind,
      data: { v: 1, kind: task.kind, run: task.run, index, ...(task.payload === undefined ? {} : { payload: task.payload(index) }) },
      opts: { ...TASK_JOB_OPTIONS, jobId: taskJobId(task.run, index) },
    });
    for (let at = 0; at < indices.length; at += 500) {
      const slice = indices.slice(at, at + 500);
      const missing: number[] = [];
      if (fresh) missing.push(...slice);
      else {
        const states = await Promise.all(slice.map((i) => queue.getJobState(taskJobId(task.run, i))));
        const retry: Promise<void>[] = [];
        slice.forEach((i, k) => {
          const state = states[k]!;
          if (state === 'unknown') missing.push(i);
          else if (state === 'failed' || state === 'completed') {
            retry.push(
              queue.getJob(taskJobId(task.run, i)).then(async (j: Job | undefined) => {
                if (j === undefined) missing.push(i);
                else {
                  await j.retry(state, { resetAttemptsMade: true, resetAttemptsStarted: true });
                  retried++;
                }
              }),
            );
          } else present++;
        });
        await Promise.all(retry);
      }
      if (missing.length > 0) await queue.addBulk(missing.map(job));
      added += missing.length;
    }
  } finally {
    await queue.close();
  }
  return { added, retried, present };
}
