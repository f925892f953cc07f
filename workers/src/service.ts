/**
 * A queue worker: one source, one pipeline, its sinks, its models. Owns the start order, the
 * close order and the one shutdown deadline.
 *
 * ```
 *  start: probe the worker's own sinks ─► source.start(pipeline)           (models: loaded by the caller)
 *  close(timeout): ┬ source.close(deadline): stop pulling, wait for in-flight jobs, hand back the rest
 *                  └ rolls.flush(soft deadline): every buffered row rolled now, retried until then
 *                  ─► shadow: queued batches run and its rows rolled, until the deadline
 *                  ─► replies flushed ─► rolls stopped
 * ```
 *
 * Nothing is acknowledged before every sink of the job is durable; what is not by the deadline
 * is left unacknowledged, so its source delivers it again.
 */
import { randomBytes } from 'node:crypto';
import type { NonFinitePolicy } from '@inferq/shared';
import { ClosedError } from '@inferq/shared';
import { deadlineRace } from './deadline.js';
import type { Logger } from './logging.js';
import type { ModelPool } from './models/model-pool.js';
import { VersionRouter } from './models/routing.js';
import type { RoutingSource } from './models/routing.js';
import { noMetrics } from './ops/hooks.js';
import type { WorkerMetrics } from './ops/hooks.js';
import { JobPipeline } from './pipeline/handle-job.js';
import type { PipelineStats } from './pipeline/handle-job.js';
import type { RetryPolicy } from './pipeline/outcome.js';
import { SHADOW_SUBFOLDER, ShadowRunner } from './pipeline/shadow.js';
import { ParquetSink } from './sinks/parquet-sink.js';
import { RollCoordinator } from './sinks/roll-coordinator.js';
import { SinkSet } from './sinks/sink-set.js';
import type { Source, SourceHealth } from './sources/source.js';

export interface WorkerServiceOptions {
  readonly source: Source;
  /** Where models come from (a ModelPool; anything with its `get`). */
  readonly models: Pick<ModelPool, 'get'>;
  /**
   * Where the model-level `traffic` and `shadow` settings are read (the pool's ModelRepository).
   * Default: none, so jobs without a version go to the newest served one and nothing is shadowed.
   */
  readonly routing?: RoutingSource | undefined;
  /** How long a model's traffic and shadow settings are reused before they are read again, ms. Default 2000. */
  readonly routingTtlMs?: number | undefined;
  /** Shadow batches waiting at most; one more is dropped (and counted). Default 4. */
  readonly shadowQueue?: number | undefined;
  readonly logger: Logger;
  /** NaN/Inf in features. Default 'reject'. */
  readonly nonFinite?: NonFinitePolicy;
  /** Backoff between in-process retries (sources that retry themselves, Kafka). Default 200 ms doubling to 5 s. */
  readonly retry?: RetryPolicy;
  /**
   * Parquet sinks every result is written to. A job is acknowledged only after the roll
   * holding its rows is published (see RollCoordinator).
   */
  readonly sinks?: readonly ParquetSink[];
  /**
   * Folders under which a job may name sinks of its own (`enqueue(…, { sinks })`); its rows
   * then go to those too. A job naming any other folder is dead-lettered. Default: none.
   */
  readonly allowJobSinksUnder?: readonly string[];
  /** Opens a job's sink folder (the CLI passes its roll settings). Default: a ParquetSink with default rolls. */
  readonly openSink?: (uri: string) => ParquetSink;
  /** Called when the worker cannot go on (one of its own sinks refuses every write): the process should stop. */
  readonly onFatal?: (err: Error) => void;
  /**
   * Where jobs, rows, dead letters, latencies, sink rolls and the source's depth are recorded
   * (ops/metrics.ts: PrometheusMetrics). Default: nowhere. Give the ModelPool the same for batch metrics.
   */
  readonly metrics?: WorkerMetrics;
}

export type WorkerStats = PipelineStats & { readonly rolls: number; readonly alreadySunk: number } & Readonly<Record<string, number>>;

export class WorkerService {
  readonly source: Source;
  readonly sinks: SinkSet;
  private readonly pipeline: JobPipeline;
  private readonly rolls: RollCoordinator | undefined;
  /** The traffic split; undefined without `routing`. */
  readonly router: VersionRouter | undefined;
  readonly shadow: ShadowRunner | undefined;
  private closing: Promise<void> | undefined;

  constructor(options: WorkerServiceOptions) {
    this.source = options.source;
    this.sinks = new SinkSet({
      defaults: options.sinks ?? [],
      allowJobSinksUnder: options.allowJobSinksUnder ?? [],
      open: options.openSink ?? ((uri) => new ParquetSink({ location: uri, logger: options.logger })),
    });
    this.rolls = this.sinks.active
      ? new RollCoordinator({
          sinks: this.sinks,
          journal: this.source.journal,
          group: `${this.source.name}-${randomBytes(4).toString('hex')}`,
          logger: options.logger,
          maxWaiting: this.source.concurrency,
          ...(options.onFatal === undefined ? {} : { onFatal: options.onFatal }),
          ...(options.metrics === undefined ? {} : { metrics: options.metrics }),
        })
      : undefined;
    const rolls = this.rolls;
    this.source.sinks = this.sinks;
    this.source.onRevoked = (groups) => {
      for (const g of groups) rolls?.dropGroup(g, new ClosedError(`partition ${g} went to another worker`));
    };
    this.router = options.routing === undefined ? undefined : new VersionRouter({ source: options.routing, logger: options.logger, ttlMs: options.routingTtlMs });
    this.shadow =
      this.router === undefined
        ? undefined
        : new ShadowRunner({
            models: options.models,
            router: this.router,
            sinks: (options.sinks ?? []).map((s) => s.withSubfolder(SHADOW_SUBFOLDER)),
            metrics: options.metrics ?? noMetrics,
            logger: options.logger,
            maxQueued: options.shadowQueue,
          });
    this.pipeline = new JobPipeline({
      models: options.models,
      router: this.router,
      shadow: this.shadow,
      sinks: this.sinks,
      rolls: this.rolls,
      replies: this.source.replies,
      nonFinite: options.nonFinite ?? 'reject',
      ...(options.retry === undefined ? {} : { retry: options.retry }),
      logger: options.logger.child({ transport: this.source.name }),
      transport: this.source.name,
      ...(options.metrics === undefined ? {} : { metrics: options.metrics }),
    });
    options.metrics?.watchSource(this.source);
  }

  get stats(): WorkerStats {
    return { ...this.source.stats(), ...this.pipeline.stats, rolls: this.rolls?.stats.rolls ?? 0, alreadySunk: this.rolls?.stats.alreadySunk ?? 0 };
  }

  /** Whether the source is connected now (readiness); a source that cannot tell counts as connected. */
  health(): SourceHealth {
    return this.source.health?.() ?? { connected: true };
  }

  /** Checks the worker's own sinks (a folder that can never be written fails here), then starts the source. */
  async start(): Promise<void> {
    await this.sinks.probeDefaults();
    await this.source.start(this.pipeline.handle);
  }

  /** Stops within `timeoutMs`, whatever is down; never acknowledges what is not durable. */
  close(timeoutMs = 30_000): Promise<void> {
    this.closing ??= this.doClose(Date.now() + timeoutMs);
    return this.closing;
  }

  private async doClose(deadline: number): Promise<void> {
    // Rolls give up a little before the source stops waiting, so their jobs are handed back in time.
    const soft = deadline - Math.min(2500, Math.max(0, deadline - Date.now()) / 3);
    const flushed = this.rolls?.flush(soft) ?? Promise.resolve(true);
    await this.source.close(deadline);
    await Promise.all([deadlineRace(flushed, deadline), this.shadow?.close(deadline)]);
    await deadlineRace(this.source.replies.flush(deadline), deadline);
    this.rolls?.abandon(new ClosedError('the worker stopped'));
  }
}
