// @inferq/producer: the SDK applications import. Never depends on a model runtime.
export { PredictTimeoutError, RemoteJobError } from './errors.js';
export type { RemoteFailure } from './errors.js';
export { DEFAULT_CONNECT_TIMEOUT_MS } from './connection.js';
export type { SdkLogger } from './connection.js';
export { toTensors } from './features.js';
export type { FeatureBatch } from './features.js';
export { Producer } from './producer.js';
export type { EnqueueOptions, PredictOptions, ProducerOptions, TableRow } from './producer.js';
export type { LingerOptions } from './linger.js';
export { parseKafkaReplies, parseKafkaReply, parseReplies } from './replies.js';
export type { Reply, ReplyError } from './replies.js';
export { Subscription } from './subscription.js';
export type { SubscribeOptions } from './subscription.js';
export { ClosedError, ConfigError, ConnectionError, ERROR_CODES, EnvelopeError, InferqError, InvalidInputError, decodeEnvelope, encodeEnvelope, isErrorCode } from '@inferq/shared';
export type { DType, ErrorCode, Envelope, EnvelopeMeta, Tensor, TensorMap } from '@inferq/shared';
export { KafkaProducer } from './kafka.js';
export type { KafkaEnqueueOptions, KafkaPredictOptions, KafkaProducerOptions } from './kafka.js';
export type { KafkaSubscribeOptions, ReplySubscription } from './kafka-subscription.js';
