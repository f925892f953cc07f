// @inferq/producer: the SDK applications import. Filled in by the Redis and Kafka transports.
export { decodeEnvelope, encodeEnvelope } from '@inferq/shared';
export type { Envelope, EnvelopeMeta, Tensor, TensorMap } from '@inferq/shared';
