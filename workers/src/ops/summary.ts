/** The periodic one-line throughput summary of a worker (`--log-summary-ms`), at info level. */
import type { Logger } from '../logging.js';
import type { Totals } from './metrics.js';

/** The fields of one summary line: rates and counts since the previous line. */
export interface SummaryLine {
  readonly seconds: number;
  readonly jobsPerSec: number;
  readonly rowsPerSec: number;
  readonly deadLetters: number;
  readonly retried: number;
  readonly batches: number;
  /** Mean rows per batch over the interval (0 without batches). */
  readonly meanBatchRows: number;
  /** Rows waiting for a batch now. */
  readonly pendingRows: number;
}

/** The line for the interval from `prev` to `cur`, `ms` long. */
export function summaryLine(prev: Totals, cur: Totals, ms: number): SummaryLine {
  const seconds = Math.max(ms, 1) / 1000;
  const batches = cur.batches - prev.batches;
  const round = (n: number): number => Math.round(n * 10) / 10;
  return {
    seconds: round(seconds),
    jobsPerSec: round((cur.jobs - prev.jobs) / seconds),
    rowsPerSec: round((cur.rows - prev.rows) / seconds),
    deadLetters: cur.deadLetters - prev.deadLetters,
    retried: cur.retried - prev.retried,
    batches,
    meanBatchRows: batches === 0 ? 0 : round((cur.batchRows - prev.batchRows) / batches),
    pendingRows: cur.pendingRows,
  };
}

export interface SummaryOptions {
  /** Between lines; 0 = none. */
  readonly intervalMs: number;
  readonly totals: () => Totals;
  readonly logger: Logger;
  /** Default Date.now (tests pass their own clock). */
  readonly now?: () => number;
}

/** Logs a summary line every `intervalMs` until stopped; the timer never holds the process. */
export function startSummary(options: SummaryOptions): { stop(): void } {
  if (options.intervalMs <= 0) return { stop: () => undefined };
  const now = options.now ?? Date.now;
  let prev = options.totals();
  let at = now();
  const timer = setInterval(() => {
    const cur = options.totals();
    const t = now();
    options.logger.info(summaryLine(prev, cur, t - at), 'throughput');
    prev = cur;
    at = t;
  }, options.intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
