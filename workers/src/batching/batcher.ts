/**
 * Dynamic batcher: merges rows from many jobs into model-sized batches.
 *
 * ```
 *  submit(job) ──► admission ──► pending slices (FIFO, counted in rows) ──► dispatch ──► runner.run(batch)
 *                  (waits while      │  a job larger than maxBatchSize        │ when rows ≥ maxBatchSize,        │
 *                   pendingRows      │  is cut into several slices            │ or the oldest row waited         │
 *                   would pass       │                                        │ maxDelayMs, and fewer than       │
 *                   maxPendingRows)  │  expired jobs are failed here, even    │ maxInFlightBatches are running   │
 *                                    │  while the model is busy               │ (pad to a preferred size)        ▼
 *  job promise ◄── all rows back ◄── scatter outputs to each job, in row order ◄──────────────────── outputs
 * ```
 *
 * Counted in rows, not requests. One batcher serves one model version (one runner).
 */
import { ClosedError, DeadlineExceededError, InferenceError, InferqError, allocate, elementCount, jobSuffix, sliceRows } from '@inferq/shared';
import type { BatchingConfig, DType, Tensor, TensorMap, TensorSpec, TypedArray } from '@inferq/shared';
import type { BatchObserver } from '../ops/hooks.js';

/** What the batcher needs from a model: run one batch (batch dimension first). */
export interface BatchRunner {
  run(inputs: TensorMap): Promise<TensorMap>;
  /** Memory for a gathered batch input that `run()` takes over without copying (not zeroed). */
  allocate?(dtype: DType, length: number): TypedArray;
}

export interface BatchJob {
  readonly id: string;
  /** Inputs, validated by the caller against `inputs`; all share the first dimension. */
  readonly tensors: TensorMap;
  readonly rows: number;
  /** Absolute deadline in epoch ms (Date.now() clock). */
  readonly deadline?: number | undefined;
  /** Called once, when the job's first rows go into a batch (queue-wait metrics). */
  readonly onStart?: (() => void) | undefined;
}

export interface DynamicBatcherOptions extends BatchingConfig {
  /** The model's inputs (the order and widths of the batch tensors). */
  readonly inputs: readonly TensorSpec[];
  /** Model name and version, for error messages. */
  readonly model?: string;
  readonly version?: string;
  /** Told of every batch (metrics). Default: nobody. */
  readonly observer?: BatchObserver;
}

export interface BatcherStats {
  readonly batches: number;
  readonly rows: number;
  readonly paddedRows: number;
  readonly expiredJobs: number;
  readonly failedJobs: number;
}

interface JobState {
  readonly job: BatchJob;
  readonly resolve: (outputs: TensorMap) => void;
  readonly reject: (err: Error) => void;
  /** Rows whose outputs have arrived. */
  doneRows: number;
  /** Rows not yet handed to a batch. */
  pendingRows: number;
  outputs: Record<string, Tensor> | undefined;
  /** Counted in admittedRows (left the waiting line). */
  admitted: boolean;
  settled: boolean;
}

interface Slice {
  readonly state: JobState;
  readonly start: number;
  readonly end: number;
  readonly enqueuedAt: number;
}

interface Waiter {
  readonly state: JobState;
}

/** Width (elements per row) of a tensor of `rows` rows. */
function rowWidth(t: Tensor): number {
  const rows = t.shape[0] ?? 0;
  return rows === 0 ? elementCount(t.shape.slice(1)) : t.data.length / rows;
}

export class DynamicBatcher {
  readonly options: DynamicBatcherOptions;
  private readonly runner: BatchRunner;
  private readonly pending: Slice[] = [];
  private pendingHead = 0;
  private pendingRowCount = 0;
  /** Rows admitted and not yet finished (pending or in flight). Bounded by maxPendingRows. */
  private admittedRows = 0;
  private readonly waiting: Waiter[] = [];
  private readonly live = new Set<JobState>();
  private inFlight = 0;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private deadlineTimerAt = Infinity;
  private closing = false;
  private idleWaiters: (() => void)[] = [];
  private counters = { batches: 0, rows: 0, paddedRows: 0, expiredJobs: 0, failedJobs: 0 };

  constructor(runner: BatchRunner, options: DynamicBatcherOptions) {
    this.runner = runner;
    this.options = options;
  }

  get stats(): BatcherStats {
    return { ...this.counters };
  }

  /** Rows waiting to be batched. */
  get pendingRows(): number {
    return this.pendingRowCount;
  }

  /** Rows admitted and not finished. */
  get inFlightRows(): number {
    return this.admittedRows;
  }

  /** Batches the model is running now. */
  get batchesInFlight(): number {
    return this.inFlight;
  }

  /**
   * Submits a job. Resolves with its outputs (rows in order) once every row ran;
   * rejects with DeadlineExceededError, InferenceError or ClosedError. Waits
   * (without blocking the caller's event loop) while the pending-rows budget is full.
   */
  submit(job: BatchJob): Promise<TensorMap> {
    return new Promise<TensorMap>((resolve, reject) => {
      const state: JobState = {
        job,
        resolve,
        reject,
        doneRows: 0,
        pendingRows: 0,
        outputs: undefined,
        admitted: false,
        settled: false,
      };
      if (this.closing) {
        reject(new ClosedError(`batcher for ${this.label()} is closed; job not run${jobSuffix(job.id)}`, { jobId: job.id }));
        return;
      }
      if (job.rows === 0) {
        state.settled = true;
        resolve({});
        return;
      }
      this.live.add(state);
      if (job.deadline !== undefined) this.armDeadlineTimer(job.deadline);
      if (this.waiting.length > 0 || !this.hasRoomFor(job.rows)) {
        this.waiting.push({ state });
        return;
      }
      this.admit(state);
    });
  }

  /** Resolves when nothing is pending or in flight. */
  idle(): Promise<void> {
    if (this.live.size === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Stops admitting, runs what is pending without waiting for maxDelayMs, and
   * waits for in-flight batches. Jobs still unfinished after `timeoutMs` (and
   * jobs never admitted) are rejected with ClosedError.
   */
  async close(timeoutMs = 30_000): Promise<void> {
    this.closing = true;
    for (const w of this.waiting.splice(0)) {
      this.fail(w.state, new ClosedError(`batcher for ${this.label()} closed before the job was admitted${jobSuffix(w.state.job.id)}`, { jobId: w.state.job.id }));
    }
    this.pump(true);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const outcome = await Promise.race([this.idle().then(() => 'idle' as const), timedOut]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      for (const state of [...this.live]) {
        this.fail(state, new ClosedError(`batcher for ${this.label()} closed after ${timeoutMs} ms with the job unfinished${jobSuffix(state.job.id)}`, { jobId: state.job.id }));
      }
    }
    this.clearTimer();
    clearTimeout(this.deadlineTimer);
  }

  // ── admission ───────────────────────────────────────────────────────────

  private hasRoomFor(rows: number): boolean {
    // A job larger than the whole budget is admitted alone.
    return this.admittedRows === 0 || this.admittedRows + rows <= this.options.maxPendingRows;
  }

  private admit(state: JobState): void {
    // Batching delays run on the monotonic sub-millisecond clock (deadlines stay on Date.now()).
    const now = performance.now();
    const rows = state.job.rows;
    state.admitted = true;
    this.admittedRows += rows;
    state.pendingRows = rows;
    const max = this.options.maxBatchSize;
    for (let start = 0; start < rows; start += max) {
      this.pending.push({ state, start, end: Math.min(rows, start + max), enqueuedAt: now });
    }
    this.pendingRowCount += rows;
    this.pump(false);
  }

  private admitWaiting(): void {
    while (this.waiting.length > 0) {
      const next = this.waiting[0]!;
      if (next.state.settled) {
        this.waiting.shift();
        continue;
      }
      if (!this.hasRoomFor(next.state.job.rows)) return;
      this.waiting.shift();
      this.admit(next.state);
    }
  }

  // ── dispatch ────────────────────────────────────────────────────────────

  /** Dispatches as many batches as the rules allow; arms the delay timer otherwise. */
  private pump(flush: boolean): void {
    const { maxBatchSize, maxDelayMs, maxInFlightBatches } = this.options;
    while (this.inFlight < maxInFlightBatches) {
      this.dropSettledHead();
      if (this.pendingRowCount === 0) break;
      const oldest = this.pending[this.pendingHead]!;
      const due = flush || this.closing || this.pendingRowCount >= maxBatchSize || performance.now() - oldest.enqueuedAt >= maxDelayMs;
      if (!due) {
        this.armTimer(oldest.enqueuedAt + maxDelayMs);
        return;
      }
      this.dispatch(this.take(maxBatchSize));
    }
    if (this.pendingRowCount === 0) this.clearTimer();
  }

  private dropSettledHead(): void {
    while (this.pendingHead < this.pending.length && this.pending[this.pendingHead]!.state.settled) this.pendingHead++;
    if (this.pendingHead > 1024 && this.pendingHead * 2 > this.pending.length) {
      this.pending.splice(0, this.pendingHead);
      this.pendingHead = 0;
    }
  }

  /** Takes up to `max` rows of pending slices, FIFO, cutting the last slice if needed. */
  private take(max: number): Slice[] {
    const out: Slice[] = [];
    let rows = 0;
    while (rows < max && this.pendingHead < this.pending.length) {
      const s = this.pending[this.pendingHead]!;
      if (s.state.settled) {
        this.pendingHead++;
        continue;
      }
      const n = s.end - s.start;
      if (rows + n <= max) {
        out.push(s);
        rows += n;
        this.pendingHead++;
      } else {
        const cut = max - rows;
        out.push({ state: s.state, start: s.start, end: s.start + cut, enqueuedAt: s.enqueuedAt });
        this.pending[this.pendingHead] = { state: s.state, start: s.start + cut, end: s.end, enqueuedAt: s.enqueuedAt };
        rows += cut;
      }
    }
    for (const s of out) s.state.pendingRows -= s.end - s.start;
    this.pendingRowCount -= rows;
    if (this.pendingHead === this.pending.length) {
      this.pending.length = 0;
      this.pendingHead = 0;
    }
    return out;
  }

  private dispatch(slices: Slice[]): void {
    const rows = slices.reduce((n, s) => n + (s.end - s.start), 0);
    const padded = this.paddedSize(rows);
    const inputs: Record<string, Tensor> = {};
    for (const spec of this.options.inputs) inputs[spec.name] = this.gather(spec.name, spec.dtype, slices, rows, padded);
    this.inFlight++;
    this.counters.batches++;
    this.counters.rows += rows;
    this.counters.paddedRows += padded - rows;
    for (const s of slices) if (s.start === 0) s.state.job.onStart?.();
    const observer = this.options.observer;
    observer?.started(rows, padded - rows);
    const started = observer === undefined ? 0 : performance.now();
    let result: Promise<TensorMap>;
    try {
      result = this.runner.run(inputs);
    } catch (err) {
      result = Promise.reject(err);
    }
    result.then(
      (outputs) => this.scatter(slices, rows, outputs),
      (err: unknown) => this.failBatch(slices, err),
    ).finally(() => {
      observer?.ran((performance.now() - started) / 1000);
      this.inFlight--;
      this.pump(false);
      this.checkIdle();
    });
  }

  private paddedSize(rows: number): number {
    for (const p of this.options.preferredBatchSizes) if (p >= rows) return p;
    return rows;
  }

  /** Builds one batch input: a view when one slice covers it, else one copy (zero rows of padding). */
  private gather(name: string, dtype: DType, slices: Slice[], rows: number, padded: number): Tensor {
    const first = slices[0]!.state.job.tensors[name]!;
    const width = rowWidth(first);
    const shape = [padded, ...first.shape.slice(1)];
    if (slices.length === 1 && padded === rows) {
      const s = slices[0]!;
      const data = s.start === 0 && s.end === s.state.job.rows ? first.data : first.data.subarray(s.start * width, s.end * width);
      return { dtype, shape, data };
    }
    const data = this.runner.allocate?.(dtype, padded * width) ?? allocate(dtype, padded * width);
    let at = 0;
    for (const s of slices) {
      const src = s.state.job.tensors[name]!.data;
      setRange(data, src, s.start * width, s.end * width, at);
      at += (s.end - s.start) * width;
    }
    // Padding rows are zeros (a runner's memory is not zeroed).
    if (at < data.length) {
      if (data instanceof BigInt64Array) data.fill(0n, at);
      else data.fill(0, at);
    }
    return { dtype, shape, data };
  }

  private scatter(slices: Slice[], rows: number, outputs: TensorMap): void {
    const names = Object.keys(outputs);
    for (const name of names) {
      const got = outputs[name]!.shape[0];
      if (got === undefined || got < rows) {
        this.failBatch(slices, new InferenceError(`model ${this.label()} returned output "${name}" with ${got ?? 0} rows for a batch of ${rows}`));
        return;
      }
    }
    let offset = 0;
    for (const s of slices) {
      const n = s.end - s.start;
      const state = s.state;
      if (!state.settled) {
        const whole = s.start === 0 && n === state.job.rows;
        if (whole) {
          // The job ran in one batch: its outputs are views of the batch outputs.
          state.outputs = sliceRows(outputs, offset, offset + n);
        } else {
          state.outputs ??= this.allocateOutputs(state.job.rows, outputs);
          for (const name of names) {
            const t = outputs[name]!;
            const w = rowWidth(t);
            setRange(state.outputs[name]!.data, t.data, offset * w, (offset + n) * w, s.start * w);
          }
        }
        state.doneRows += n;
        if (state.doneRows === state.job.rows) this.succeed(state);
      }
      offset += n;
    }
  }

  private allocateOutputs(rows: number, batchOutputs: TensorMap): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const [name, t] of Object.entries(batchOutputs)) {
      const shape = [rows, ...t.shape.slice(1)];
      out[name] = { dtype: t.dtype, shape, data: allocate(t.dtype, rows * rowWidth(t)) };
    }
    return out;
  }

  private failBatch(slices: Slice[], err: unknown): void {
    const cause = err instanceof InferqError ? err : new InferenceError(`model ${this.label()} failed on a batch: ${(err as Error)?.message ?? String(err)}`, { cause: err, model: this.options.model, version: this.options.version });
    for (const s of slices) this.fail(s.state, cause);
  }

  // ── completion ──────────────────────────────────────────────────────────

  private succeed(state: JobState): void {
    if (state.settled) return;
    state.settled = true;
    this.release(state);
    state.resolve(state.outputs ?? {});
  }

  private fail(state: JobState, err: Error): void {
    if (state.settled) return;
    state.settled = true;
    this.counters.failedJobs++;
    this.pendingRowCount -= state.pendingRows;
    state.pendingRows = 0;
    this.release(state);
    state.reject(err);
  }

  private release(state: JobState): void {
    if (this.live.delete(state) && state.admitted) this.admittedRows -= state.job.rows;
    this.admitWaiting();
    this.checkIdle();
  }

  private checkIdle(): void {
    if (this.live.size === 0 && this.inFlight === 0 && this.idleWaiters.length > 0) {
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  // ── timers ──────────────────────────────────────────────────────────────

  private armTimer(at: number): void {
    if (this.timer !== undefined && this.timerAt <= at) return;
    this.clearTimer();
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      this.pump(false);
    }, Math.max(0, at - performance.now()));
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  /** One timer for the earliest deadline among live jobs: expiry does not wait for the model. */
  private armDeadlineTimer(at: number): void {
    if (this.deadlineTimer !== undefined && this.deadlineTimerAt <= at) return;
    clearTimeout(this.deadlineTimer);
    this.deadlineTimerAt = at;
    this.deadlineTimer = setTimeout(() => this.expire(), Math.max(0, at - Date.now()));
  }

  private expire(): void {
    this.deadlineTimer = undefined;
    this.deadlineTimerAt = Infinity;
    const now = Date.now();
    let next = Infinity;
    for (const state of [...this.live]) {
      const d = state.job.deadline;
      if (d === undefined) continue;
      if (d <= now) {
        this.counters.expiredJobs++;
        this.fail(
          state,
          new DeadlineExceededError(`job deadline passed ${now - d} ms ago before its rows ran on ${this.label()}${jobSuffix(state.job.id)}`, {
            jobId: state.job.id,
            model: this.options.model,
            version: this.options.version,
          }),
        );
      } else if (d < next) {
        next = d;
      }
    }
    if (next !== Infinity) this.armDeadlineTimer(next);
    this.pump(false);
  }

  private label(): string {
    return this.options.model === undefined ? 'model' : `${this.options.model}:${this.options.version ?? '?'}`;
  }
}

/** dst.set(src[from..to]) at `at`, for any pair of same-dtype typed arrays. */
function setRange(dst: TypedArray, src: TypedArray, from: number, to: number, at: number): void {
  (dst as Float32Array).set((src as Float32Array).subarray(from, to), at);
}
