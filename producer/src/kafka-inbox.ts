/**
 * The reply reader of a KafkaProducer's predict() calls: its own consumer group on the reply
 * topic, starting at the end of the topic, and ready only after its first fetch has fixed
 * that position — so no reply to a request sent after it is ready can be skipped.
 */
import { randomUUID } from 'node:crypto';
import type { Consumer, EachMessagePayload, Kafka, KafkaMessage } from 'kafkajs';
import { ConsumerRestarter, InferqError } from '@inferq/shared';
import { settlesWithin } from './connection.js';
import { CONSUMER_RETRY, ensureTopic } from './kafka-connection.js';
import type { KafkaLink } from './kafka-connection.js';
import { parseKafkaReplies, settleWaiter } from './replies.js';
import type { ReplyWaiter } from './replies.js';

/** A started reader: `connected` once it reaches the brokers, `ready` once its position is fixed. */
export interface InboxReader {
  readonly consumer: Consumer;
  readonly connected: Promise<void>;
  readonly ready: Promise<void>;
}

export class KafkaInbox {
  private reader: InboxReader | undefined;

  constructor(
    private readonly kafka: Kafka,
    private readonly link: KafkaLink,
    private readonly replyTopic: string,
    /** The predict() calls waiting for their reply, by job id (the producer's). */
    private readonly waiters: Map<string, ReplyWaiter>,
    private readonly closing: () => boolean,
  ) {}

  /** The reader, started on first use; one that gave up is replaced by the next call. */
  ensure(): InboxReader {
    if (this.reader !== undefined) return this.reader;
    const consumer = this.kafka.consumer({ groupId: `inferq-inbox-${randomUUID()}`, maxWaitTimeInMs: 50, allowAutoTopicCreation: true, retry: CONSUMER_RETRY });
    const run = async (): Promise<void> => {
      await consumer.subscribe({ topic: this.replyTopic, fromBeginning: false });
      await consumer.run({ autoCommit: false, eachMessage: async ({ message }: EachMessagePayload) => this.settle(message) });
    };
    // Through broker outages (see ConsumerRestarter); if it gives up, waiting calls fail now and the next predict() opens a new reader.
    const restarter = new ConsumerRestarter({
      run,
      stopped: () => this.closing() || this.reader !== reader,
      onGiveUp: (err) => {
        this.reader = undefined;
        const failure = this.link.classify(err, 'reading replies') ?? new InferqError(`the reply reader of topic "${this.replyTopic}" stopped: ${err.message}`, { retriable: true, cause: err });
        for (const [id, w] of this.waiters) {
          clearTimeout(w.timer);
          w.reject(failure);
          this.waiters.delete(id);
        }
        void consumer.disconnect().catch(() => undefined);
      },
    });
    consumer.on(consumer.events.CRASH, (e) => restarter.crashed(e.payload.error, e.payload.restart));
    consumer.on(consumer.events.GROUP_JOIN, () => restarter.joined());
    const connected = (async () => {
      await ensureTopic(this.kafka, this.replyTopic);
      await consumer.connect();
    })();
    const ready = (async () => {
      await connected;
      // Ready only after the first fetch has fixed the position at the end of the topic.
      const fetched = new Promise<void>((resolve) => {
        const off = consumer.on(consumer.events.FETCH, () => {
          off();
          resolve();
        });
      });
      await run();
      await Promise.race([fetched, restarter.failed]);
    })();
    const reader: InboxReader = { consumer, connected, ready };
    // A reader that could not start is dropped (and disconnected), so the next predict() tries a new one.
    ready.catch(() => {
      if (this.reader === reader) this.reader = undefined;
      void consumer.disconnect().catch(() => undefined);
    });
    this.reader = reader;
    return reader;
  }

  /** Stops the reader (if any) within `bound` ms. */
  async close(bound: number): Promise<void> {
    if (this.reader === undefined) return;
    const { consumer, ready } = this.reader;
    await settlesWithin(ready, bound);
    await settlesWithin(consumer.disconnect(), bound);
  }

  /** The replies of a message to the predict() calls waiting for them; an unreadable one is logged and skipped (replies are untrusted). */
  private settle(message: KafkaMessage): void {
    try {
      for (const reply of parseKafkaReplies(message)) settleWaiter(this.waiters, reply);
    } catch (err) {
      this.link.report(err as Error, `unreadable reply at offset ${message.offset} of "${this.replyTopic}" dropped`);
    }
  }
}
