import { InferqError } from '@inferq/shared';
import type { ErrorContext } from '@inferq/shared';

/** predict() got no reply in time. Retriable: the job may still complete later. */
export class PredictTimeoutError extends InferqError {
  constructor(message: string, context: ErrorContext = {}) {
    super(message, { ...context, retriable: true });
  }
}

/** The worker reported that the job failed; `kind` is the worker-side error class (e.g. InvalidInputError). */
export class RemoteJobError extends InferqError {
  readonly kind: string;

  constructor(message: string, kind: string, context: ErrorContext = {}) {
    super(message, { ...context, retriable: false });
    this.kind = kind;
  }
}
