/**
 * A Producer's inbox: the stream its predict() replies come back on, read on a connection of
 * its own and handed to the waiting calls. The reader never stops by itself: through an outage
 * it waits for Redis (the link logs why) and reads on from where it was.
 */
import { ConnectionError } from '@inferq/shared';
import { parseReplies, settleWaiter } from './replies.js';
import type { ReplyWaiter } from './replies.js';
import type { RedisLink } from './redis-link.js';

/** Longest blocking read on the inbox. */
export const INBOX_BLOCK_MS = 1000;

export class Inbox {
  /** Settles (never rejects) when the reader has stopped. */
  readonly done: Promise<void>;
  private readonly link: RedisLink;
  private readonly stream: string;
  private readonly waiters: Map<string, ReplyWaiter>;
  private stopped = false;

  constructor(link: RedisLink, stream: string, waiters: Map<string, ReplyWaiter>) {
    this.link = link;
    this.stream = stream;
    this.waiters = waiters;
    this.done = this.read();
  }

  async close(): Promise<void> {
    this.stopped = true;
    await this.link.close(false); // a blocking read need not finish: its replies have no one left to go to
    await this.done;
  }

  private async read(): Promise<void> {
    // The inbox is this producer's own new stream: read it from the start, so a reply that
    // lands before the first read (or between two reads) is never skipped, as '$' would.
    let last = '0';
    while (!this.stopped) {
      let res: [Buffer, [Buffer, Buffer[]][]][] | null;
      try {
        res = (await this.link.run(() => this.link.client.xreadBuffer('BLOCK', INBOX_BLOCK_MS, 'STREAMS', this.stream, last))) as typeof res;
      } catch (err) {
        if (this.stopped) return;
        // A connection error was logged by the link, and the next read waits for the connection; anything else is news.
        if (!(err instanceof ConnectionError)) this.link.report(err as Error, `reading the inbox "${this.stream}"`);
        await this.pause(200);
        continue;
      }
      for (const [, entries] of res ?? []) {
        for (const [entryId, fields] of entries) {
          last = entryId.toString();
          try {
            for (const reply of parseReplies(fields)) settleWaiter(this.waiters, reply);
          } catch (err) {
            // Stream entries are untrusted: an unreadable one is logged and skipped (its caller times out).
            this.link.report(err as Error, `unreadable reply entry ${last} in the inbox dropped`);
          }
        }
      }
    }
  }

  /** A short pause between failed reads, so a server answering with errors is not asked in a tight loop. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }
}
