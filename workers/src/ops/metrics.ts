/**
 * The worker's Prometheus metrics (prom-client): one registry per process, every series
 * labelled with the process's `device` (a default label, so a supervisor can merge the
 * /metrics of several children without collisions), prom-client's process metrics included.
 *
 * ```
 *  pipeline ─ jobs(transport, model, version) ─► inferq_jobs_total, inferq_rows_total, inferq_dead_letters_total,
 *                                                inferq_queue_wait_seconds, inferq_job_duration_seconds
 *  batcher  ─ batches(model, version) ────────► inferq_batch_rows, inferq_batch_padding_rows_total, inferq_inference_duration_seconds
 *  models   ─ modelLoaded(…) ─────────────────► inferq_model_load_seconds, inferq_model_warmup_seconds,
 *                                                inferq_batches_in_flight, inferq_pending_rows (read on scrape)
 *  rolls    ─ sink(label) ────────────────────► inferq_sink_roll_duration_seconds, inferq_sink_rows_total, inferq_sink_roll_failures_total
 *  sources  ─ watchSource(…) ─────────────────► inferq_queue_jobs, inferq_queue_dead_letters, inferq_kafka_consumer_lag (read on scrape, bounded wait)
 * ```
 *
 * Labelled children are made once per label set and kept, so the hot path does a map lookup
 * and an add. docs/metrics.md describes every series.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../logging.js';
import type { Source } from '../sources/source.js';
import type { BatchObserver, JobObserver, ModelGauges, SinkObserver, WorkerMetrics } from './hooks.js';
import { DepthReader } from './depth.js';

const NAMES = {
  jobs: 'inferq_jobs_total',
  rows: 'inferq_rows_total',
  deadLetters: 'inferq_dead_letters_total',
  queueWait: 'inferq_queue_wait_seconds',
  jobDuration: 'inferq_job_duration_seconds',
  batchRows: 'inferq_batch_rows',
  padding: 'inferq_batch_padding_rows_total',
  inference: 'inferq_inference_duration_seconds',
  inFlight: 'inferq_batches_in_flight',
  pending: 'inferq_pending_rows',
  rollDuration: 'inferq_sink_roll_duration_seconds',
  sinkRows: 'inferq_sink_rows_total',
  rollFailures: 'inferq_sink_roll_failures_total',
  queueJobs: 'inferq_queue_jobs',
  queueDead: 'inferq_queue_dead_letters',
  kafkaLag: 'inferq_kafka_consumer_lag',
  load: 'inferq_model_load_seconds',
  warmup: 'inferq_model_warmup_seconds',
  unload: 'inferq_model_unload_seconds',
  reloads: 'inferq_model_reloads_total',
  shadow: 'inferq_shadow_batches_total',
  ready: 'inferq_ready',
} as const;

/** The offline runs' series (`inferq worker --role precompute`): present once a task ran. */
const OFFLINE_NAMES = {
  tasks: 'inferq_offline_tasks_total',
  rows: 'inferq_offline_rows_total',
  taskDuration: 'inferq_offline_task_seconds',
  progress: 'inferq_offline_run_progress',
} as const;

/** The offline runs' metric names (a precompute worker exports them beside {@link workerMetricNames}). */
export function offlineMetricNames(): readonly string[] {
  return Object.values(OFFLINE_NAMES);
}

/** Every inferq_* metric name a worker exports (prom-client's process metrics come on top). */
export function workerMetricNames(): readonly string[] {
  return Object.values(NAMES);
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const INFERENCE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const ROWS_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536];
const ROLL_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

export interface PrometheusMetricsOptions {
  /** The process's device ("cpu", "cuda:0"): the `device` label of every series. */
  readonly device: string;
  readonly logger: Logger;
  /** Also export prom-client's process metrics (CPU, memory, event loop lag, heap, GC). Default true. */
  readonly processMetrics?: boolean;
  /** Longest a scrape waits for a source's counts or lag; older values are dropped, none are made up. Default 2000 ms. */
  readonly depthTimeoutMs?: number;
}

/** Running totals over every label, for the periodic summary line. */
export interface Totals {
  readonly jobs: number;
  readonly rows: number;
  readonly deadLetters: number;
  readonly retried: number;
  readonly batches: number;
  readonly batchRows: number;
  /** Rows waiting for a batch now, over every model. */
  readonly pendingRows: number;
}

const MODEL = ['model', 'version'] as const;
const JOB = ['transport', 'model', 'version'] as const;

export class PrometheusMetrics implements WorkerMetrics {
  readonly registry = new Registry();
  private readonly jobsTotal: Counter<'transport' | 'model' | 'version' | 'outcome' | 'code'>;
  private readonly rowsTotal: Counter<'transport' | 'model' | 'version' | 'outcome'>;
  private readonly deadTotal: Counter<'transport' | 'model' | 'version' | 'code'>;
  private readonly queueWait: Histogram<(typeof JOB)[number]>;
  private readonly jobDuration: Histogram<(typeof JOB)[number]>;
  private readonly batchRows: Histogram<(typeof MODEL)[number]>;
  private readonly padding: Counter<(typeof MODEL)[number]>;
  private readonly inference: Histogram<(typeof MODEL)[number]>;
  private readonly loadSeconds: Gauge<(typeof MODEL)[number]>;
  private readonly warmupSeconds: Gauge<(typeof MODEL)[number]>;
  private readonly rollDuration: Histogram<'sink'>;
  private readonly sinkRows: Counter<'sink'>;
  private readonly unloadSeconds: Gauge<'model' | 'version'>;
  private readonly reloads: Counter<'model' | 'outcome'>;
  private readonly shadowBatches: Counter<'model' | 'version' | 'outcome'>;
  private readonly rollFailures: Counter<'sink'>;
  private offlineSeries: { tasks: Counter<'kind' | 'outcome' | 'code'>; rows: Counter<'kind'>; duration: Histogram<'kind'>; progress: Gauge<'kind'> } | undefined;
  private readonly offlineObservers = new Map<string, { task(outcome: string, code: string, rows: number, seconds: number): void; progress(fraction: number): void }>();
  private readonly jobObservers = new Map<string, JobObserver>();
  private readonly batchObservers = new Map<string, BatchObserver>();
  private readonly sinkObservers = new Map<string, SinkObserver>();
  private readonly models = new Map<string, { readonly model: string; readonly version: string; readonly gauges: ModelGauges }>();
  private readonly depth: DepthReader;
  private readiness: () => boolean = () => false;
  private readonly totals_ = { jobs: 0, rows: 0, deadLetters: 0, retried: 0, batches: 0, batchRows: 0 };

  constructor(options: PrometheusMetricsOptions) {
    const registers = [this.registry];
    this.registry.setDefaultLabels({ device: options.device });
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    this.depth = new DepthReader(options.logger, options.depthTimeoutMs ?? 2000);
    this.jobsTotal = new Counter({ name: NAMES.jobs, help: 'Jobs (producer jobs; a pack counts each) by outcome: ok, retried, dead_letter; code: the error code ("" for ok).', labelNames: [...JOB, 'outcome', 'code'], registers });
    this.rowsTotal = new Counter({ name: NAMES.rows, help: 'Rows of those jobs by outcome.', labelNames: [...JOB, 'outcome'], registers });
    this.deadTotal = new Counter({ name: NAMES.deadLetters, help: 'Dead letters written, by error code.', labelNames: [...JOB, 'code'], registers });
    this.queueWait = new Histogram({ name: NAMES.queueWait, help: 'Seconds from enqueue to the first batch holding the message (one observation per attempt that reaches a batch).', labelNames: JOB, buckets: LATENCY_BUCKETS, registers });
    this.jobDuration = new Histogram({ name: NAMES.jobDuration, help: 'Seconds from enqueue to the outcome written: replies, rows and dead letters durable (one observation per message, at its final outcome).', labelNames: JOB, buckets: LATENCY_BUCKETS, registers });
    this.batchRows = new Histogram({ name: NAMES.batchRows, help: 'Rows per batch sent to the model (padding excluded).', labelNames: MODEL, buckets: ROWS_BUCKETS, registers });
    this.padding = new Counter({ name: NAMES.padding, help: 'Rows of zeros added to batches to reach a preferred batch size.', labelNames: MODEL, registers });
    this.inference = new Histogram({ name: NAMES.inference, help: 'Seconds the model took per batch.', labelNames: MODEL, buckets: INFERENCE_BUCKETS, registers });
    const models = this.models;
    new Gauge({
      name: NAMES.inFlight,
      help: 'Batches the model runs now.',
      labelNames: MODEL,
      registers,
      collect() {
        this.reset(); // a version unloaded since the last scrape has no series any more
        for (const m of models.values()) this.labels(m.model, m.version).set(m.gauges.batchesInFlight);
      },
    });
    new Gauge({
      name: NAMES.pending,
      help: 'Rows admitted to the batcher and waiting for a batch.',
      labelNames: MODEL,
      registers,
      collect() {
        this.reset(); // a version unloaded since the last scrape has no series any more
        for (const m of models.values()) this.labels(m.model, m.version).set(m.gauges.pendingRows);
      },
    });
    this.loadSeconds = new Gauge({ name: NAMES.load, help: 'Seconds the model version took to load (read, session created).', labelNames: MODEL, registers });
    this.warmupSeconds = new Gauge({ name: NAMES.warmup, help: 'Seconds the model version took to warm up (a batch at each size it will run).', labelNames: MODEL, registers });
    this.unloadSeconds = new Gauge({ name: NAMES.unload, help: 'Seconds the model version took to drain and close when it was last unloaded.', labelNames: MODEL, registers });
    this.reloads = new Counter({ name: NAMES.reloads, help: 'Model repository changes acted on: outcome loaded (a new version beside the serving ones), failed (its load failed; the serving versions stay), retired.', labelNames: ['model', 'outcome'], registers });
    this.shadowBatches = new Counter({ name: NAMES.shadow, help: 'Shadow batches by outcome: run, dropped (the shadow queue was full), failed.', labelNames: [...MODEL, 'outcome'], registers });
    this.rollDuration = new Histogram({ name: NAMES.rollDuration, help: 'Seconds a Parquet roll took, from its start to its files published (retries included).', labelNames: ['sink'], buckets: ROLL_BUCKETS, registers });
    this.sinkRows = new Counter({ name: NAMES.sinkRows, help: 'Rows published to the sink.', labelNames: ['sink'], registers });
    this.rollFailures = new Counter({ name: NAMES.rollFailures, help: 'Roll attempts that failed on the sink (retried, or refused for good).', labelNames: ['sink'], registers });
    this.registerDepthGauges(registers);
    const ready = (): boolean => this.readiness();
    new Gauge({
      name: NAMES.ready,
      help: '1 when /readyz answers 200, else 0.',
      registers,
      collect() {
        this.set(ready() ? 1 : 0);
      },
    });
  }

  /** The text of every metric, in Prometheus's exposition format. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** What inferq_ready reports (the ops server's readiness). */
  setReadiness(ready: () => boolean): void {
    this.readiness = ready;
  }

  totals(): Totals {
    let pendingRows = 0;
    for (const m of this.models.values()) pendingRows += m.gauges.pendingRows;
    return { ...this.totals_, pendingRows };
  }

  jobs(transport: string, model: string, version: string): JobObserver {
    const key = `${transport}\u0000${model}\u0000${version}`;
    let o = this.jobObservers.get(key);
    if (o === undefined) this.jobObservers.set(key, (o = this.makeJobObserver(transport, model, version)));
    return o;
  }

  batches(model: string, version: string): BatchObserver {
    const key = `${model}\u0000${version}`;
    let o = this.batchObservers.get(key);
    if (o === undefined) {
      const rows = this.batchRows.labels(model, version);
      const padding = this.padding.labels(model, version);
      const inference = this.inference.labels(model, version);
      const totals = this.totals_;
      o = {
        started(n, pad) {
          totals.batches++;
          totals.batchRows += n;
          rows.observe(n);
          if (pad > 0) padding.inc(pad);
        },
        ran: (seconds) => inference.observe(seconds),
      };
      // Present from the first batch on, so rate() sees the first padding rows.
      padding.inc(0);
      this.batchObservers.set(key, o);
    }
    return o;
  }

  modelLoaded(model: string, version: string, loadSeconds: number, warmupSeconds: number, gauges: ModelGauges): void {
    this.loadSeconds.labels(model, version).set(loadSeconds);
    this.warmupSeconds.labels(model, version).set(warmupSeconds);
    this.models.set(`${model}\u0000${version}`, { model, version, gauges });
  }

  modelUnloaded(model: string, version: string, seconds: number): void {
    this.models.delete(`${model}\u0000${version}`);
    this.loadSeconds.remove(model, version);
    this.warmupSeconds.remove(model, version);
    this.unloadSeconds.labels(model, version).set(seconds);
  }

  modelReload(model: string, outcome: 'loaded' | 'failed' | 'retired'): void {
    this.reloads.labels(model, outcome).inc();
  }

  shadow(model: string, version: string, outcome: 'run' | 'dropped' | 'failed'): void {
    this.shadowBatches.labels(model, version, outcome).inc();
  }

  sink(label: string): SinkObserver {
    let o = this.sinkObservers.get(label);
    if (o === undefined) {
      const duration = this.rollDuration.labels(label);
      const rows = this.sinkRows.labels(label);
      const failures = this.rollFailures.labels(label);
      rows.inc(0);
      failures.inc(0);
      o = {
        rolled(n, seconds) {
          rows.inc(n);
          duration.observe(seconds);
        },
        failed: () => failures.inc(),
      };
      this.sinkObservers.set(label, o);
    }
    return o;
  }

  watchSource(source: Source): void {
    this.depth.watch(source);
  }

  /** The observer of offline tasks of one kind (precompute, predict): bounded labels (kind, outcome, error code). */
  offline(kind: string): { task(outcome: string, code: string, rows: number, seconds: number): void; progress(fraction: number): void } {
    let o = this.offlineObservers.get(kind);
    if (o !== undefined) return o;
    const registers = [this.registry];
    const series = (this.offlineSeries ??= {
      tasks: new Counter({ name: OFFLINE_NAMES.tasks, help: 'Offline tasks (distributed precompute, predict) by outcome: done, skipped (the run was complete), retried, failed; code: the error code ("" when done).', labelNames: ['kind', 'outcome', 'code'], registers }),
      rows: new Counter({ name: OFFLINE_NAMES.rows, help: 'Rows computed by offline tasks (a task redone after a worker died counts again).', labelNames: ['kind'], registers }),
      duration: new Histogram({ name: OFFLINE_NAMES.taskDuration, help: 'Seconds an offline task took, from taken to acknowledged (its run finalised when it was the last).', labelNames: ['kind'], buckets: ROLL_BUCKETS, registers }),
      progress: new Gauge({ name: OFFLINE_NAMES.progress, help: 'Fraction of the units (chunks, tasks) done of the run this worker last worked on.', labelNames: ['kind'], registers }),
    });
    const rows = series.rows.labels(kind);
    const duration = series.duration.labels(kind);
    const progress = series.progress.labels(kind);
    o = {
      task: (outcome, code, n, seconds) => {
        series.tasks.labels(kind, outcome, code).inc();
        if (n > 0) rows.inc(n);
        duration.observe(seconds);
      },
      progress: (fraction) => progress.set(fraction),
    };
    this.offlineObservers.set(kind, o);
    return o;
  }

  private makeJobObserver(transport: string, model: string, version: string): JobObserver {
    const okJobs = this.jobsTotal.labels(transport, model, version, 'ok', '');
    const okRows = this.rowsTotal.labels(transport, model, version, 'ok');
    const retriedRows = this.rowsTotal.labels(transport, model, version, 'retried');
    const deadRows = this.rowsTotal.labels(transport, model, version, 'dead_letter');
    const wait = this.queueWait.labels(transport, model, version);
    const duration = this.jobDuration.labels(transport, model, version);
    // Error codes are a closed set (ERROR_CODES): a child per code seen.
    const retriedBy = new Map<string, Counter.Internal>();
    const deadBy = new Map<string, Counter.Internal>();
    const deadLettersBy = new Map<string, Counter.Internal>();
    const child = (m: Map<string, Counter.Internal>, code: string, make: () => Counter.Internal): Counter.Internal => {
      let c = m.get(code);
      if (c === undefined) m.set(code, (c = make()));
      return c;
    };
    const totals = this.totals_;
    return {
      ok(jobs, rows) {
        totals.jobs += jobs;
        totals.rows += rows;
        okJobs.inc(jobs);
        okRows.inc(rows);
      },
      retried: (code, jobs, rows) => {
        totals.retried += jobs;
        child(retriedBy, code, () => this.jobsTotal.labels(transport, model, version, 'retried', code)).inc(jobs);
        retriedRows.inc(rows);
      },
      deadLettered: (code, jobs, rows) => {
        totals.deadLetters += jobs;
        child(deadBy, code, () => this.jobsTotal.labels(transport, model, version, 'dead_letter', code)).inc(jobs);
        child(deadLettersBy, code, () => this.deadTotal.labels(transport, model, version, code)).inc(jobs);
        deadRows.inc(rows);
      },
      queueWait: (seconds) => wait.observe(seconds),
      finished: (seconds) => duration.observe(seconds),
    };
  }

  private registerDepthGauges(registers: Registry[]): void {
    const depth = this.depth;
    new Gauge({
      name: NAMES.queueJobs,
      help: 'Jobs in the Redis queue by state (BullMQ: waiting, active, delayed, prioritized, waiting-children, completed, failed).',
      labelNames: ['transport', 'queue', 'state'],
      registers,
      async collect() {
        this.reset();
        for (const d of await depth.read()) {
          if (d.kind !== 'queue') continue;
          for (const [state, n] of Object.entries(d.jobs)) this.labels(d.transport, d.queue, state).set(n);
        }
      },
    });
    new Gauge({
      name: NAMES.queueDead,
      help: 'Dead letters kept at the source: entries of the Redis dead-letter stream, messages of the Kafka dead-letter topic.',
      labelNames: ['transport', 'queue'],
      registers,
      async collect() {
        this.reset();
        for (const d of await depth.read()) this.labels(d.transport, d.kind === 'queue' ? d.queue : d.topic).set(d.deadLetters);
      },
    });
    new Gauge({
      name: NAMES.kafkaLag,
      help: "Messages of the partition the worker's consumer group has not committed yet.",
      labelNames: ['topic', 'group', 'partition'],
      registers,
      async collect() {
        this.reset();
        for (const d of await depth.read()) {
          if (d.kind !== 'topic') continue;
          for (const p of d.partitions) this.labels(d.topic, d.group, String(p.partition)).set(p.lag);
        }
      },
    });
  }
}
