/**
 * What the worker's components tell its metrics, as small interfaces with a no-op default
 * ({@link noMetrics}), so a library user who builds a WorkerService without metrics pays for
 * nothing. ops/metrics.ts implements them with prom-client.
 *
 * Every label value handed in here is bounded: transports are source names, models and
 * versions come from loaded models (never from a job's own claim), codes are ErrorCodes.
 */
import type { Source } from '../sources/source.js';

/** Jobs of one (transport, model, version). Counts are producer jobs: a pack counts its jobs. */
export interface JobObserver {
  ok(jobs: number, rows: number): void;
  retried(code: string, jobs: number, rows: number): void;
  deadLettered(code: string, jobs: number, rows: number): void;
  /** Seconds from enqueue to the job's first batch. */
  queueWait(seconds: number): void;
  /** Seconds from enqueue to the job's outcome written (one observation per message). */
  finished(seconds: number): void;
}

/** Batches of one model version. */
export interface BatchObserver {
  /** A batch of `rows` rows, plus `padding` rows of zeros up to a preferred size, went to the model. */
  started(rows: number, padding: number): void;
  /** The model ran a batch in `seconds` (whether it failed or not). */
  ran(seconds: number): void;
}

/** Rolls of one sink label. */
export interface SinkObserver {
  /** A roll published `rows` rows to this sink; it took `seconds` from its start. */
  rolled(rows: number, seconds: number): void;
  /** A roll attempt failed on this sink (retried, or refused for good). */
  failed(): void;
}

/** What the metrics read from a loaded model on each scrape. */
export interface ModelGauges {
  readonly batchesInFlight: number;
  readonly pendingRows: number;
}

export interface WorkerMetrics {
  /** The observer of a (transport, model, version); the same object for the same three. */
  jobs(transport: string, model: string, version: string): JobObserver;
  batches(model: string, version: string): BatchObserver;
  /** A model version finished loading (`loadSeconds`) and warming up (`warmupSeconds`). */
  modelLoaded(model: string, version: string, loadSeconds: number, warmupSeconds: number, gauges: ModelGauges): void;
  /** A loaded model version was closed (retired, replaced or evicted) after `seconds` of draining; its gauges go. */
  modelUnloaded(model: string, version: string, seconds: number): void;
  /** A change of the model repository was acted on: a version `loaded` beside the serving ones, a load that `failed`, a version `retired`. */
  modelReload(model: string, outcome: 'loaded' | 'failed' | 'retired'): void;
  /** A shadow batch of `model` `version` was `run`, `dropped` (the shadow queue was full) or `failed`. */
  shadow(model: string, version: string, outcome: 'run' | 'dropped' | 'failed'): void;
  /** The observer of a sink: the worker's own sinks by their URI, every job sink as "job". */
  sink(label: string): SinkObserver;
  /** A source whose queue depth (counts, lag) the metrics read on scrape. */
  watchSource(source: Source): void;
}

const noJobs: JobObserver = { ok: () => undefined, retried: () => undefined, deadLettered: () => undefined, queueWait: () => undefined, finished: () => undefined };
const noBatches: BatchObserver = { started: () => undefined, ran: () => undefined };
const noSink: SinkObserver = { rolled: () => undefined, failed: () => undefined };

/** Metrics that record nothing: the default of every component. */
export const noMetrics: WorkerMetrics = {
  jobs: () => noJobs,
  batches: () => noBatches,
  modelLoaded: () => undefined,
  modelUnloaded: () => undefined,
  modelReload: () => undefined,
  shadow: () => undefined,
  sink: () => noSink,
  watchSource: () => undefined,
};
