/**
 * One job, whatever its source: the same steps for Redis, Kafka and any other source.
 *
 * ```
 *  delivery ─► payload ─► decode envelope ─► id as the source says? ─► job sinks allowed and writable?
 *      ─► answered before? (a run delivered again) ─► pack? ─► packs.ts
 *      ─► route: the job's version, else the model's traffic split by job id (routing.ts) ─► model pool
 *      ─► validate ─► batcher ─► outputs
 *      ─► reply sink (unless an earlier run's reply went out) ─► shadow (sampled, not awaited: shadow.ts)
 *      ─► Parquet rows (roll coordinator)
 *      ─► done                                   every sink durable: the source acknowledges
 *  any error ─► hand back (worker stopping) | retry (retriable, attempts left) | dead letter(s) ─► failed
 * ```
 *
 * A job whose deadline passed before it started fails with DEADLINE, unless an earlier run of
 * it may have answered (then a second, contradicting answer is never given).
 */
import { InvalidInputError, SinkRefusedError, decodeEnvelope, printable, unpackJobs } from '@inferq/shared';
import type { Envelope, NonFinitePolicy } from '@inferq/shared';
import type { Logger } from '../logging.js';
import type { ModelPool } from '../models/model-pool.js';
import type { VersionRouter } from '../models/routing.js';
import { noMetrics } from '../ops/hooks.js';
import type { WorkerMetrics } from '../ops/hooks.js';
import type { RollCoordinator } from '../sinks/roll-coordinator.js';
import type { Sink } from '../sinks/sink.js';
import type { SinkSet } from '../sinks/sink-set.js';
import type { Answered, DeadLetter, Delivery, Handler, Outcome } from '../sources/source.js';
import { codeOf, deadLetterOf } from './dead-letter.js';
import { inferEnvelope } from './infer.js';
import type { Inference } from './infer.js';
import { DEFAULT_RETRY, isHandBack, isRetriable, retryDelay } from './outcome.js';
import type { RetryPolicy } from './outcome.js';
import { runPack } from './packs.js';
import type { ShadowRunner } from './shadow.js';
import { sinkJob, sinkResult } from './sink-job.js';
import { JobTrack } from './track.js';

export interface PipelineOptions {
  readonly models: Pick<ModelPool, 'get'>;
  /** Chooses the version of a job that names none (the model's traffic split). Default: none, the pool's newest. */
  readonly router?: Pick<VersionRouter, 'route'> | undefined;
  /** Runs the model's shadow version on a sample of served batches. Default: none. */
  readonly shadow?: Pick<ShadowRunner, 'offer'> | undefined;
  /** The worker's sinks and allow-list: a job naming a sink it may not write fails before it runs. */
  readonly sinks: SinkSet;
  /** Parquet rolls; undefined when the worker writes no Parquet. */
  readonly rolls: RollCoordinator | undefined;
  /** The source's replies. */
  readonly replies: Sink;
  readonly nonFinite: NonFinitePolicy;
  readonly retry?: RetryPolicy;
  readonly logger: Logger;
  /** Jobs, rows, dead letters and latencies, labelled by `transport` and model. Default: none. */
  readonly metrics?: WorkerMetrics;
  /** The source's name, the transport label of the metrics. Default "unknown". */
  readonly transport?: string;
}

/** Producer jobs and their rows (a pack counts each of its jobs). */
export interface Tally {
  readonly jobs: number;
  readonly rows: number;
}

/** A delivery run to its end: every row, and the jobs and rows written (not refused by a sink). */
export interface Done {
  readonly rows: number;
  readonly ok: Tally;
}

export interface PipelineStats {
  readonly completed: number;
  readonly deadLettered: number;
  readonly retried: number;
  readonly handedBack: number;
  /** Packed envelopes whose jobs were run one by one (one of them was bad or late). */
  readonly packsSplit: number;
}

export class JobPipeline {
  readonly opts: PipelineOptions;
  private readonly log: Logger;
  private readonly metrics: WorkerMetrics;
  private readonly transport: string;
  readonly counters = { completed: 0, deadLettered: 0, retried: 0, handedBack: 0, packsSplit: 0 };

  constructor(options: PipelineOptions) {
    this.opts = options;
    this.log = options.logger;
    this.metrics = options.metrics ?? noMetrics;
    this.transport = options.transport ?? 'unknown';
  }

  get stats(): PipelineStats {
    return { ...this.counters };
  }

  /** The handler a source calls for each delivery; never rejects. */
  readonly handle: Handler = (d) => this.run(d);

  private async run(d: Delivery): Promise<Outcome> {
    let envelope: Envelope | undefined;
    let answered: Answered = 'no';
    const track = new JobTrack(this.metrics, this.transport, d.enqueuedAt);
    try {
      const decoded = decodeEnvelope(await d.payload());
      if (d.expectedId !== undefined && decoded.id !== d.expectedId) {
        throw new InvalidInputError(`envelope id "${printable(decoded.id)}" does not match job id "${printable(d.expectedId)}"`, { jobId: d.expectedId, code: 'ID_MISMATCH' });
      }
      d.check?.(decoded);
      // Only an envelope the source vouches for names the dead letters' jobs and reply stream.
      envelope = decoded;
      // A job sink this worker may not (or cannot) write fails the job before it runs, not after its reply.
      await this.opts.sinks.forJob(envelope.sinks, envelope.id);
      answered = await d.answered();
      const done = envelope.jobs !== undefined ? await runPack(this, d, envelope, answered, track) : await this.runOne(d, envelope, answered, track);
      this.counters.completed++;
      const obs = track.observer();
      if (done.ok.jobs > 0) obs.ok(done.ok.jobs, done.ok.rows);
      track.finished(obs);
      return { kind: 'done', rows: done.rows };
    } catch (err) {
      return this.fail(d, envelope, answered, err, track);
    }
  }

  private async runOne(d: Delivery, envelope: Envelope, answered: Answered, track: JobTrack): Promise<Done> {
    const result = await this.infer(envelope, answered, track);
    if (envelope.replyTo !== undefined && answered !== 'yes') await this.opts.replies.write(sinkJob(d, envelope), sinkResult(result));
    // A run that may have answered before may have been shadowed too: best effort, so not twice.
    if (answered === 'no') this.opts.shadow?.offer(envelope.model, envelope.id, [{ envelope, version: result.model.version }]);
    const ok = await this.writeRows(d, [[envelope, result]], track);
    return { rows: result.rows, ok };
  }

  /** Routes, validates and runs an envelope; one that may have answered before is not failed for its deadline. */
  async infer(envelope: Envelope, answered: Answered, track?: JobTrack): Promise<Inference> {
    const routed = envelope.jobs === undefined ? { ...envelope, version: await this.versionOf(envelope.model, envelope.id, envelope.version) } : envelope;
    return inferEnvelope(this.opts.models, answered === 'no' ? routed : { ...routed, deadline: undefined }, this.opts.nonFinite, track);
  }

  /** The version job `id` runs on: `explicit` when given, else the router's; undefined: the pool's newest. */
  versionOf(model: string, id: string, explicit: string | undefined): Promise<string | undefined> | string | undefined {
    return explicit !== undefined || this.opts.router === undefined ? explicit : this.opts.router.route(model, id);
  }

  /** Whether a failure of this delivery is to be retried (retriable, attempts left). */
  shouldRetry(d: Delivery, err: unknown): boolean {
    return !isHandBack(err) && isRetriable(err) && d.attempt < d.maxAttempts;
  }

  /**
   * Puts the Parquet rows of a job's parts into their sinks and waits until they are durable.
   * A job sink that refuses them (after the reply went out) gets the job a dead letter without
   * an error reply: the caller already has its answer. Resolves with the parts written.
   */
  async writeRows(d: Delivery, parts: readonly (readonly [Envelope, Inference])[], track: JobTrack): Promise<Tally> {
    const rolls = this.opts.rolls;
    const all = { jobs: parts.length, rows: parts.reduce((n, [, r]) => n + r.rows, 0) };
    if (rolls === undefined || parts.length === 0) {
      d.rowsBuffered?.();
      return all;
    }
    const buffered = await Promise.allSettled(parts.map(([env, result]) => rolls.buffer(sinkJob(d, env), sinkResult(result))));
    d.rowsBuffered?.();
    const durable = await Promise.allSettled(buffered.map((b) => (b.status === 'fulfilled' ? b.value.durable : Promise.reject(b.reason))));
    const refused: DeadLetter[] = [];
    const refusedRows: number[] = [];
    for (const [i, s] of durable.entries()) {
      if (s.status === 'fulfilled') continue;
      if (!(s.reason instanceof SinkRefusedError)) throw s.reason;
      const env = parts[i]![0];
      refused.push(deadLetterOf(s.reason, env.id, env, d, false));
      refusedRows.push(parts[i]![1].rows);
    }
    if (refused.length > 0) await this.deadLetter(d, refused, track, refusedRows);
    return { jobs: all.jobs - refused.length, rows: all.rows - refusedRows.reduce((n, r) => n + r, 0) };
  }

  /**
   * Writes dead letters and counts them (`rows[i]`: the rows of `letters[i]`); a dead letter
   * that cannot be written leaves the job unacknowledged.
   */
  async deadLetter(d: Delivery, letters: readonly DeadLetter[], track: JobTrack, rows: readonly number[] = []): Promise<void> {
    await d.deadLetter(letters);
    const obs = track.observer();
    for (const [i, l] of letters.entries()) {
      this.counters.deadLettered++;
      obs.deadLettered(l.code, 1, rows[i] ?? 0);
      this.log.warn({ jobId: printable(l.id), code: l.code, reason: l.reason }, 'job dead-lettered');
    }
  }

  private async fail(d: Delivery, envelope: Envelope | undefined, answered: Answered, err: unknown, track: JobTrack): Promise<Outcome> {
    d.rowsBuffered?.();
    if (isHandBack(err)) {
      this.counters.handedBack++;
      return { kind: 'handBack', err };
    }
    if (this.shouldRetry(d, err)) {
      this.counters.retried++;
      track.observer().retried(codeOf(err), envelope?.jobs?.length ?? 1, envelope?.rows ?? 0);
      this.log.warn({ err, jobId: printable(d.id), code: codeOf(err), attempt: d.attempt }, 'job failed; it will be retried');
      return { kind: 'retry', err, delayMs: retryDelay(this.opts.retry ?? DEFAULT_RETRY, d.attempt) };
    }
    // A pack that fails as a whole: each of its jobs gets its dead letter (and error reply).
    const parts = envelope?.jobs !== undefined ? unpackJobs(envelope).map((p) => ({ id: p.id, envelope: p })) : [{ id: envelope?.id ?? d.id, envelope }];
    try {
      const letters = parts.map((p) => deadLetterOf(err, p.id, p.envelope, d, answered !== 'yes'));
      await this.deadLetter(d, letters, track, parts.map((p) => p.envelope?.rows ?? 0));
    } catch (writeErr) {
      this.log.warn({ err: writeErr, jobId: printable(d.id) }, 'could not write the dead letter; the job is left unacknowledged');
      this.counters.handedBack++;
      return { kind: 'handBack', err: writeErr };
    }
    track.finished(track.observer());
    return { kind: 'failed', err };
  }
}
