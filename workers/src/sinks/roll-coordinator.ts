/**
 * Rolls the Parquet sinks of one worker, whatever its source: buffers each job's rows in
 * every sink it targets, writes them as rolls, and tells each job when its rows are durable.
 *
 * ```
 *  buffer(job, result) ─► journal.written(job)? (only for a rerun) ── all there ─► 'already'
 *        │ rows go only to the sinks that lack them
 *        ▼
 *  sink.add(group, seq) per target sink ─► waiter ─┐   group/seq: the source's (Kafka partition/offset)
 *                                                  │   or this process's own counter (Redis)
 *                                                  ▼  due (rows, bytes, age), flushing, or every job slot waiting
 *  roll group [first..last] ─► plan ─► journal.record(files of each job) ─► stage every file (hidden names)
 *        │   a transient failure: retry the roll with backoff until it works or the deadline passes
 *        │   a permanent one in a job's own sink: those jobs are refused (SinkRefusedError), the roll re-planned
 *        │   a permanent one in a worker's own sink: fatal (the worker stops; nothing is acknowledged)
 *        ▼
 *  publish every staged file (rename) ─► release the buffers ─► resolve the waiters (their jobs are acknowledged)
 * ```
 *
 * File names hold the group and the roll's sequence range, so every roll's files are its
 * own. A source that fixes the order (Kafka) bounds `last` by `journal.rollableUpTo()`, so
 * a roll covers a contiguous range of its offsets. Files are never deleted here: a file that
 * exists holds all its rows, so a job whose file exists in a sink skips that sink.
 */
import { ClosedError, SinkRefusedError, jobSuffix } from '@inferq/shared';
import type { StagedFile } from '../io/store.js';
import type { Logger } from '../logging.js';
import { noMetrics } from '../ops/hooks.js';
import type { SinkObserver, WorkerMetrics } from '../ops/hooks.js';
import type { ParquetSink, RollPlan } from './parquet-sink.js';
import type { RollJournal, RollRecord, Sink, SinkJob, SinkResult, WriteOutcome } from './sink.js';
import type { SinkSet } from './sink-set.js';
import { isPermanentWriteError } from './write-errors.js';

export type { RollJournal, RollRecord, SinkJob, SinkResult, WriteOutcome } from './sink.js';

export interface RollCoordinatorOptions {
  readonly sinks: SinkSet;
  readonly journal: RollJournal;
  /** The group of jobs without a position of their own (unique per process: part of file names). */
  readonly group: string;
  readonly logger: Logger;
  /** Roll at once when this many jobs wait for a roll (no more can come in). */
  readonly maxWaiting: number;
  /** A worker's own sink refused for good: the worker cannot work. */
  readonly onFatal?: (err: Error) => void;
  /** How often due rolls are looked for. Default 100 ms. */
  readonly tickMs?: number;
  /** Roll durations, rows and failures per sink. Default: none. */
  readonly metrics?: WorkerMetrics;
}

/** The metrics label of a sink: a worker's own by its URI (without credentials), every job sink as "job" (they are many). */
export function sinkLabel(sinks: SinkSet, sink: ParquetSink): string {
  return sinks.isDefault(sink) ? sink.location.uri.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@]*@/i, '$1') : 'job';
}

/** The coordinator gave up on a job's rows (shutdown deadline, a fatal sink, a revoked partition): the job must not be acknowledged. */
export class RollAbandonedError extends ClosedError {}

/** A job's rows, buffered: `durable` settles when they are written (or refused, or abandoned). */
export interface Buffered {
  readonly durable: Promise<WriteOutcome>;
}

interface Waiter {
  readonly seq: number;
  readonly job: SinkJob;
  readonly resolve: (outcome: WriteOutcome) => void;
  readonly reject: (err: Error) => void;
}

type Failed = { sink: ParquetSink; file: RollPlan['files'][number]; err: Error };

export class RollCoordinator implements Sink {
  private readonly opts: RollCoordinatorOptions;
  private readonly log: Logger;
  private seq = 0;
  private readonly waiting = new Map<string, Waiter[]>();
  private rolling: Promise<void> | undefined;
  private flushing = false;
  private abandoned: Error | undefined;
  /** buffer() calls still looking up their sinks and journal (their rows are not buffered yet). */
  private arriving = 0;
  private wake: (() => void) | undefined;
  private readonly timer: NodeJS.Timeout;
  private readonly counters = { rolls: 0, alreadySunk: 0, refused: 0 };
  /** By sink label (job sinks come and go; their label stays). */
  private readonly observers = new Map<string, SinkObserver>();

  constructor(options: RollCoordinatorOptions) {
    this.opts = options;
    this.log = options.logger.child({ component: 'sink-rolls' });
    this.timer = setInterval(() => this.maybeRoll(), options.tickMs ?? 100);
    this.timer.unref();
  }

  get stats(): { readonly rolls: number; readonly alreadySunk: number; readonly refused: number } {
    return { ...this.counters };
  }

  /** Jobs whose rows wait for a roll. */
  get pending(): number {
    let n = 0;
    for (const w of this.waiting.values()) n += w.length;
    return n;
  }

  async write(job: SinkJob, result: SinkResult): Promise<WriteOutcome> {
    return (await this.buffer(job, result)).durable;
  }

  /**
   * Puts a job's rows into every sink it targets; resolves once they are buffered, with
   * `durable`, which settles once they are written ('already' when an earlier run wrote them).
   * Rejects with InvalidInputError or SinkRefusedError for a job sink that is not allowed or
   * cannot be written; `durable` rejects with SinkRefusedError when a sink refuses the rows
   * and with RollAbandonedError when the worker stops before they are written.
   */
  async buffer(job: SinkJob, result: SinkResult): Promise<Buffered> {
    this.assertRolling(job);
    let targets: ParquetSink[];
    let done: Set<string>;
    this.arriving++;
    try {
      targets = await this.opts.sinks.forJob(job.sinks, job.id);
      const keyed = targets.map((sink) => ({ key: this.opts.sinks.keyOf(sink), sink }));
      done = job.rerun && targets.length > 0 ? await this.opts.journal.written(job, keyed, this.opts.sinks) : new Set<string>();
    } finally {
      this.arriving--;
    }
    this.assertRolling(job);
    const todo = targets.filter((sink) => !done.has(this.opts.sinks.keyOf(sink)));
    if (todo.length === 0) {
      if (targets.length > 0) this.counters.alreadySunk++;
      return { durable: Promise.resolve(targets.length > 0 ? 'already' : 'written') };
    }
    const group = job.position?.group ?? this.opts.group;
    const seq = job.position?.seq ?? this.seq++;
    let waiters = this.waiting.get(group);
    if (waiters === undefined) this.waiting.set(group, (waiters = []));
    const list = waiters;
    const durable = new Promise<WriteOutcome>((resolve, reject) => list.push({ seq, job, resolve, reject }));
    const record = { seq, jobId: job.id, rowIds: job.rowIds, outputs: result.outputs, rows: result.rows, model: result.model, version: result.version, ts: Date.now() };
    for (const sink of todo) sink.add(group, record);
    this.maybeRoll();
    return { durable };
  }

  /**
   * Rolls everything buffered now and waits until it is written, retrying until `deadline`
   * (epoch ms). Returns whether every job's rows were written; those that were not are
   * rejected with RollAbandonedError (never acknowledged: their source delivers them again).
   */
  async flush(deadline: number): Promise<boolean> {
    this.flushing = true;
    this.maybeRoll();
    const flushed = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.abandon(new ClosedError('the shutdown deadline passed before the rows were written'));
        resolve(false);
      }, Math.max(0, deadline - Date.now()));
      const check = (): void => {
        if (this.abandoned !== undefined || (this.pending === 0 && this.arriving === 0)) {
          clearTimeout(timer);
          resolve(this.abandoned === undefined);
        } else {
          this.maybeRoll();
          setTimeout(check, 10);
        }
      };
      check();
    });
    clearInterval(this.timer);
    return flushed;
  }

  /** Stops rolling: every waiting job is rejected with RollAbandonedError, a roll in its retry loop gives up. */
  abandon(reason: Error): void {
    this.abandoned ??= reason;
    clearInterval(this.timer);
    for (const group of [...this.waiting.keys()]) this.dropWaiters(group, reason);
    this.wake?.();
  }

  /** Forgets a group (a Kafka partition moved to another worker): its buffered rows are dropped, its jobs rejected. */
  dropGroup(group: string, reason: Error): void {
    for (const sink of this.opts.sinks.all()) sink.drop(group);
    this.dropWaiters(group, reason);
  }

  private dropWaiters(group: string, reason: Error): void {
    const waiters = this.waiting.get(group) ?? [];
    this.waiting.delete(group);
    for (const w of waiters) w.reject(new RollAbandonedError(`rows not written: ${reason.message}${jobSuffix(w.job.id)}`, { jobId: w.job.id, cause: reason }));
  }

  private assertRolling(job: SinkJob): void {
    const why = this.abandoned;
    if (why !== undefined) throw new RollAbandonedError(`sink rolls stopped: ${why.message}${jobSuffix(job.id)}`, { jobId: job.id, cause: why });
  }

  /** Starts the first due roll (one at a time). */
  private maybeRoll(): void {
    if (this.rolling !== undefined || this.abandoned !== undefined) return;
    for (const [group, waiters] of this.waiting) {
      if (waiters.length === 0) continue;
      const full = this.pending >= this.opts.maxWaiting;
      if (!this.flushing && !full && !this.opts.sinks.all().some((sink) => sink.due(group))) continue;
      const first = Math.min(...waiters.map((w) => w.seq));
      const buffered = Math.max(...waiters.map((w) => w.seq));
      const last = Math.min(buffered, this.opts.journal.rollableUpTo?.(group) ?? buffered);
      if (last < first) continue;
      this.rolling = this.roll(group, first, last)
        .catch((err: unknown) => this.log.error({ err, group, first, last }, 'sink roll stopped'))
        .finally(() => {
          this.rolling = undefined;
          this.maybeRoll();
        });
      return;
    }
  }

  /** Writes the buffered rows of a group's [first..last] in every sink until it works, the deadline passes, or a sink refuses for good. */
  private async roll(group: string, first: number, last: number): Promise<void> {
    const began = performance.now();
    const refused = new Map<number, Failed>();
    let written: readonly { sink: ParquetSink; plan: RollPlan }[] = [];
    for (let attempt = 1; this.abandoned === undefined; attempt++) {
      if (!this.waiting.has(group)) return; // dropped meanwhile
      const plans = this.opts.sinks
        .all()
        .filter((sink) => sink.has(group, first, last))
        .map((sink) => ({ sink, plan: sink.planRoll(group, first, last, new Set(refused.keys())) }))
        .filter((p) => p.plan.files.length > 0);
      try {
        const failed = await this.writeOnce(group, plans, first, last);
        for (const f of failed) this.observer(f.sink).failed();
        if (failed.length === 0) {
          written = plans;
          break;
        }
        const own = failed.find((f) => this.opts.sinks.isDefault(f.sink));
        if (own !== undefined) {
          this.log.error({ err: own.err, sink: own.sink.location.uri }, 'a worker sink refused the rows for good; stopping');
          this.opts.onFatal?.(own.err);
          this.abandon(own.err);
          return;
        }
        for (const f of failed) this.refuse(f, refused);
        const jobs = (this.waiting.get(group) ?? []).filter((w) => refused.has(w.seq)).map((w) => w.job);
        await this.opts.journal.forget(jobs).catch((err: unknown) => this.log.warn({ err }, 'could not drop the roll records of refused jobs (they expire)'));
      } catch (err) {
        this.log.warn({ err, group, attempt, first, last }, 'sink roll failed; retrying (its jobs wait)');
        await this.sleep(Math.min(5000, 200 * 2 ** Math.min(attempt, 5)));
      }
    }
    if (this.abandoned !== undefined || !this.waiting.has(group)) return;
    for (const sink of this.opts.sinks.all()) sink.release({ group, first, last });
    this.counters.rolls++;
    const seconds = (performance.now() - began) / 1000;
    for (const { sink, plan } of written) this.observer(sink).rolled(plan.files.reduce((n, f) => n + f.records.reduce((m, r) => m + r.rows, 0), 0), seconds);
    const waiters = this.waiting.get(group)!;
    const done = waiters.filter((w) => w.seq >= first && w.seq <= last);
    this.waiting.set(group, waiters.filter((w) => w.seq < first || w.seq > last));
    for (const w of done) {
      const f = refused.get(w.seq);
      if (f === undefined) w.resolve('written');
      else w.reject(new SinkRefusedError(`job sink "${f.sink.location.uri}" refused the rows: ${f.err.message}${jobSuffix(w.job.id)}`, { jobId: w.job.id, sink: f.sink.location.uri, cause: f.err }));
    }
  }

  /**
   * One attempt: records every job's files, stages every file, publishes them all. Returns the
   * files a sink refused for good (nothing published then); throws on a transient failure.
   */
  private async writeOnce(group: string, plans: readonly { sink: ParquetSink; plan: RollPlan }[], first: number, last: number): Promise<Failed[]> {
    await this.opts.journal.record(this.entries(group, plans, first, last));
    const staged: { file: StagedFile; sink: ParquetSink }[] = [];
    const failed: Failed[] = [];
    let at: ParquetSink | undefined;
    try {
      for (const { sink, plan } of plans) {
        at = sink;
        for (const file of plan.files) {
          try {
            staged.push({ file: await sink.stageFile(file), sink });
          } catch (err) {
            if (!isPermanentWriteError(err)) throw err;
            failed.push({ sink, file, err: err as Error });
          }
        }
      }
      if (failed.length > 0) {
        await Promise.all(staged.map((f) => f.file.discard()));
        return failed;
      }
      for (const f of staged) {
        at = f.sink;
        await f.file.publish();
      }
      return [];
    } catch (err) {
      if (at !== undefined) this.observer(at).failed();
      await Promise.all(staged.map((f) => f.file.discard()));
      throw err;
    }
  }

  private observer(sink: ParquetSink): SinkObserver {
    const label = sinkLabel(this.opts.sinks, sink);
    let o = this.observers.get(label);
    if (o === undefined) this.observers.set(label, (o = (this.opts.metrics ?? noMetrics).sink(label)));
    return o;
  }

  /** Each waiting job of the roll with the files that will hold its rows, by sink key. */
  private entries(group: string, plans: readonly { sink: ParquetSink; plan: RollPlan }[], first: number, last: number): { job: SinkJob; files: RollRecord }[] {
    const byJob = new Map<string, Record<string, string[]>>();
    const id = (seq: number, jobId: string): string => `${seq}\u0000${jobId}`;
    for (const { sink, plan } of plans) {
      const key = this.opts.sinks.keyOf(sink);
      for (const file of plan.files) {
        for (const r of file.records) {
          let files = byJob.get(id(r.seq, r.jobId));
          if (files === undefined) byJob.set(id(r.seq, r.jobId), (files = {}));
          const list = (files[key] ??= []);
          if (!list.includes(file.path)) list.push(file.path);
        }
      }
    }
    return (this.waiting.get(group) ?? [])
      .filter((w) => w.seq >= first && w.seq <= last && byJob.has(id(w.seq, w.job.id)))
      .map((w) => ({ job: w.job, files: byJob.get(id(w.seq, w.job.id))! }));
  }

  private refuse(f: Failed, refused: Map<number, Failed>): void {
    for (const r of f.file.records) {
      if (refused.has(r.seq)) continue;
      this.counters.refused++;
      refused.set(r.seq, f);
    }
  }

  /** Waits `ms`, or less when the coordinator is abandoned meanwhile. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = undefined;
        resolve();
      };
    });
  }
}
