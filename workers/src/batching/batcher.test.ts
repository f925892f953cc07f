import { afterEach, describe, expect, it, vi } from 'vitest';
import { ClosedError, DeadlineExceededError, InferenceError } from '@inferq/shared';
import type { Tensor, TensorMap } from '@inferq/shared';
import { DynamicBatcher } from './batcher.js';
import type { BatchRunner, DynamicBatcherOptions } from './batcher.js';

const W = 2;
const inputs = [{ name: 'x', dtype: 'float32' as const, shape: [-1, W] }];

/** Job `j` row `r` carries (j, r); the fake model outputs [j*4096 + r, -r] (exact in float32) per row, so outputs identify their row. */
function job(j: number, rows: number, deadline?: number) {
  const data = new Float32Array(rows * W);
  for (let r = 0; r < rows; r++) {
    data[r * W] = j;
    data[r * W + 1] = r;
  }
  return { id: `job-${j}`, rows, deadline, tensors: { x: { dtype: 'float32' as const, shape: [rows, W], data } } };
}

function expectRows(out: TensorMap, j: number, rows: number): void {
  const y = out['y']!;
  expect(y.shape).toEqual([rows, 2]);
  for (let r = 0; r < rows; r++) {
    if (y.data[r * 2] !== j * 4096 + r || y.data[r * 2 + 1] !== -r) {
      throw new Error(`job ${j} row ${r}: got ${y.data[r * 2]}, ${y.data[r * 2 + 1]}`);
    }
  }
}

/** A fake model with a gate: each run waits until released (or runs at once when `auto`). */
class FakeRunner implements BatchRunner {
  readonly batchSizes: number[] = [];
  active = 0;
  maxActive = 0;
  auto = true;
  failNext: Error | undefined;
  private gates: (() => void)[] = [];

  async run(batch: TensorMap): Promise<TensorMap> {
    const x = batch['x']!;
    const rows = x.shape[0]!;
    this.batchSizes.push(rows);
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      if (!this.auto) await new Promise<void>((resolve) => this.gates.push(resolve));
      else await Promise.resolve();
      if (this.failNext !== undefined) {
        const e = this.failNext;
        this.failNext = undefined;
        throw e;
      }
      const y = new Float32Array(rows * 2);
      for (let r = 0; r < rows; r++) {
        y[r * 2] = (x.data[r * W] as number) * 4096 + (x.data[r * W + 1] as number);
        y[r * 2 + 1] = -(x.data[r * W + 1] as number);
      }
      const out: Tensor = { dtype: 'float32', shape: [rows, 2], data: y };
      return { y: out };
    } finally {
      this.active--;
    }
  }

  /** Releases the oldest waiting run. */
  release(): void {
    this.gates.shift()?.();
  }

  get waiting(): number {
    return this.gates.length;
  }
}

function options(over: Partial<DynamicBatcherOptions> = {}): DynamicBatcherOptions {
  return {
    inputs,
    maxBatchSize: 1000,
    maxDelayMs: 5,
    preferredBatchSizes: [],
    maxPendingRows: 1_000_000,
    maxInFlightBatches: 2,
    model: 'm',
    version: '1',
    ...over,
  };
}

/** Polls (microtask + timer turns) until `cond` holds, failing after a deadline. */
async function until(cond: () => boolean, what: string, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

afterEach(() => {
  vi.useRealTimers();
});

describe('DynamicBatcher', () => {
  it('dispatches as soon as rows reach maxBatchSize, merging jobs and cutting the last one', async () => {
    const runner = new FakeRunner();
    const b = new DynamicBatcher(runner, options({ maxDelayMs: 60_000 }));
    const p = [b.submit(job(1, 400)), b.submit(job(2, 400)), b.submit(job(3, 400))];
    await Promise.all([p[0], p[1]]).then((outs) => {
      expectRows(outs[0]!, 1, 400);
      expectRows(outs[1]!, 2, 400);
    });
    expect(runner.batchSizes).toEqual([1000]);
    expect(b.pendingRows).toBe(200); // job 3's tail waits for more rows or the delay
    await b.close();
    expectRows(await p[2]!, 3, 400);
    expect(runner.batchSizes).toEqual([1000, 200]);
  });

  it('dispatches a partial batch when the oldest row has waited maxDelayMs, not before', async () => {
    vi.useFakeTimers();
    const runner = new FakeRunner();
    const b = new DynamicBatcher(runner, options({ maxDelayMs: 5 }));
    const p = b.submit(job(1, 10));
    await vi.advanceTimersByTimeAsync(4);
    expect(runner.batchSizes).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(runner.batchSizes).toEqual([10]);
    expectRows(await p, 1, 10);
  });

  it('splits a job larger than maxBatchSize and reassembles its rows in order', async () => {
    const runner = new FakeRunner();
    const b = new DynamicBatcher(runner, options({ maxBatchSize: 1000, maxDelayMs: 0 }));
    const out = await b.submit(job(7, 2500));
    expectRows(out, 7, 2500);
    expect(runner.batchSizes).toEqual([1000, 1000, 500]);
  });

  it('pads up to the nearest preferred size and strips the padding from outputs', async () => {
    const runner = new FakeRunner();
    const b = new DynamicBatcher(runner, options({ preferredBatchSizes: [8, 32], maxBatchSize: 64, maxDelayMs: 0 }));
    expectRows(await b.submit(job(1, 5)), 1, 5);
    expectRows(await b.submit(job(2, 20)), 2, 20);
    expectRows(await b.submit(job(3, 40)), 3, 40); // above the largest preferred size: not padded
    expect(runner.batchSizes).toEqual([8, 32, 40]);
    expect(b.stats.paddedRows).toBe(3 + 12);
  });

  it('gathers merged batches into the runner\'s own memory, writing zeros over whatever the padding rows held', async () => {
    const seen: Float32Array[] = [];
    const lentOut: Float32Array[] = [];
    class OwnMemory extends FakeRunner {
      allocate(_dtype: 'float32', length: number): Float32Array {
        const a = new Float32Array(length).fill(777); // reused memory holds old rows
        lentOut.push(a);
        return a;
      }
      override run(batch: TensorMap): Promise<TensorMap> {
        seen.push(Float32Array.from(batch['x']!.data as Float32Array));
        expect(lentOut).toContain(batch['x']!.data); // the very array allocate() gave, not a copy
        return super.run(batch);
      }
    }
    const runner = new OwnMemory();
    const b = new DynamicBatcher(runner, options({ preferredBatchSizes: [8], maxBatchSize: 8, maxDelayMs: 1 }));
    const [a, c] = await Promise.all([b.submit(job(1, 2)), b.submit(job(2, 3))]);
    expectRows(a, 1, 2);
    expectRows(c, 2, 3);
    expect(seen).toHaveLength(1);
    expect(Array.from(seen[0]!)).toEqual([1, 0, 1, 1, 2, 0, 2, 1, 2, 2, 0, 0, 0, 0, 0, 0]);
  });

  it('keeps at most maxInFlightBatches batches running', async () => {
    const runner = new FakeRunner();
    runner.auto = false;
    const b = new DynamicBatcher(runner, options({ maxBatchSize: 100, maxInFlightBatches: 2, maxDelayMs: 0 }));
    let resolved = 0;
    const jobs = Array.from({ length: 6 }, (_, j) => b.submit(job(j, 100)).then((o) => (resolved++, o)));
    await until(() => runner.waiting === 2, 'two runs');
    expect(runner.active).toBe(2);
    expect(b.pendingRows).toBe(400);
    while (resolved < 6) {
      runner.release();
      await new Promise((r) => setImmediate(r));
    }
    expect(runner.maxActive).toBe(2);
    (await Promise.all(jobs)).forEach((out, j) => expectRows(out, j, 100));
  });

  it('holds callers back when the pending-rows budget is full (backpressure)', async () => {
    const runner = new FakeRunner();
    runner.auto = false;
    const b = new DynamicBatcher(runner, options({ maxBatchSize: 100, maxPendingRows: 300, maxInFlightBatches: 1, maxDelayMs: 0 }));
    let resolved = 0;
    const jobs = Array.from({ length: 10 }, (_, j) => b.submit(job(j, 100)).then((o) => (resolved++, o)));
    await until(() => runner.waiting === 1, 'first run');
    expect(b.inFlightRows).toBe(300); // 3 jobs admitted, 7 held back
    let maxAdmitted = 0;
    while (resolved < 10) {
      maxAdmitted = Math.max(maxAdmitted, b.inFlightRows);
      runner.release();
      await new Promise((r) => setImmediate(r));
    }
    expect(maxAdmitted).toBeLessThanOrEqual(300);
    (await Promise.all(jobs)).forEach((out, j) => expectRows(out, j, 100));
  });

  it('admits a job larger than the whole budget alone', async () => {
    const runner = new FakeRunner();
    const b = new DynamicBatcher(runner, options({ maxBatchSize: 100, maxPendingRows: 100, maxDelayMs: 0 }));
    expectRows(await b.submit(job(1, 550)), 1, 550);
  });

  it('fails an expired job while the model is busy, without running its rows', async () => {
    const runner = new FakeRunner();
    runner.auto = false;
    const b = new DynamicBatcher(runner, options({ maxBatchSize: 100, maxInFlightBatches: 1, maxDelayMs: 0 }));
    const busy = b.submit(job(1, 100));
    await until(() => runner.waiting === 1, 'busy model');
    const started = Date.now();
    const late = b.submit(job(2, 10, Date.now() + 30));
    await expect(late).rejects.toBeInstanceOf(DeadlineExceededError);
    expect(Date.now() - started).toBeLessThan(1000); // did not wait for the busy batch
    expect(runner.batchSizes).toEqual([100]); // job 2 never ran
    runner.release();
    expectRows(await busy, 1, 100);
    expect(b.stats.expiredJobs).toBe(1);
  });

  it('fails the jobs of a failed batch with InferenceError and keeps serving', async () => {
    const runner = new FakeRunner();
    const b = new DynamicBatcher(runner, options({ maxBatchSize: 10, maxDelayMs: 0 }));
    runner.failNext = new Error('CUDA out of memory');
    const bad = b.submit(job(1, 10));
    await expect(bad).rejects.toBeInstanceOf(InferenceError);
    await expect(bad).rejects.toThrow(/CUDA out of memory/);
    expectRows(await b.submit(job(2, 10)), 2, 10);
  });

  it('rejects an output with fewer rows than the batch', async () => {
    const b = new DynamicBatcher({ run: async () => ({ y: { dtype: 'float32', shape: [1, 2], data: new Float32Array(2) } }) }, options({ maxDelayMs: 0 }));
    await expect(b.submit(job(1, 3))).rejects.toThrow(/returned output "y" with 1 rows for a batch of 3/);
  });

  it('close() runs what is pending without waiting for the delay, then refuses new jobs', async () => {
    const runner = new FakeRunner();
    const b = new DynamicBatcher(runner, options({ maxDelayMs: 60_000 }));
    const p = b.submit(job(1, 10));
    await b.close();
    expectRows(await p, 1, 10);
    await expect(b.submit(job(2, 1))).rejects.toBeInstanceOf(ClosedError);
  });

  it('close() rejects unfinished jobs after its deadline', async () => {
    const runner = new FakeRunner();
    runner.auto = false;
    const b = new DynamicBatcher(runner, options({ maxDelayMs: 0 }));
    const p = b.submit(job(1, 10));
    p.catch(() => undefined);
    await until(() => runner.waiting === 1, 'run');
    await b.close(20);
    await expect(p).rejects.toBeInstanceOf(ClosedError);
    runner.release();
  });

  it('scatters every row of many random jobs back to its job, in order', async () => {
    const runner = new FakeRunner();
    const b = new DynamicBatcher(runner, options({ maxBatchSize: 256, maxDelayMs: 1, maxInFlightBatches: 3, preferredBatchSizes: [64, 128, 256] }));
    let seed = 42;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const sizes = Array.from({ length: 300 }, () => 1 + rand(700));
    const outs = await Promise.all(sizes.map((n, j) => b.submit(job(j, n))));
    outs.forEach((out, j) => expectRows(out, j, sizes[j]!));
    const total = sizes.reduce((a, c) => a + c, 0);
    expect(b.stats.rows).toBe(total);
    expect(Math.max(...runner.batchSizes)).toBeLessThanOrEqual(256);
  });
});
