/**
 * A consumer group on a Kafka reply topic (KafkaProducer.subscribe()).
 *
 * ```
 *  ensure topic + connect (by connectTimeoutMs, else `ready` rejects: ConnectionError) ─► run: each reply
 *  ─► handler ─► offset committed after it returns; crashes restarted by ConsumerRestarter until it gives up
 * ```
 */
import type { EachMessagePayload, Kafka } from 'kafkajs';
import { ClosedError, ConsumerRestarter } from '@inferq/shared';
import { settlesWithin } from './connection.js';
import { CONSUMER_RETRY, ensureTopic } from './kafka-connection.js';
import type { KafkaLink } from './kafka-connection.js';
import { parseKafkaReplies } from './replies.js';
import type { Reply } from './replies.js';

export interface KafkaSubscribeOptions {
  /** Consumer group: instances in one group share the reply topic's partitions. */
  readonly group: string;
  /** A new group starts at the earliest reply (default true), so replies written before it are not skipped. */
  readonly fromBeginning?: boolean;
  /** Called when the handler throws (kafkajs then retries the reply). */
  readonly onError?: (err: unknown, reply: Reply) => void;
}

/** A running subscription (either transport). */
export interface ReplySubscription {
  /**
   * Resolves once the subscription reads; rejects with ConnectionError when the server could not be
   * reached within connectTimeoutMs (it has then stopped), or ClosedError when close() came first.
   */
  readonly ready: Promise<void>;
  /** Settles when the subscription has stopped: resolves after close(), rejects with what stopped it otherwise. */
  readonly done: Promise<void>;
  close(): Promise<void>;
}

/** Starts a subscription; KafkaProducer keeps it to close it. */
export function subscribeTopic(kafka: Kafka, link: KafkaLink, topic: string, handler: (reply: Reply) => Promise<void> | void, options: KafkaSubscribeOptions): ReplySubscription {
  const consumer = kafka.consumer({ groupId: options.group, maxWaitTimeInMs: 100, allowAutoTopicCreation: true, retry: CONSUMER_RETRY });
  let closed = false;
  let stop: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  const run = async (): Promise<void> => {
    await consumer.subscribe({ topic, fromBeginning: options.fromBeginning ?? true });
    await consumer.run({
      eachMessage: async ({ message }: EachMessagePayload) => {
        // A reply to a pack answers each of its jobs.
        for (const reply of parseKafkaReplies(message)) {
          try {
            await handler(reply);
          } catch (err) {
            options.onError?.(err, reply);
            throw err;
          }
        }
      },
    });
  };
  // Through broker outages (see ConsumerRestarter); when it gives up, `done` rejects with the consumer's error.
  const restarter = new ConsumerRestarter({ run, stopped: () => closed });
  consumer.on(consumer.events.CRASH, (e) => restarter.crashed(e.payload.error, e.payload.restart));
  consumer.on(consumer.events.GROUP_JOIN, () => restarter.joined());
  let connectSettled = false;
  const connecting = (async () => {
    try {
      await ensureTopic(kafka, topic);
      await consumer.connect();
    } finally {
      connectSettled = true;
    }
  })();
  const ready = (async () => {
    await link.within(Promise.race([connecting, stopped]), `subscribing to topic "${topic}"`);
    if (closed) throw new ClosedError(`subscription to "${topic}" closed before it was ready`);
    await run();
  })();
  const done = (async () => {
    try {
      await ready;
      await Promise.race([stopped, restarter.failed]);
    } catch (err) {
      if (err instanceof ClosedError) return;
      throw link.classify(err, `reading topic "${topic}"`) ?? err;
    } finally {
      closed = true;
      const late = !connectSettled;
      await settlesWithin(consumer.disconnect(), link.connectTimeoutMs);
      // A connection still being made when the call gave up is closed once it is made.
      if (late) void connecting.then(() => consumer.disconnect()).catch(() => undefined);
    }
  })();
  // Nobody may hold these: their rejections reach whoever awaits them, and nobody else.
  ready.catch(() => undefined);
  done.catch(() => undefined);
  const sub: ReplySubscription = {
    ready,
    done,
    close: async () => {
      closed = true;
      stop();
      await settlesWithin(done, 2 * link.connectTimeoutMs);
    },
  };
  return sub;
}
