export { crc32 } from './checksum.js';
export { DTYPES, DTYPE_BYTES, allocate, isDType, viewOf } from './dtype.js';
export type { DType, TypedArray, TypedArrayByDType } from './dtype.js';
export { ENVELOPE_VERSION, MAX_ENVELOPE_BYTES, MAX_PACKED_JOBS, checkTensors, decodeEnvelope, encodeEnvelope, sliceRows, unpackJobs } from './envelope.js';
export type { Envelope, EnvelopeMeta, PackedJob } from './envelope.js';
export {
  ClosedError,
  ConfigError,
  ConnectionError,
  DataIOError,
  DeadlineExceededError,
  EnvelopeError,
  InferenceError,
  InferqError,
  InvalidInputError,
  ModelLoadError,
  SinkRefusedError,
  UnknownModelError,
  jobSuffix,
  printable,
  shortId,
} from './errors.js';
export type { ConnectionErrorOptions, ErrorContext, InferqErrorOptions } from './errors.js';
export { ERROR_CODES, isErrorCode, readErrorCode, readRetriable, writeRetriable } from './error-codes.js';
export type { ErrorCode } from './error-codes.js';
export { DEFAULT_BATCHING, checkVersionLevel, compareVersions, parseModelConfig, resolveBatching } from './model-config.js';
export type { BatchingConfig, ModelConfig, ShadowConfig, TensorSpec, TrafficShare, VersionPolicy } from './model-config.js';
export { describe, elementCount } from './tensor.js';
export type { Tensor, TensorMap } from './tensor.js';
export { describeSpec, firstNonFinite, validateInputs } from './validate.js';
export type { NonFinitePolicy, ValidateContext } from './validate.js';
export {
  DEFAULT_PREFIX,
  DEFAULT_QUEUE,
  ENVELOPE_CONTENT_TYPE,
  KAFKA_HEADERS,
  REPLY_FIELDS,
  checkJobData,
  kafkaDeadLetterTopic,
  kafkaReplyTopic,
  parseTablePointer,
  redisKeys,
  tableBucket,
  tableBucketOfBytes,
  tableKeys,
} from './protocol.js';
export type { JobData, RedisKeys, TableKeys } from './protocol.js';
export { ConsumerRestarter } from './consumer-restart.js';
export type { ConsumerRestartOptions } from './consumer-restart.js';
