/**
 * Rolls the Parquet sinks of one worker: buffers each job's rows in every sink it targets,
 * writes them as rolls, and tells each job when its rows are durable.
 *
 * ```
 *  write(job, result) ─► journal.lookup(job) ── every file of an earlier run there? ─► 'already'
 *        │ (rows go only to the sinks that lack them)
 *        ▼
 *  sink.add(group, seq) per target sink ─► waiter ─┐
 *                                                  ▼  due (rows, bytes, age), draining, or every job slot waiting
 *  roll [first..last] ─► plan ─► journal.record(files of each job) ─► stage every file (hidden temporary names)
 *        │   a transient failure: retry the roll with backoff (same names) until it works or the deadline
 *        │   a permanent one in a job's own sink: those jobs are refused (SinkRefusedError), the roll re-planned without them
 *        │   a permanent one in a worker's own sink: fatal (the worker stops; nothing is acknowledged)
 *        ▼
 *  publish every staged file (rename) ─► release the buffers ─► resolve the waiters (their jobs are acknowledged)
 * ```
 *
 * File names hold this process's group and the roll's sequence range, so every roll's files
 * are its own. The journal (kept by the source: Redis keeps it per job run) records which
 * files hold a job's rows before any of them is published; a job run again after a crash
 * finds them and is not written twice. Files are never deleted: a file that exists holds
 * all its rows, so a job whose file exists in a sink skips that sink.
 */
import { ClosedError, SinkRefusedError, jobSuffix } from '@inferq/shared';
import type { TensorMap } from '@inferq/shared';
import type { StagedFile } from '../io/store.js';
import type { Logger } from '../logging.js';
import type { ParquetSink, RollPlan } from './parquet-sink.js';
import type { SinkSet } from './sink-set.js';
import { isPermanentWriteError } from './write-errors.js';

/** One job whose rows go to sinks. */
export interface SinkJob {
  /** The job's id (a packed job's own id): the job_id column. */
  readonly id: string;
  /** One run of the job at its source (Redis: the BullMQ job id and creation time); the journal files records under it. */
  readonly run: string;
  /** Whether this run may have been started before (retried, stalled, handed back): only then is the journal read. */
  readonly rerun: boolean;
  readonly rowIds: readonly string[] | undefined;
  /** The job's own sinks (`enqueue(…, { sinks })`), checked against the worker's allow-list. */
  readonly sinks: readonly string[] | undefined;
}

export interface SinkResult {
  readonly outputs: TensorMap;
  readonly rows: number;
  readonly model: string;
  readonly version: string;
}

/** The files that hold a job's rows, by sink key. */
export type RollRecord = Readonly<Record<string, readonly string[]>>;

/** Where a source keeps roll records (Redis: a hash per job run). Everything read back is untrusted. */
export interface RollJournal {
  record(entries: readonly { readonly job: SinkJob; readonly files: RollRecord }[]): Promise<void>;
  lookup(job: SinkJob): Promise<unknown>;
  forget(jobs: readonly SinkJob[]): Promise<void>;
}

export interface RollCoordinatorOptions {
  readonly sinks: SinkSet;
  readonly journal: RollJournal;
  /** This process's name in roll file names (unique per process). */
  readonly group: string;
  readonly logger: Logger;
  /** Roll at once when this many jobs wait for a roll (no more can come in). */
  readonly maxWaiting: number;
  /** A worker's own sink refused for good: the worker cannot work. */
  readonly onFatal?: (err: Error) => void;
  /** How often due rolls are looked for. Default 100 ms. */
  readonly tickMs?: number;
}

export type WriteOutcome = 'written' | 'already';

/** The coordinator gave up on a job's rows (shutdown deadline, or a fatal sink): the job must not be acknowledged. */
export class RollAbandonedError extends ClosedError {}

interface Waiter {
  readonly seq: number;
  readonly job: SinkJob;
  readonly resolve: (outcome: WriteOutcome) => void;
  readonly reject: (err: Error) => void;
}

export class RollCoordinator {
  private readonly opts: RollCoordinatorOptions;
  private readonly log: Logger;
  private seq = 0;
  private waiters: Waiter[] = [];
  private rolling: Promise<void> | undefined;
  private draining = false;
  private abandoned: Error | undefined;
  /** write() calls still looking up their sinks and journal (their rows are not buffered yet). */
  private arriving = 0;
  private wake: (() => void) | undefined;
  private readonly timer: NodeJS.Timeout;
  private readonly counters = { rolls: 0, alreadySunk: 0, refused: 0 };

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
    return this.waiters.length;
  }

  /**
   * Puts a job's rows into every sink it targets; resolves once they are durable ('already'
   * when an earlier run of the job wrote them). Rejects with InvalidInputError or
   * SinkRefusedError for a job sink that is not allowed or cannot be written, and with
   * RollAbandonedError when the worker stops before the rows are written.
   */
  async write(job: SinkJob, result: SinkResult): Promise<WriteOutcome> {
    this.assertRolling(job);
    let targets: ParquetSink[];
    let done: Set<string>;
    this.arriving++;
    try {
      targets = await this.opts.sinks.forJob(job.sinks, job.id);
      done = job.rerun && targets.length > 0 ? await this.writtenBefore(job) : new Set<string>();
    } finally {
      this.arriving--;
    }
    this.assertRolling(job);
    const todo = targets.filter((sink) => !done.has(this.opts.sinks.keyOf(sink)));
    if (todo.length === 0) {
      if (targets.length > 0) this.counters.alreadySunk++;
      return targets.length > 0 ? 'already' : 'written';
    }
    const seq = this.seq++;
    const written = new Promise<WriteOutcome>((resolve, reject) => this.waiters.push({ seq, job, resolve, reject }));
    const record = { seq, jobId: job.id, rowIds: job.rowIds, outputs: result.outputs, rows: result.rows, model: result.model, version: result.version, ts: Date.now() };
    for (const sink of todo) sink.add(this.opts.group, record);
    this.maybeRoll();
    return written;
  }

  /**
   * Rolls everything buffered now and waits until it is written, retrying until `deadline`
   * (epoch ms). Returns whether every job's rows were written; those that were not are
   * rejected with RollAbandonedError (never acknowledged: their source delivers them again).
   */
  async drain(deadline: number): Promise<boolean> {
    this.draining = true;
    this.maybeRoll();
    const drained = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.abandon(new ClosedError('the shutdown deadline passed before the rows were written'));
        resolve(false);
      }, Math.max(0, deadline - Date.now()));
      const check = (): void => {
        if (this.abandoned !== undefined || (this.waiters.length === 0 && this.arriving === 0)) {
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
    return drained;
  }

  /** Stops rolling: every waiting job is rejected with RollAbandonedError, a roll in its retry loop gives up. */
  abandon(reason: Error): void {
    this.abandoned ??= reason;
    clearInterval(this.timer);
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(new RollAbandonedError(`rows not written: ${reason.message}${jobSuffix(w.job.id)}`, { jobId: w.job.id, cause: reason }));
    this.wake?.();
  }

  private assertRolling(job: SinkJob): void {
    const why = this.abandoned;
    if (why !== undefined) throw new RollAbandonedError(`sink rolls stopped: ${why.message}${jobSuffix(job.id)}`, { jobId: job.id, cause: why });
  }

  /** The sinks whose files of an earlier run of this job all exist (a crash after the roll, before the acknowledgement). */
  private async writtenBefore(job: SinkJob): Promise<Set<string>> {
    const done = new Set<string>();
    const raw = await this.opts.journal.lookup(job);
    if (raw === undefined || raw === null) return done;
    if (typeof raw !== 'object' || Array.isArray(raw)) {
      this.log.warn({ jobId: job.id, run: job.run }, 'ignoring a roll record that is not an object');
      return done;
    }
    for (const [key, files] of Object.entries(raw as Record<string, unknown>)) {
      const checked = await this.opts.sinks.recordedFiles(key, files, job.id);
      if (checked === undefined) {
        this.log.warn({ jobId: job.id, run: job.run, sink: key }, 'ignoring a roll record that names files outside the sinks this worker may write');
        continue;
      }
      const present = await Promise.all(checked.files.map((f) => checked.sink.location.store.exists(f)));
      if (present.every(Boolean)) done.add(this.opts.sinks.keyOf(checked.sink));
    }
    return done;
  }

  private maybeRoll(): void {
    if (this.rolling !== undefined || this.waiters.length === 0 || this.abandoned !== undefined) return;
    const sinks = this.opts.sinks.all();
    const full = this.waiters.length >= this.opts.maxWaiting;
    if (!this.draining && !full && !sinks.some((sink) => sink.due(this.opts.group))) return;
    const first = Math.min(...this.waiters.map((w) => w.seq));
    const last = this.seq - 1;
    this.rolling = this.roll(first, last)
      .catch((err: unknown) => this.log.error({ err, first, last }, 'sink roll stopped'))
      .finally(() => {
        this.rolling = undefined;
        this.maybeRoll();
      });
  }

  /** Writes the buffered rows of [first..last] in every sink until it works, the deadline passes, or a sink refuses for good. */
  private async roll(first: number, last: number): Promise<void> {
    const refused = new Map<number, SinkRefusedError>();
    for (let attempt = 1; this.abandoned === undefined; attempt++) {
      const plans = this.opts.sinks
        .all()
        .filter((sink) => sink.has(this.opts.group, first, last))
        .map((sink) => ({ sink, plan: sink.planRoll(this.opts.group, first, last, new Set(refused.keys())) }))
        .filter((p) => p.plan.files.length > 0);
      try {
        const failed = await this.writeOnce(plans, first, last);
        if (failed.length === 0) break;
        const own = failed.find((f) => this.opts.sinks.isDefault(f.sink));
        if (own !== undefined) {
          this.log.error({ err: own.err, sink: own.sink.location.uri }, 'a worker sink refused the rows for good; stopping');
          this.opts.onFatal?.(own.err);
          this.abandon(own.err);
          return;
        }
        for (const f of failed) this.refuse(f, refused);
        await this.opts.journal.forget(this.waiters.filter((w) => refused.has(w.seq)).map((w) => w.job)).catch((err: unknown) => this.log.warn({ err }, 'could not drop the roll records of refused jobs (they expire)'));
      } catch (err) {
        this.log.warn({ err, attempt, first, last }, 'sink roll failed; retrying (its jobs wait)');
        await this.sleep(Math.min(5000, 200 * 2 ** Math.min(attempt, 5)));
      }
    }
    if (this.abandoned !== undefined) return;
    for (const sink of this.opts.sinks.all()) sink.release({ group: this.opts.group, first, last });
    this.counters.rolls++;
    const done = this.waiters.filter((w) => w.seq <= last);
    this.waiters = this.waiters.filter((w) => w.seq > last);
    for (const w of done) {
      const err = refused.get(w.seq);
      if (err === undefined) w.resolve('written');
      else w.reject(err);
    }
  }

  /**
   * One attempt: records every job's files, stages every file, publishes them all. Returns the
   * files a sink refused for good (nothing published then); throws on a transient failure.
   */
  private async writeOnce(plans: readonly { sink: ParquetSink; plan: RollPlan }[], first: number, last: number): Promise<{ sink: ParquetSink; file: RollPlan['files'][number]; err: Error }[]> {
    await this.opts.journal.record(this.entries(plans, first, last));
    const staged: StagedFile[] = [];
    const failed: { sink: ParquetSink; file: RollPlan['files'][number]; err: Error }[] = [];
    try {
      for (const { sink, plan } of plans) {
        for (const file of plan.files) {
          try {
            staged.push(await sink.stageFile(file));
          } catch (err) {
            if (!isPermanentWriteError(err)) throw err;
            failed.push({ sink, file, err: err as Error });
          }
        }
      }
      if (failed.length > 0) {
        await Promise.all(staged.map((f) => f.discard()));
        return failed;
      }
      for (const f of staged) await f.publish();
      return [];
    } catch (err) {
      await Promise.all(staged.map((f) => f.discard()));
      throw err;
    }
  }

  /** Each waiting job of the roll with the files that will hold its rows, by sink key. */
  private entries(plans: readonly { sink: ParquetSink; plan: RollPlan }[], first: number, last: number): { job: SinkJob; files: RollRecord }[] {
    const bySeq = new Map<number, Record<string, string[]>>();
    for (const { sink, plan } of plans) {
      const key = this.opts.sinks.keyOf(sink);
      for (const file of plan.files) {
        for (const r of file.records) {
          let files = bySeq.get(r.seq);
          if (files === undefined) bySeq.set(r.seq, (files = {}));
          (files[key] ??= []).push(file.path);
        }
      }
    }
    return this.waiters.filter((w) => w.seq >= first && w.seq <= last && bySeq.has(w.seq)).map((w) => ({ job: w.job, files: bySeq.get(w.seq)! }));
  }

  private refuse(f: { sink: ParquetSink; file: RollPlan['files'][number]; err: Error }, refused: Map<number, SinkRefusedError>): void {
    const folder = f.sink.location.uri;
    for (const r of f.file.records) {
      if (refused.has(r.seq)) continue;
      this.counters.refused++;
      refused.set(r.seq, new SinkRefusedError(`job sink "${folder}" refused the rows: ${f.err.message}${jobSuffix(r.jobId)}`, { jobId: r.jobId, sink: folder, cause: f.err }));
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
