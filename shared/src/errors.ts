/**
 * Typed errors. Every error inferq raises on purpose is an {@link InferqError}:
 * it says whether a retry can help (`retriable`), carries the `cause`, and the
 * job / model / version it concerns. Classify with `instanceof`, never by name.
 */

/** Context attached to an error: which job, model and version it concerns. */
export interface ErrorContext {
  readonly jobId?: string | undefined;
  readonly model?: string | undefined;
  readonly version?: string | undefined;
}

export interface InferqErrorOptions extends ErrorContext {
  readonly cause?: unknown;
  /** Whether retrying the same work may succeed. Default: false. */
  readonly retriable?: boolean;
}

export class InferqError extends Error {
  readonly retriable: boolean;
  readonly jobId: string | undefined;
  readonly model: string | undefined;
  readonly version: string | undefined;

  constructor(message: string, options: InferqErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.retriable = options.retriable ?? false;
    this.jobId = options.jobId;
    this.model = options.model;
    this.version = options.version;
  }
}

/**
 * The input itself is wrong (shape, dtype, length, corrupt bytes, NaN where
 * rejected...). Never retriable: it goes to the dead letters with its reason.
 */
export class InvalidInputError extends InferqError {
  constructor(message: string, options: Omit<InferqErrorOptions, 'retriable'> = {}) {
    super(message, { ...options, retriable: false });
  }
}

/** A tensor envelope that cannot be decoded: truncated, corrupt or inconsistent. */
export class EnvelopeError extends InvalidInputError {}

/** The requested model or version does not exist in the repository. */
export class UnknownModelError extends InvalidInputError {}

/** A model that exists but cannot be loaded, or whose config disagrees with it. */
export class ModelLoadError extends InferqError {}

/** Configuration (CLI flags, config.yaml, options) that does not validate. */
export class ConfigError extends InferqError {}

/** A job whose deadline passed before it could run. */
export class DeadlineExceededError extends InferqError {
  constructor(message: string, options: Omit<InferqErrorOptions, 'retriable'> = {}) {
    super(message, { ...options, retriable: false });
  }
}

/** The component was closed; work submitted after (or pending at) close. */
export class ClosedError extends InferqError {
  constructor(message: string, options: Omit<InferqErrorOptions, 'retriable'> = {}) {
    super(message, { ...options, retriable: true });
  }
}

/** Running the model failed (runtime error inside the inference engine). */
export class InferenceError extends InferqError {}

/** Reading or writing data (Parquet, files, HDFS) failed. */
export class DataIOError extends InferqError {}

/** Short, printable job id for messages: the first 8 characters. */
export function shortId(jobId: string): string {
  return jobId.length > 12 ? `${jobId.slice(0, 8)}…` : jobId;
}

/** `(job 7f3a…)` suffix for messages, or '' when there is no job. */
export function jobSuffix(jobId: string | undefined): string {
  return jobId === undefined ? '' : ` (job ${shortId(jobId)})`;
}
