/** What a kind of offline run (precompute, predict) gives the generic runtime. */
import type { Redis } from 'ioredis';
import type { Logger } from '../logging.js';
import type { OfflineKind, RunRecord } from './record.js';

export interface TaskContext {
  readonly record: RunRecord;
  /** The task's index, and what its job carries beyond it (predict: its file and row groups). */
  readonly index: number;
  readonly payload: unknown;
  /** The worker's connection (shared: no WATCH on it). */
  readonly redis: Redis;
  readonly signal: AbortSignal;
  readonly logger: Logger;
}

/** Whether a run is finished: committed already, every unit done but not committed yet, or not. */
export type RunProgress = 'committed' | 'done' | 'pending';

export interface OfflineKindHandler {
  readonly kind: OfflineKind;
  /**
   * The lock the run holds, from its params (validated): the table lock (precompute), the
   * output folder's (predict). Its value is the run's, so any worker of the run renews it.
   */
  lockOf(record: RunRecord): Promise<{ key: string; value: string; what: string }>;
  /**
   * Runs one task: validates what it reads (throws an InferqError that names it), writes its
   * output idempotently and marks its units done. Returns the rows it computed.
   */
  runTask(ctx: TaskContext): Promise<{ rows: number }>;
  /** Units done now (progress). */
  unitsDone(record: RunRecord, redis: Redis): Promise<number>;
  progress(ctx: TaskContext): Promise<RunProgress>;
  /**
   * Makes a run whose units are all done visible (the table swap, `_SUCCESS`): idempotent, and
   * safe when two finishers run it at once (its commit is guarded). `redis` is its own connection.
   */
  finalize(ctx: TaskContext, redis: Redis): Promise<void>;
  /** Releases what it keeps between tasks (loaded models). */
  close(): Promise<void>;
}
