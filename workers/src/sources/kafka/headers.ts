/** Reading Kafka message headers and ids (values are untrusted bytes). */
import type { IHeaders, KafkaMessage } from 'kafkajs';
import { KAFKA_HEADERS } from '@inferq/shared';

export function headerString(headers: IHeaders | undefined, name: string): string | undefined {
  const v = headers?.[name];
  if (v === undefined) return undefined;
  const first = Array.isArray(v) ? v[0] : v;
  return first === undefined ? undefined : first.toString();
}

export function stringHeaders(headers: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of Object.keys(headers ?? {})) {
    const v = headerString(headers, name);
    if (v !== undefined) out[name] = v;
  }
  return out;
}

/** A message's job id: the id header, else its key, else its offset (for messages of no job). */
export function messageId(message: KafkaMessage): string {
  return headerString(message.headers, KAFKA_HEADERS.id) ?? message.key?.toString() ?? `offset ${message.offset}`;
}
