/** What a Kafka worker writes back: reply messages (a Sink) and dead letters with their error replies. */
import { hostname } from 'node:os';
import type { KafkaMessage } from 'kafkajs';
import { ENVELOPE_CONTENT_TYPE, KAFKA_HEADERS, encodeEnvelope } from '@inferq/shared';
import type { Sink, SinkJob, SinkResult, WriteOutcome } from '../../sinks/sink.js';
import type { DeadLetter } from '../source.js';
import { stringHeaders } from './headers.js';
import type { KafkaSender, Outgoing } from './sender.js';

/** The worker that answered (host:pid), on replies and dead letters. */
const WORKER_ID = `${hostname()}:${process.pid}`;

export class KafkaReplies implements Sink {
  constructor(
    private readonly sender: KafkaSender,
    private readonly deadLetterTopic: string,
  ) {}

  /** One reply message (key: the job id) — for a pack, one for all its jobs (the result envelope lists them). */
  async write(job: SinkJob, result: SinkResult): Promise<WriteOutcome> {
    if (job.replyTo === undefined) return 'written';
    const bytes = encodeEnvelope({ id: job.id, model: result.model, version: result.version, rowIds: job.rowIds, jobs: job.jobs }, result.outputs);
    const headers: Record<string, string> = {
      [KAFKA_HEADERS.id]: job.id,
      [KAFKA_HEADERS.status]: 'ok',
      [KAFKA_HEADERS.model]: result.model,
      [KAFKA_HEADERS.version]: result.version,
      [KAFKA_HEADERS.contentType]: ENVELOPE_CONTENT_TYPE,
      [KAFKA_HEADERS.worker]: WORKER_ID,
    };
    await this.sender.sendForever([{ topic: job.replyTo, message: { key: job.id, value: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), headers } }], job.id);
    return 'written';
  }

  /** Replies are sent when written; nothing is buffered. */
  async flush(): Promise<boolean> {
    return true;
  }

  /** Dead letters (the original key, value and headers, with the reason and where the message came from) and error replies. */
  async deadLetter(source: { topic: string; partition: number }, message: KafkaMessage, letters: readonly DeadLetter[]): Promise<void> {
    const out: Outgoing[] = [];
    for (const l of letters) {
      out.push({
        topic: this.deadLetterTopic,
        message: {
          key: message.key,
          value: message.value,
          headers: {
            ...stringHeaders(message.headers),
            [KAFKA_HEADERS.id]: l.id,
            [KAFKA_HEADERS.code]: l.code,
            [KAFKA_HEADERS.error]: l.reason,
            [KAFKA_HEADERS.retriable]: String(l.retriable),
            [KAFKA_HEADERS.kind]: l.kind,
            [KAFKA_HEADERS.model]: l.model,
            [KAFKA_HEADERS.sourceTopic]: source.topic,
            [KAFKA_HEADERS.sourcePartition]: String(source.partition),
            [KAFKA_HEADERS.sourceOffset]: message.offset,
            [KAFKA_HEADERS.attempts]: String(l.attempts),
            [KAFKA_HEADERS.ts]: String(Date.now()),
            [KAFKA_HEADERS.worker]: WORKER_ID,
          },
        },
      });
      if (l.reply && l.replyTo !== undefined && l.replyTo !== '') {
        out.push({
          topic: l.replyTo,
          message: {
            key: l.id,
            value: null,
            headers: {
              [KAFKA_HEADERS.id]: l.id,
              [KAFKA_HEADERS.status]: 'error',
              [KAFKA_HEADERS.code]: l.code,
              [KAFKA_HEADERS.error]: l.reason,
              [KAFKA_HEADERS.retriable]: String(l.retriable),
              [KAFKA_HEADERS.kind]: l.kind,
              [KAFKA_HEADERS.model]: l.model,
            },
          },
        });
      }
    }
    await this.sender.sendForever(out, letters[0]?.id ?? '');
  }
}
