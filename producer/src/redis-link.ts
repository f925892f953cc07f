/**
 * One ioredis connection of the SDK, and the rule every call follows on it.
 *
 * ```
 *  call ─► ready()? ── yes ─► command ─► reply ──────────────────────────► result (a Redis reply error as it is)
 *             │ no: wait for 'ready', at most connectTimeoutMs                 │ the connection dropped under it
 *             └─► none (or the server refused us: WRONGPASS, NOAUTH…) ─► ConnectionError(address, cause code)
 * ```
 *
 * ioredis itself never holds a command: no offline queue, no retry of a command in flight
 * (`enableOfflineQueue: false`, `maxRetriesPerRequest: 0`), so nothing sent under a call the
 * SDK has failed can run later. It keeps reconnecting in the background (backoff up to 1 s),
 * so the same connection serves again once the server is back. BullMQ accepts this for the
 * Producer's Queue: only a Worker's blocking connection must have `maxRetriesPerRequest: null`.
 */
import { Redis, ReplyError } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import { ClosedError, ConnectionError, InferqError } from '@inferq/shared';
import { RateLimitedLog, afterWait, settlesWithin } from './connection.js';
import type { SdkLogger } from './connection.js';

/** ioredis's reply error class (typed `any` by ioredis). */
const RedisReplyError = ReplyError as abstract new (...args: never[]) => Error;

/** Longest reconnect backoff: a server that is back is used again within about this. */
const MAX_RECONNECT_DELAY_MS = 1000;

/**
 * The ioredis options the SDK owns (they override the caller's): see the picture above.
 * `longestBlockMs`: the longest blocking read on this connection, so the socket timeout
 * (no byte from a server that has commands to answer) does not cut it.
 */
export function sdkRedisOptions(connectTimeoutMs: number, longestBlockMs = 0): RedisOptions {
  return {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    connectTimeout: connectTimeoutMs,
    socketTimeout: connectTimeoutMs + longestBlockMs,
    retryStrategy: (attempt: number) => Math.min(50 * 2 ** attempt, MAX_RECONNECT_DELAY_MS),
  };
}

/** A new ioredis client for a Redis URL, ioredis options, or a client to copy, with the SDK's options. */
export function openRedis(redis: string | RedisOptions | Redis, connectTimeoutMs: number): Redis {
  const own = sdkRedisOptions(connectTimeoutMs);
  if (redis instanceof Redis) return redis.duplicate(own);
  if (typeof redis === 'string') return new Redis(redis, own);
  return new Redis({ ...redis, ...own });
}

/** An error's text; Node's AggregateError (every address of a host refused) has none of its own. */
export function describeError(err: Error): string {
  if (err.message !== '') return err.message;
  const inner = (err as { errors?: unknown }).errors;
  if (Array.isArray(inner) && inner.length > 0) return inner.map((e) => (e instanceof Error ? e.message : String(e))).join('; ');
  return causeCode(err) ?? err.name;
}

/** The cause code of a connection failure: a socket error's code (ECONNREFUSED…) or a Redis error's first word (WRONGPASS…). */
export function causeCode(err: Error | undefined): string | undefined {
  if (err === undefined) return undefined;
  if (err instanceof RedisReplyError) return /^[A-Z][A-Z_]+\b/.exec(err.message)?.[0];
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
  /** Cancels its connectTimeoutMs timer; none for a wait until close() (such a wait also outlasts auth refusals). */
  readonly cancel: (() => void) | undefined;
}

/** Whether `err` is a Redis server's error reply (WRONGTYPE, OOM, WRONGPASS…), as opposed to a client or socket error. */
export function isReplyError(err: unknown): boolean {
  return err instanceof RedisReplyError;
}

export class RedisLink {
  readonly client: Redis;
  /** host:port, or the unix socket path. */
  readonly address: string;
  readonly connectTimeoutMs: number;
  private readonly log: RateLimitedLog;
  private readonly waiters = new Set<Waiter>();
  /** The last connection error since the connection was last ready. */
  private lastError: Error | undefined;
  /** When it happened (a command that failed after it may blame it). */
  private lastErrorAt = 0;
  /** Counts closes, so a command can tell whether the connection dropped under it. */
  private closes = 0;
  private closed = false;

  /** `name` tells this connection from the SDK's others in log lines ("main", "inbox", "subscription"). */
  constructor(client: Redis, name: string, connectTimeoutMs: number, logger: SdkLogger | undefined) {
    this.client = client;
    this.connectTimeoutMs = connectTimeoutMs;
    const o = client.options;
    this.address = o.path !== undefined && o.path !== '' ? o.path : `${o.host ?? 'localhost'}:${o.port ?? 6379}`;
    this.log = new RateLimitedLog(logger, { server: 'redis', address: this.address, connection: name });
    client.on('error', (err: Error) => this.failed(err));
    client.on('close', () => this.closes++);
    client.on('ready', () => {
      if (this.lastError !== undefined) this.log.info({}, `redis ${this.address}: connected again`);
      this.lastError = undefined;
      this.log.reset();
      for (const w of this.waiters) this.settle(w, undefined);
    });
  }

  /** A connection error event: remembered as the cause, logged (rate-limited); an auth refusal fails the waiting calls now. */
  private failed(err: Error): void {
    this.lastError = err;
    this.lastErrorAt = Date.now();
    const code = causeCode(err) ?? 'ERROR';
    this.log.log('warn', code, { code, err: describeError(err) }, `redis ${this.address}: ${describeError(err)}`);
    // The server answered and said no: waiting longer would not change its mind.
    if (err instanceof RedisReplyError) for (const w of this.waiters) if (w.cancel !== undefined) this.settle(w, this.error('refused the connection'));
  }

  private settle(w: Waiter, err: Error | undefined): void {
    this.waiters.delete(w);
    w.cancel?.();
    if (err === undefined) w.resolve();
    else w.reject(err);
  }

  /** A ConnectionError naming this server and the last connection error (ETIMEDOUT when there was none: no answer at all). */
  error(what: string): ConnectionError {
    const cause = this.lastError;
    const why = cause === undefined ? '' : `: ${describeError(cause)}`;
    return new ConnectionError(`redis ${this.address}: ${what}${why}`, { address: this.address, causeCode: causeCode(cause) ?? (cause === undefined ? 'ETIMEDOUT' : 'ECONNRESET'), cause });
  }

  /**
   * Resolves when the connection is ready: at once, or when it (re)connects within
   * `timeoutMs` (default connectTimeoutMs; Infinity waits until close()). Rejects with
   * ConnectionError, or ClosedError after close().
   */
  ready(timeoutMs = this.connectTimeoutMs): Promise<void> {
    if (this.closed) return Promise.reject(new ClosedError(`redis ${this.address}: connection closed`));
    if (this.usable()) return Promise.resolve();
    // A connection that gave up ('end' without close()) starts again; ioredis reconnects by itself otherwise.
    if (this.client.status === 'end' || this.client.status === 'wait') this.client.connect().catch(() => undefined);
    return new Promise<void>((resolve, reject) => {
      const cancel = Number.isFinite(timeoutMs) ? afterWait(timeoutMs, () => this.settle(w, this.error(`not connected within ${timeoutMs} ms`))) : undefined;
      const w: Waiter = { resolve, reject, cancel };
      this.waiters.add(w);
    });
  }

  /**
   * Ready and writable: a socket the server has just closed is still 'ready' to ioredis for a
   * moment, and a command sent on it would fail at once instead of waiting for the reconnect.
   */
  private usable(): boolean {
    return this.client.status === 'ready' && (this.client.stream as { writable?: boolean } | undefined)?.writable === true;
  }

  /**
   * Runs `op` once the connection is ready. Its failure because the connection dropped under it
   * becomes a ConnectionError; a Redis reply error (WRONGTYPE, OOM…) or an InferqError is passed on as it is.
   * `steady()` tells `op` whether the connection has stayed up since it began (so no command it
   * sent can still be on its way to the server).
   */
  async run<T>(op: (steady: () => boolean) => Promise<T>): Promise<T> {
    await this.ready();
    const closes = this.closes;
    const started = Date.now();
    try {
      return await op(() => !this.closed && this.closes === closes && this.usable());
    } catch (err) {
      throw this.classify(err, closes, started);
    }
  }

  /** See run(): `closes` and `started` as they were when the command was sent. */
  private classify(err: unknown, closes: number, started: number): unknown {
    if (err instanceof RedisReplyError || err instanceof InferqError) return err;
    if (this.closed) return new ClosedError(`redis ${this.address}: connection closed`, { cause: err });
    if (this.closes === closes && this.usable()) return err; // not the connection's doing
    // The socket's error when there was one; ioredis's own ("max retries… (which is 0)") would only confuse.
    const socket = this.lastError !== undefined && this.lastErrorAt >= started ? this.lastError : undefined;
    const why = socket === undefined ? '' : `: ${describeError(socket)}`;
    return new ConnectionError(`redis ${this.address}: connection lost during the command${why}`, { address: this.address, causeCode: causeCode(socket) ?? 'ECONNRESET', cause: socket ?? err });
  }

  /** An error seen elsewhere (BullMQ re-emits the connection's): logged, at most once a minute per cause. */
  report(err: Error, what: string): void {
    const code = causeCode(err) ?? describeError(err);
    this.log.log('error', code, { code, err: describeError(err) }, `redis ${this.address}: ${what}: ${describeError(err)}`);
  }

  /**
   * Ends the connection: QUIT when connected and `graceful` (bounded by connectTimeoutMs), then
   * disconnect, so it never waits on a server that is gone. Waiting calls get a ClosedError.
   */
  async close(graceful = true): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.waiters) this.settle(w, new ClosedError(`redis ${this.address}: connection closed`));
    if (graceful && this.client.status === 'ready') {
      const quit = this.client.quit();
      // A QUIT that fails means the connection is going anyway; disconnect() below ends it either way.
      await settlesWithin(quit, this.connectTimeoutMs);
    }
    this.client.disconnect();
  }
}
