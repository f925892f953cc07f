/**
 * Where a job's results go. Every sink says when they are durable: a source acknowledges a
 * job only after every sink it was written to has resolved. The reply stream or topic is a
 * sink (each source has its own), and so are the Parquet folders (one RollCoordinator for all).
 */
import type { TensorMap } from '@inferq/shared';
import type { ParquetSink } from './parquet-sink.js';
import type { SinkSet } from './sink-set.js';

/** Where a job's rows stand in a source's order, when the source fixes it (Kafka: the partition and the offset). */
export interface RollPosition {
  /** The sink group, part of roll file names (a topic partition). */
  readonly group: string;
  readonly seq: number;
}

/** One job whose results are written. */
export interface SinkJob {
  /** The job's id (a packed job's own id): the job_id column, the reply's correlation id. */
  readonly id: string;
  /** One run of the job at its source (Redis: the BullMQ job id and creation time; Kafka: topic, partition, offset). */
  readonly run: string;
  /** Whether this run may have been started before (retried, stalled, redelivered): only then are earlier writes looked up. */
  readonly rerun: boolean;
  readonly rowIds: readonly string[] | undefined;
  /** The job's own Parquet sinks (`enqueue(…, { sinks })`), checked against the worker's allow-list. */
  readonly sinks: readonly string[] | undefined;
  /** Reply stream or topic. */
  readonly replyTo?: string | undefined;
  /** A pack's jobs (their ids and rows, in row order), for a reply that answers all of them. */
  readonly jobs?: readonly { readonly id: string; readonly rows: number }[] | undefined;
  readonly position?: RollPosition | undefined;
}

export interface SinkResult {
  readonly outputs: TensorMap;
  readonly rows: number;
  readonly model: string;
  readonly version: string;
}

/** 'already': an earlier run of the job wrote these results (found in the source's records). */
export type WriteOutcome = 'written' | 'already';

export interface Sink {
  /** Writes a job's results; resolves once they are durable. */
  write(job: SinkJob, result: SinkResult): Promise<WriteOutcome>;
  /**
   * Writes what is buffered now, retrying until `deadline` (epoch ms). Returns whether all of
   * it was written; writes still waiting then reject (their jobs are never acknowledged).
   */
  flush(deadline: number): Promise<boolean>;
}

/** The files that hold a job's rows, by sink key. */
export type RollRecord = Readonly<Record<string, readonly string[]>>;

/**
 * What a source remembers of Parquet rolls (Redis: a record per job run; Kafka: the offset
 * ranges in file names). Everything a source reads back is untrusted.
 */
export interface RollJournal {
  /**
   * The keys of the sinks (among `targets`) that already hold this job's rows. Records read
   * back are checked with `sinks.recordedFiles()` (they name only files this worker may write).
   */
  written(job: SinkJob, targets: readonly { readonly key: string; readonly sink: ParquetSink }[], sinks: SinkSet): Promise<Set<string>>;
  /** Records the files that will hold each job's rows, before any of them is published. */
  record(entries: readonly { readonly job: SinkJob; readonly files: RollRecord }[]): Promise<void>;
  /** Drops the records of jobs whose rows were refused (they are in no published file). */
  forget(jobs: readonly SinkJob[]): Promise<void>;
  /**
   * The highest sequence number of `group` that may be rolled now, for sources that fix the
   * order (a roll must cover a contiguous range of Kafka offsets); undefined: any buffered row.
   */
  rollableUpTo?(group: string): number | undefined;
}
