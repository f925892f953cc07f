/**
 * Typed errors. Every error inferq raises on purpose is an {@link InferqError}:
 * it says what went wrong as a stable `code` (the one that crosses the wire), whether
 * a retry can help (`retriable`), carries the `cause`, and the job / model / version
 * it concerns. Classify with `instanceof` or `code`, never by name.
 */
import type { ErrorCode } from './error-codes.js';

/** Context attached to an error: which job, model and version it concerns. */
export interface ErrorContext {
  readonly jobId?: string | undefined;
  readonly model?: string | undefined;
  readonly version?: string | undefined;
}

export interface InferqErrorOptions extends ErrorContext {
  readonly cause?: unknown;
  /** A more precise code than the class's default ({@link InferqError.defaultCode}). */
  readonly code?: ErrorCode;
  /** Whether retrying the same work may succeed. Default: false. */
  readonly retriable?: boolean;
}

export class InferqError extends Error {
  /** The code of an error of this class made without `options.code`; each subclass sets its own. */
  static readonly defaultCode: ErrorCode = 'INTERNAL';

  /** What went wrong, stable across versions (see ERROR_CODES); dead letters and error replies carry it. */
  readonly code: ErrorCode;
  readonly retriable: boolean;
  readonly jobId: string | undefined;
  readonly model: string | undefined;
  readonly version: string | undefined;

  constructor(message: string, options: InferqErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = options.code ?? new.target.defaultCode;
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
  static override readonly defaultCode: ErrorCode = 'BAD_INPUT';

  constructor(message: string, options: Omit<InferqErrorOptions, 'retriable'> = {}) {
    super(message, { ...options, retriable: false });
  }
}

/** A tensor envelope that cannot be decoded: truncated, corrupt or inconsistent. */
export class EnvelopeError extends InvalidInputError {
  static override readonly defaultCode: ErrorCode = 'BAD_ENVELOPE';
}

/** The requested model or version does not exist in the repository. */
export class UnknownModelError extends InvalidInputError {
  static override readonly defaultCode: ErrorCode = 'UNKNOWN_MODEL';
}

/** A model that exists but cannot be loaded, or whose config disagrees with it. */
export class ModelLoadError extends InferqError {
  static override readonly defaultCode: ErrorCode = 'MODEL_LOAD';
}

/** Configuration (CLI flags, config.yaml, options) that does not validate. */
export class ConfigError extends InferqError {
  static override readonly defaultCode: ErrorCode = 'CONFIG';
}

/** A job whose deadline passed before it could run. */
export class DeadlineExceededError extends InferqError {
  static override readonly defaultCode: ErrorCode = 'DEADLINE';

  constructor(message: string, options: Omit<InferqErrorOptions, 'retriable'> = {}) {
    super(message, { ...options, retriable: false });
  }
}

/** The component was closed; work submitted after (or pending at) close. */
export class ClosedError extends InferqError {
  static override readonly defaultCode: ErrorCode = 'CLOSED';

  constructor(message: string, options: Omit<InferqErrorOptions, 'retriable'> = {}) {
    super(message, { ...options, retriable: true });
  }
}

/** Running the model failed (runtime error inside the inference engine). */
export class InferenceError extends InferqError {
  static override readonly defaultCode: ErrorCode = 'INFERENCE';
}

/** Reading or writing data (Parquet, files, HDFS) failed. */
export class DataIOError extends InferqError {
  static override readonly defaultCode: ErrorCode = 'IO';
}

/**
 * A sink folder refused a job's rows for good (not a folder, no permission, an invalid
 * name): retrying cannot help. Only the jobs whose own sink it is fail; `sink` names it.
 */
export class SinkRefusedError extends InferqError {
  static override readonly defaultCode: ErrorCode = 'SINK_REFUSED';

  readonly sink: string;

  constructor(message: string, options: Omit<InferqErrorOptions, 'retriable'> & { sink: string }) {
    super(message, { ...options, retriable: false });
    this.sink = options.sink;
  }
}

export interface ConnectionErrorOptions extends Omit<InferqErrorOptions, 'retriable' | 'code'> {
  /** The server, as "host:port" (or a socket path, or the brokers). */
  readonly address: string;
  /** The cause's own code: ECONNREFUSED, ETIMEDOUT, WRONGPASS, SASL_AUTHENTICATION_FAILED… */
  readonly causeCode?: string | undefined;
  /** @deprecated The old name of `causeCode` (the error's `code` is now always UNAVAILABLE). */
  readonly code?: string | undefined;
}

/**
 * A server (Redis, Kafka, HDFS) could not be reached or refused us: `address` names it
 * ("127.0.0.1:6379"), `causeCode` the cause (ECONNREFUSED, ETIMEDOUT, WRONGPASS, SASL…);
 * its `code` is UNAVAILABLE. Retriable: the same call may succeed once the server is back.
 */
export class ConnectionError extends InferqError {
  static override readonly defaultCode: ErrorCode = 'UNAVAILABLE';

  readonly address: string;
  readonly causeCode: string | undefined;

  constructor(message: string, options: ConnectionErrorOptions) {
    const { code: legacyCauseCode, causeCode, ...rest } = options;
    super(message, { ...rest, retriable: true });
    this.address = options.address;
    this.causeCode = causeCode ?? legacyCauseCode;
  }
}

/**
 * Text from a queue made safe for logs and messages: control and bidi-override characters
 * (U+0000–U+001F, U+007F–U+009F, U+200E/F, U+202A–U+202E, U+2066–U+2069) become \uXXXX escapes,
 * and very long values are cut, so a job cannot forge log lines or reorder what an operator reads.
 */
export function printable(value: string, max = 200): string {
  const cut = value.length > max ? `${value.slice(0, max)}…` : value;
  let out = '';
  for (const ch of cut) {
    const c = ch.charCodeAt(0);
    const unsafe = c < 0x20 || (c >= 0x7f && c <= 0x9f) || c === 0x200e || c === 0x200f || (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
    out += unsafe ? `\\u${c.toString(16).padStart(4, '0')}` : ch;
  }
  return out;
}

/** Short, printable job id for messages: the first 8 characters. */
export function shortId(jobId: string): string {
  return printable(jobId.length > 12 ? `${jobId.slice(0, 8)}…` : jobId);
}

/** `(job 7f3a…)` suffix for messages, or '' when there is no job. */
export function jobSuffix(jobId: string | undefined): string {
  return jobId === undefined ? '' : ` (job ${shortId(jobId)})`;
}
