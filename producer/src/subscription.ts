/**
 * A consumer-group reader of a reply stream.
 *
 * ```
 *  XGROUP CREATE … MKSTREAM ─► own pending entries (XREADGROUP … 0) ─► loop: XAUTOCLAIM entries idle
 *  (once)                      (a restarted subscriber resumes here)        in dead consumers, then
 *                                                                            XREADGROUP … > (BLOCK)
 *  each entry: handler(reply) then XACK; a handler that throws leaves it pending (redelivered later)
 * ```
 */
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { parseReplies } from './replies.js';
import type { Reply } from './replies.js';

export interface SubscribeOptions {
  /** Consumer group: instances in one group share the stream, each reply goes to one of them. */
  readonly group: string;
  /** This consumer's name; keep it stable across restarts to resume its pending replies. Default: host-pid-random. */
  readonly consumer?: string;
  /** Claim replies another consumer left unacknowledged this long. Default 30 s. */
  readonly claimIdleMs?: number;
  /** Longest blocking read, in ms (also how fast close() returns). Default 1000. */
  readonly blockMs?: number;
  /** Entries per read. Default 100. */
  readonly count?: number;
  /** Called when the handler throws (the reply stays pending). Default: ignore. */
  readonly onError?: (err: unknown, reply: Reply) => void;
}

type Entries = [Buffer, Buffer[]][];

export class Subscription {
  readonly done: Promise<void>;
  private stopped = false;
  private readonly redis: Redis;
  private readonly stream: string;
  private readonly handler: (reply: Reply) => Promise<void> | void;
  private readonly opts: Required<Omit<SubscribeOptions, 'onError'>> & Pick<SubscribeOptions, 'onError'>;

  constructor(redis: Redis, stream: string, handler: (reply: Reply) => Promise<void> | void, options: SubscribeOptions) {
    this.redis = redis;
    this.stream = stream;
    this.handler = handler;
    this.opts = {
      group: options.group,
      consumer: options.consumer ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`,
      claimIdleMs: options.claimIdleMs ?? 30_000,
      blockMs: options.blockMs ?? 1000,
      count: options.count ?? 100,
      onError: options.onError,
    };
    this.done = this.run();
  }

  async close(): Promise<void> {
    this.stopped = true;
    await this.done.catch(() => undefined);
    this.redis.disconnect();
  }

  private async run(): Promise<void> {
    const { group, consumer, count } = this.opts;
    try {
      await this.redis.xgroup('CREATE', this.stream, group, '0', 'MKSTREAM');
    } catch (err) {
      if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
    }
    // 1. Our own pending replies (delivered before a restart, never acknowledged).
    for (;;) {
      const res = (await this.redis.callBuffer('XREADGROUP', ['GROUP', group, consumer, 'COUNT', count, 'STREAMS', this.stream, '0'])) as [Buffer, Entries][] | null;
      const entries = res?.[0]?.[1] ?? [];
      const live = entries.filter(([, fields]) => fields !== null && fields.length > 0);
      if (live.length === 0) break;
      await this.handle(live);
      if (this.stopped) return;
    }
    let lastClaim = 0;
    while (!this.stopped) {
      // 2. Replies stuck with consumers that died.
      if (Date.now() - lastClaim >= this.opts.claimIdleMs / 2) {
        lastClaim = Date.now();
        let cursor = '0-0';
        do {
          const [next, claimed] = (await this.redis.callBuffer('XAUTOCLAIM', [this.stream, group, consumer, this.opts.claimIdleMs, cursor, 'COUNT', count])) as [Buffer, Entries, ...unknown[]];
          cursor = next.toString();
          await this.handle(claimed.filter(([, f]) => f !== null));
        } while (cursor !== '0-0' && !this.stopped);
      }
      // 3. New replies.
      let res: [Buffer, Entries][] | null;
      try {
        res = (await this.redis.callBuffer('XREADGROUP', ['GROUP', group, consumer, 'COUNT', count, 'BLOCK', this.opts.blockMs, 'STREAMS', this.stream, '>'])) as [Buffer, Entries][] | null;
      } catch (err) {
        if (this.stopped) return;
        throw err;
      }
      if (res !== null) await this.handle(res[0]?.[1] ?? []);
    }
  }

  /**
   * Hands each reply to the handler and acknowledges an entry once all its replies were
   * handled. An entry whose handler threw stays pending and is delivered again — all of
   * its replies, when it packs several (at least once, as ever).
   */
  private async handle(entries: Entries): Promise<void> {
    for (const [id, fields] of entries) {
      const entryId = id.toString();
      let failed = false;
      for (const reply of parseReplies(fields, entryId)) {
        try {
          await this.handler(reply);
        } catch (err) {
          this.opts.onError?.(err, reply);
          failed = true;
        }
      }
      if (!failed) await this.redis.xack(this.stream, this.opts.group, entryId);
    }
  }
}
