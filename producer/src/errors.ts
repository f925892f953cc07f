import { InferqError } from '@inferq/shared';
import type { ErrorCode, ErrorContext } from '@inferq/shared';

/** predict() got no reply in time. Retriable: the job may still complete later. */
export class PredictTimeoutError extends InferqError {
  static override readonly defaultCode: ErrorCode = 'REPLY_TIMEOUT';

  constructor(message: string, context: ErrorContext = {}) {
    super(message, { ...context, retriable: true });
  }
}

/** How a worker said a job failed: the fields of an error reply. */
export interface RemoteFailure {
  /** What went wrong (see ERROR_CODES); INTERNAL for a code this SDK does not know. */
  readonly code: ErrorCode;
  /** Whether the worker said a retry may help. */
  readonly retriable: boolean;
  /** The worker-side error class (e.g. InvalidInputError): informational, for logs; classify by `code`. */
  readonly kind: string;
}

/**
 * The worker reported that the job failed. Switch on `code` (stable across versions);
 * `retriable` is the worker's word on whether sending the job again may help.
 */
export class RemoteJobError extends InferqError {
  /** The worker-side error class name: informational only, kept for compatibility; use `code`. */
  readonly kind: string;

  constructor(message: string, failure: RemoteFailure, context: ErrorContext = {}) {
    super(message, { ...context, code: failure.code, retriable: failure.retriable });
    this.kind = failure.kind;
  }
}
