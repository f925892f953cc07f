/**
 * The pipeline's rules for a failed job, in one place: which errors a retry can help, how
 * long to wait before one, and which failures mean "not now" (the job goes back unacknowledged).
 */
import { ClosedError, InferqError } from '@inferq/shared';

export interface RetryPolicy {
  /** Wait before the second attempt; doubled each attempt. Default 200 ms. */
  readonly baseDelayMs: number;
  /** Longest wait between attempts. Default 5 s. */
  readonly maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { baseDelayMs: 200, maxDelayMs: 5000 };

/** Exponential backoff: the wait after attempt `attempt` (from 1) failed. */
export function retryDelay(policy: RetryPolicy, attempt: number): number {
  return Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1));
}

/** Whether running the job again may succeed: our errors say so; an unexpected error may be a passing fault. */
export function isRetriable(err: unknown): boolean {
  return !(err instanceof InferqError) || err.retriable;
}

/**
 * A job the worker could not finish because it is stopping (a closed batcher, rows not
 * written by the shutdown deadline, a partition taken away): it is neither retried nor
 * dead-lettered, but left unacknowledged so that its source delivers it again.
 */
export function isHandBack(err: unknown): boolean {
  return err instanceof ClosedError;
}
