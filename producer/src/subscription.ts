/**
 * A consumer-group reader of a reply stream.
 *
 * ```
 *  XGROUP CREATE … MKSTREAM ─► own pending entries (XREADGROUP … 0) ─► loop: XAUTOCLAIM entries idle
 *  (once)                      (a restarted subscriber resumes here)        in dead consumers, then
 *                                                                            XREADGROUP … > (BLOCK)
 *  each entry: handler(reply) then XACK; a handler that throws leaves it pending (redelivered later)
 * ```
 *
 * Connections: `ready` rejects with ConnectionError (and the subscription stops) when Redis cannot
 * be reached within connectTimeoutMs of subscribe(). Once ready, it rides out outages: it waits
 * for Redis as long as it takes (the SDK logger hears of it), then starts again from its own
 * pending replies, re-creating the group if the server came back empty.
 */
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import { ClosedError, ConnectionError, InferqError } from '@inferq/shared';
import { settlesWithin } from './connection.js';
import { parseReplies } from './replies.js';
import type { Reply } from './replies.js';
import { causeCode } from './redis-link.js';
import type { RedisLink } from './redis-link.js';

/** Redis errors that say the stream or its group is gone. */
const GROUP_GONE = new Set(['NOGROUP', 'UNBLOCKED']);

/** Default of `blockMs`. */
export const DEFAULT_BLOCK_MS = 1000;

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
  /**
   * Resolves once the group exists and reading began. Rejects with ConnectionError when Redis
   * could not be reached within connectTimeoutMs (the subscription has then stopped), or with
   * ClosedError when close() came first. Never an unhandled rejection if nobody awaits it.
   */
  readonly ready: Promise<void>;
  /**
   * Settles when the subscription has stopped: resolves after close(); rejects with what stopped
   * it otherwise (the ConnectionError of `ready`, or a Redis error reply such as WRONGTYPE).
   */
  readonly done: Promise<void>;
  private stopped = false;
  private readonly link: RedisLink;
  private readonly stream: string;
  private readonly handler: (reply: Reply) => Promise<void> | void;
  private readonly opts: Required<Omit<SubscribeOptions, 'onError'>> & Pick<SubscribeOptions, 'onError'>;

  /** Made by `Producer.subscribe()`, which gives it a connection of its own. */
  constructor(link: RedisLink, stream: string, handler: (reply: Reply) => Promise<void> | void, options: SubscribeOptions) {
    this.link = link;
    this.stream = stream;
    this.handler = handler;
    this.opts = {
      group: options.group,
      consumer: options.consumer ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`,
      claimIdleMs: options.claimIdleMs ?? 30_000,
      blockMs: options.blockMs ?? DEFAULT_BLOCK_MS,
      count: options.count ?? 100,
      onError: options.onError,
    };
    let started: () => void = () => undefined;
    const began = new Promise<void>((resolve) => (started = resolve));
    this.done = this.run(started);
    this.ready = Promise.race([
      began,
      this.done.then(() => {
        throw new ClosedError(`subscription to "${stream}" closed before it was ready`);
      }),
    ]);
    // The caller may hold neither promise: their rejections reach whoever awaits them, and nobody else.
    this.ready.catch(() => undefined);
    this.done.catch(() => undefined);
  }

  /** Stops reading: the read in progress (at most blockMs) and the handler running finish first, within a bound. */
  async close(): Promise<void> {
    this.stopped = true;
    if (this.link.client.status === 'ready') await settlesWithin(this.done, this.opts.blockMs + this.link.connectTimeoutMs);
    await this.link.close();
    await settlesWithin(this.done, 1000);
  }

  private async run(started: () => void): Promise<void> {
    try {
      await this.read(started);
    } catch (err) {
      await this.link.close(false); // stopped for good: no connection left reconnecting behind it
      if (this.stopped) return; // close() came first: what failed was its doing
      throw err;
    }
  }

  private async read(started: () => void): Promise<void> {
    await this.createGroup();
    started();
    while (!this.stopped) {
      try {
        await this.consume();
      } catch (err) {
        if (this.stopped) return;
        // A stream deleted, or a server that restarted empty between two reads, has no group (UNBLOCKED, NOGROUP): made again below.
        if (!(err instanceof ConnectionError) && !GROUP_GONE.has(causeCode(err as Error) ?? '')) throw err;
        // Redis went away: wait for it as long as it takes (the link logs why), then start again.
        try {
          await this.link.ready(Infinity);
          await this.createGroup(); // a server that restarted empty lost the stream and its group
        } catch (again) {
          if (this.stopped) return;
          if (!(again instanceof ConnectionError)) throw again;
        }
      }
    }
  }

  private async createGroup(): Promise<void> {
    try {
      await this.link.run(() => this.link.client.xgroup('CREATE', this.stream, this.opts.group, '0', 'MKSTREAM'));
    } catch (err) {
      if (err instanceof InferqError || !String((err as Error).message).includes('BUSYGROUP')) throw err;
    }
  }

  private call<T>(command: string, args: (string | number)[]): Promise<T> {
    return this.link.run(() => this.link.client.callBuffer(command, args) as Promise<T>);
  }

  /** Own pending replies first, then (until stopped) replies of dead consumers and new ones. */
  private async consume(): Promise<void> {
    const { group, consumer, count } = this.opts;
    // 1. Our own pending replies (delivered before a restart or an outage, never acknowledged).
    for (;;) {
      const res = await this.call<[Buffer, Entries][] | null>('XREADGROUP', ['GROUP', group, consumer, 'COUNT', count, 'STREAMS', this.stream, '0']);
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
          const [next, claimed] = await this.call<[Buffer, Entries, ...unknown[]]>('XAUTOCLAIM', [this.stream, group, consumer, this.opts.claimIdleMs, cursor, 'COUNT', count]);
          cursor = next.toString();
          await this.handle(claimed.filter(([, f]) => f !== null));
        } while (cursor !== '0-0' && !this.stopped);
      }
      // 3. New replies.
      const res = await this.call<[Buffer, Entries][] | null>('XREADGROUP', ['GROUP', group, consumer, 'COUNT', count, 'BLOCK', this.opts.blockMs, 'STREAMS', this.stream, '>']);
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
      let replies: Reply[] = [];
      try {
        replies = parseReplies(fields, entryId);
      } catch (err) {
        // Stream entries are untrusted: one that cannot be read is logged and acknowledged, never allowed to stop the stream.
        this.link.report(err as Error, `unreadable reply entry ${entryId} on "${this.stream}" dropped`);
      }
      for (const reply of replies) {
        try {
          await this.handler(reply);
        } catch (err) {
          this.opts.onError?.(err, reply);
          failed = true;
        }
      }
      if (!failed) await this.link.run(() => this.link.client.xack(this.stream, this.opts.group, entryId));
    }
  }
}
