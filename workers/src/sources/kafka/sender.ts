/**
 * Sends for the Kafka worker: every message queued while one sendBatch is in flight goes into
 * the next one (kafkajs has no linger of its own); a send that cannot reach the broker is
 * retried until it can, so an offset is never committed past a message whose output is not
 * written — except when the worker is stopping, where it gives up after a few tries.
 */
import type { Message, Producer } from 'kafkajs';
import { printable } from '@inferq/shared';
import type { Logger } from '../../logging.js';

export interface Outgoing {
  readonly topic: string;
  readonly message: Message;
}

export class KafkaSender {
  private queue: { out: readonly Outgoing[]; resolve: () => void; reject: (err: unknown) => void }[] = [];
  private running = false;

  constructor(
    private readonly producer: Producer,
    private readonly log: Logger,
    /** Whether the worker is stopping (sends then give up after three tries). */
    private readonly stopping: () => boolean,
  ) {}

  /** Sends until the broker takes it (a few tries when stopping). */
  async sendForever(out: readonly Outgoing[], jobId: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.send(out);
        return;
      } catch (err) {
        if (this.stopping() && attempt >= 3) throw err;
        this.log.warn({ err, jobId: printable(jobId), attempt }, 'could not write to Kafka; retrying');
        await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** Math.min(attempt, 5))));
      }
    }
  }

  /** One try: resolves once the request that carried these messages was acknowledged. */
  send(out: readonly Outgoing[]): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ out, resolve, reject });
      if (!this.running) {
        this.running = true;
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const items = this.queue;
      this.queue = [];
      const byTopic = new Map<string, Message[]>();
      for (const item of items) {
        for (const o of item.out) {
          let list = byTopic.get(o.topic);
          if (list === undefined) byTopic.set(o.topic, (list = []));
          list.push(o.message);
        }
      }
      try {
        await this.producer.sendBatch({ acks: -1, topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })) });
        for (const item of items) item.resolve();
      } catch (err) {
        for (const item of items) item.reject(err);
      }
    }
    this.running = false;
  }
}
