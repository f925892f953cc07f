/**
 * When a child worker that exited unasked is started again: after a backoff that doubles
 * with each exit in a row, and not at all once it has exited `maxCrashes` times in a row.
 * A child that served for `stableMs` starts a new row. Pure: the caller passes the clock.
 */

export interface RestartPolicy {
  /** The wait before the first restart. Default 1000 ms. */
  readonly initialBackoffMs: number;
  /** The longest wait. Default 30000 ms. */
  readonly maxBackoffMs: number;
  /** A child that served this long before exiting starts a new row of exits. Default 60000 ms. */
  readonly stableMs: number;
  /** Give up when a child exits this many times in a row. Default 5. */
  readonly maxCrashes: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicy = { initialBackoffMs: 1000, maxBackoffMs: 30_000, stableMs: 60_000, maxCrashes: 5 };

/** The wait before the restart that follows the `crashes`-th exit in a row (1-based). */
export function backoffMs(crashes: number, policy: RestartPolicy): number {
  return Math.min(policy.maxBackoffMs, policy.initialBackoffMs * 2 ** Math.max(0, crashes - 1));
}

export type RestartDecision = { readonly restart: true; readonly delayMs: number; readonly crashes: number } | { readonly restart: false; readonly crashes: number };

/** One device's row of exits. */
export class RestartTracker {
  private crashes = 0;
  private servingSince: number | undefined;

  constructor(private readonly policy: RestartPolicy) {}

  /** The child said it serves. */
  serving(now: number): void {
    this.servingSince = now;
  }

  /** The child exited unasked: restart it after `delayMs`, or give up. */
  exited(now: number): RestartDecision {
    if (this.servingSince !== undefined && now - this.servingSince >= this.policy.stableMs) this.crashes = 0;
    this.servingSince = undefined;
    this.crashes++;
    if (this.crashes >= this.policy.maxCrashes) return { restart: false, crashes: this.crashes };
    return { restart: true, delayMs: backoffMs(this.crashes, this.policy), crashes: this.crashes };
  }
}
