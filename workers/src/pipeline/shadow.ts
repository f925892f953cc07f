/**
 * Shadow runs: a model's `shadow` version run on a sample of batches after the primary answered,
 * its outputs written apart (`model=<m>/version=<v>/shadow=true/`) for offline comparison.
 *
 * ```
 *  primary outputs known ─► offer(batch) ─► sampled? (hash of the batch id) ─► queue full? ─► dropped
 *                                                                          └─► queue ─► one loop:
 *      models.get(name, shadow version) ─► its own batcher ─► rows to a ParquetSink per --sink folder
 *      (own rolls, never the primary's roll or ack path)       ─► metrics.shadow(run | dropped | failed)
 * ```
 *
 * Best effort: nothing here is awaited by a job, and no failure reaches one. The queued inputs
 * are views of the delivered payload, which nothing reuses, so they stay valid without a copy.
 */
import { randomBytes } from 'node:crypto';
import { printable, validateInputs } from '@inferq/shared';
import type { Envelope, TensorMap } from '@inferq/shared';
import { deadlineRace } from '../deadline.js';
import type { Logger } from '../logging.js';
import type { LoadedModel } from '../models/loaded-model.js';
import type { ModelPool } from '../models/model-pool.js';
import type { VersionRouter } from '../models/routing.js';
import type { WorkerMetrics } from '../ops/hooks.js';
import type { ParquetSink } from '../sinks/parquet-sink.js';

/** The folder level under `version=` that holds shadow rows. */
export const SHADOW_SUBFOLDER = 'shadow=true';

export interface ShadowRunnerOptions {
  readonly models: Pick<ModelPool, 'get'>;
  readonly router: Pick<VersionRouter, 'shadowFor'>;
  /** Where shadow rows go: sinks made with `withSubfolder(SHADOW_SUBFOLDER)`. None: shadow runs are only metered. */
  readonly sinks: readonly ParquetSink[];
  readonly metrics: WorkerMetrics;
  readonly logger: Logger;
  /** Batches waiting for the shadow at most; one more is dropped. Default 4. */
  readonly maxQueued?: number;
  /** How often shadow sinks are checked for a roll due by age, ms. Default 500. */
  readonly rollCheckMs?: number;
}

/** One job's rows served by the primary: its envelope (own tensors and row ids) and the version that served it. */
export interface ShadowPart {
  readonly envelope: Envelope;
  readonly version: string;
}

interface Queued {
  readonly model: string;
  readonly version: string;
  readonly parts: readonly Envelope[];
}

export const SHADOW_DEFAULTS = { maxQueued: 4, rollCheckMs: 500 } as const;

export class ShadowRunner {
  private readonly opts: ShadowRunnerOptions;
  private readonly log: Logger;
  private readonly maxQueued: number;
  private readonly queue: Queued[] = [];
  private loop: Promise<void> | undefined;
  private closed = false;
  /** Shadow rows' roll group: unique per process, so two workers never write the same file name. */
  private readonly group = `shadow-${randomBytes(4).toString('hex')}`;
  private seq = 0;
  private rolled = 0;
  private rolling: Promise<void> = Promise.resolve();
  private readonly timer: NodeJS.Timeout | undefined;
  /** Per model and version, the last failure logged (one line per new reason, not per batch). */
  private readonly lastFailure = new Map<string, string>();
  readonly stats = { run: 0, dropped: 0, failed: 0, rows: 0 };

  constructor(options: ShadowRunnerOptions) {
    this.opts = options;
    this.log = options.logger.child({ shadow: true });
    this.maxQueued = options.maxQueued ?? SHADOW_DEFAULTS.maxQueued;
    if (options.sinks.length > 0) {
      this.timer = setInterval(() => this.rollDue(false), options.rollCheckMs ?? SHADOW_DEFAULTS.rollCheckMs);
      this.timer.unref();
    }
  }

  /**
   * Offers a batch the primary served (`id`: the delivery's envelope id, the sample's key);
   * returns at once and never throws. Parts the shadow version served already are left out.
   */
  offer(model: string, id: string, parts: readonly ShadowPart[]): void {
    if (this.closed || parts.length === 0) return;
    void this.opts.router
      .shadowFor(model, id)
      .then((shadow) => {
        if (shadow === undefined) return;
        const others = parts.filter((p) => p.version !== shadow.version && p.envelope.rows > 0).map((p) => p.envelope);
        if (others.length === 0) return;
        if (this.closed || this.queue.length >= this.maxQueued) {
          this.count(model, shadow.version, 'dropped');
          return;
        }
        this.queue.push({ model, version: shadow.version, parts: others });
        this.loop ??= this.drain().finally(() => (this.loop = undefined));
      })
      .catch((err: unknown) => this.log.warn({ err, model }, 'shadow offer failed'));
  }

  /** Stops taking batches, runs what is queued until `deadline`, then rolls the shadow rows (epoch ms). */
  async close(deadline: number): Promise<void> {
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    if (this.loop !== undefined) await deadlineRace(this.loop, deadline);
    for (const q of this.queue.splice(0)) this.count(q.model, q.version, 'dropped');
    this.rollDue(true);
    await deadlineRace(this.rolling, deadline);
  }

  private async drain(): Promise<void> {
    for (let q = this.queue.shift(); q !== undefined; q = this.queue.shift()) {
      try {
        await this.runOne(q);
        this.count(q.model, q.version, 'run');
      } catch (err) {
        this.count(q.model, q.version, 'failed');
        const key = `${q.model}@${q.version}`;
        const reason = (err as Error).message;
        if (this.lastFailure.get(key) !== reason) {
          this.lastFailure.set(key, reason);
          this.log.warn({ err, model: q.model, version: q.version }, 'shadow batch failed (the primary is not affected)');
        }
      }
    }
  }

  private async runOne(q: Queued): Promise<void> {
    const model = await this.opts.models.get(q.model, q.version);
    const outputs = await Promise.all(q.parts.map((env) => this.infer(model, env)));
    const ts = Date.now();
    for (const [i, env] of q.parts.entries()) {
      const record = { seq: this.seq++, jobId: env.id, rowIds: env.rowIds, outputs: outputs[i]!, rows: env.rows, model: model.name, version: model.version, ts };
      for (const sink of this.opts.sinks) sink.add(this.group, record);
      this.stats.rows += env.rows;
    }
    this.rollDue(false);
  }

  private infer(model: LoadedModel, env: Envelope): Promise<TensorMap> {
    const rows = validateInputs(env.tensors, model.inputs, { jobId: env.id, model: model.name, version: model.version, nonFinite: 'pass' });
    return model.batcher.submit({ id: `${env.id}#shadow`, tensors: env.tensors, rows, deadline: undefined });
  }

  /** Rolls the shadow rows into every shadow sink once one is due (or now, when `all`), one roll at a time. */
  private rollDue(all: boolean): void {
    const first = this.rolled;
    const last = this.seq - 1;
    const sinks = this.opts.sinks;
    if (last < first || (!all && !sinks.some((s) => s.due(this.group)))) return;
    this.rolled = last + 1;
    this.rolling = this.rolling.then(async () => {
      for (const sink of sinks) {
        try {
          await sink.roll(this.group, first, last);
        } catch (err) {
          // Best effort: the rows are dropped, not retried, so a sink that is down cannot grow the buffer.
          sink.release({ group: this.group, first, last });
          this.log.warn({ err, sink: sink.uri, records: last - first + 1 }, 'shadow rows could not be written; they are dropped');
        }
      }
    });
  }

  private count(model: string, version: string, outcome: 'run' | 'dropped' | 'failed'): void {
    this.stats[outcome]++;
    this.opts.metrics.shadow(model, version, outcome);
    if (outcome === 'dropped') this.log.debug({ model: printable(model), version }, 'shadow batch dropped: the shadow queue is full');
  }
}
