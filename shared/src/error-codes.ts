/**
 * Stable error codes: what went wrong, as a word that crosses the wire (dead letters,
 * error replies) and that callers switch on, instead of class names. The list is closed;
 * a new code is added here, in docs/wire-format.md ("Error codes"), and nowhere else.
 */

/** Every error code, in the order of the flow (queue data → input → model → run → sinks → operations). */
export const ERROR_CODES = [
  /** The queue job's data is not an inferq job's: wrong fields, a payload key or size it does not own, a Kafka message without a value. */
  'BAD_JOB_DATA',
  /** The job's payload is gone: its Redis payload key expired or was never written. */
  'PAYLOAD_MISSING',
  /** The job's payload is larger than the worker accepts. */
  'PAYLOAD_TOO_LARGE',
  /** The tensor envelope is corrupt, truncated or inconsistent with itself or its job data. */
  'BAD_ENVELOPE',
  /** The envelope's job id differs from the id the job was queued under (job id, Kafka header). */
  'ID_MISMATCH',
  /** The job asks for something its source does not offer (a packed envelope over Kafka). */
  'UNSUPPORTED',
  /** A tensor the model declares as an input is missing from the job. */
  'MISSING_INPUT',
  /** The job sends a tensor the model does not declare as an input. */
  'UNKNOWN_INPUT',
  /** A tensor's dtype differs from the model's declared input dtype. */
  'BAD_DTYPE',
  /** A tensor's rank, width or row count differs from the model's declared input (or from the other inputs). */
  'BAD_SHAPE',
  /** A floating-point input holds NaN or ±Infinity and the worker rejects them. */
  'NON_FINITE',
  /** Other invalid input (a value, a null, a column that cannot be fed). */
  'BAD_INPUT',
  /** The model does not exist in the repository, is not served by this worker, or its name is not valid. */
  'UNKNOWN_MODEL',
  /** The model exists but the requested version does not, is not served by its policy, or is not valid. */
  'UNKNOWN_VERSION',
  /** The model exists but cannot be loaded, or its config.yaml disagrees with it. */
  'MODEL_LOAD',
  /** The job's deadline passed before it ran. */
  'DEADLINE',
  /** Running the model failed inside the inference engine. */
  'INFERENCE',
  /** A job sink the worker may not write: outside its allowed folders, invalid, over its job-sink limit, or sent to a Kafka worker. */
  'SINK_NOT_ALLOWED',
  /** A sink folder refused the rows for good (not a folder, no permission). */
  'SINK_REFUSED',
  /** A server (Redis, Kafka, HDFS) could not be reached, refused us, or did not answer in time. */
  'UNAVAILABLE',
  /** Reading or writing data (Parquet, files, HDFS) failed. */
  'IO',
  /** Another run holds what this one needs (a precompute table's lock). */
  'BUSY',
  /** predict() got no reply within its timeout; the job may still complete. */
  'REPLY_TIMEOUT',
  /** The component was closed or interrupted with the work pending. */
  'CLOSED',
  /** Configuration (flags, config.yaml, options, specs) does not validate. */
  'CONFIG',
  /** Anything unexpected, and any code this build does not know. */
  'INTERNAL',
] as const;

/** A stable error code; see {@link ERROR_CODES} for what each means. */
export type ErrorCode = (typeof ERROR_CODES)[number];

const KNOWN: ReadonlySet<string> = new Set(ERROR_CODES);

/** Whether `value` (untrusted, e.g. read from the wire) is one of the {@link ERROR_CODES}. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && KNOWN.has(value);
}

/**
 * The code of an error class (the `kind` field/header) written by workers older than the
 * `code` field: each inferq class's default code. Other names (`Error`, `TypeError`…) say
 * nothing stable and read as INTERNAL.
 */
const KIND_CODES: ReadonlyMap<string, ErrorCode> = new Map<string, ErrorCode>([
  ['InvalidInputError', 'BAD_INPUT'],
  ['EnvelopeError', 'BAD_ENVELOPE'],
  ['UnknownModelError', 'UNKNOWN_MODEL'],
  ['ModelLoadError', 'MODEL_LOAD'],
  ['DeadlineExceededError', 'DEADLINE'],
  ['InferenceError', 'INFERENCE'],
  ['SinkRefusedError', 'SINK_REFUSED'],
  ['ConnectionError', 'UNAVAILABLE'],
  ['DataIOError', 'IO'],
  ['WebHdfsError', 'IO'],
  ['ClosedError', 'CLOSED'],
  ['RollAbandonedError', 'CLOSED'],
  ['ConfigError', 'CONFIG'],
]);

/**
 * The code of a dead letter or error reply read from the wire (untrusted): its `code` when
 * this build knows it; else, for an older worker that wrote no code, the code its `kind`
 * names; else INTERNAL. A code this build does not know (a newer worker's) is INTERNAL too,
 * so the type stays closed; the wire's `retriable` still says whether a retry can help.
 */
export function readErrorCode(code: string | undefined, kind: string | undefined): ErrorCode {
  if (code !== undefined) return isErrorCode(code) ? code : 'INTERNAL';
  return (kind === undefined ? undefined : KIND_CODES.get(kind)) ?? 'INTERNAL';
}

/** The `retriable` field/header as written on the wire: "true" or "false". */
export function writeRetriable(retriable: boolean): 'true' | 'false' {
  return retriable ? 'true' : 'false';
}

/** The `retriable` field/header read from the wire (untrusted): only "true" is true, so a missing or garbled value never causes retries. */
export function readRetriable(value: string | undefined): boolean {
  return value === 'true';
}
