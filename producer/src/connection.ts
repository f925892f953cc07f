/**
 * What both SDK classes share about their connections: the logger they report to, the
 * rate limit on what they report, and the deadline every call waits under.
 */
import { ConfigError } from '@inferq/shared';

/**
 * Where the SDK reports what it cannot hand to a caller through a promise: a server that went
 * away or refuses us, a reply it could not read. A pino logger and `console` fit as they are.
 * Default: none — the SDK never writes to stdout or stderr itself.
 */
export interface SdkLogger {
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  info?(obj: object, msg: string): void;
  debug?(obj: object, msg: string): void;
}

/** Default of `connectTimeoutMs` (both SDK classes). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5000;

/** The same message is logged at most once in this window; the next one says how many were dropped. */
const REPEAT_WINDOW_MS = 60_000;

const silent: SdkLogger = { warn: () => undefined, error: () => undefined };

/** `connectTimeoutMs` checked (a ConfigError names a bad value) or defaulted. */
export function connectTimeout(value: number | undefined): number {
  if (value === undefined) return DEFAULT_CONNECT_TIMEOUT_MS;
  if (!(Number.isFinite(value) && value > 0)) throw new ConfigError(`connectTimeoutMs: expected a positive number of milliseconds, got ${String(value)}`);
  return value;
}

/**
 * A logger that drops repeats: a server that is down fails every reconnect attempt, and the
 * caller's logger should get one line per cause and minute, not one per attempt.
 */
export class RateLimitedLog {
  private readonly logger: SdkLogger;
  private readonly context: Readonly<Record<string, unknown>>;
  private readonly seen = new Map<string, { at: number; dropped: number }>();

  constructor(logger: SdkLogger | undefined, context: Readonly<Record<string, unknown>>) {
    this.logger = logger ?? silent;
    this.context = context;
  }

  /** Logs `msg` unless the same `key` was logged within the last minute. */
  log(level: 'warn' | 'error', key: string, obj: object, msg: string): void {
    const now = Date.now();
    const last = this.seen.get(key);
    if (last !== undefined && now - last.at < REPEAT_WINDOW_MS) {
      last.dropped++;
      return;
    }
    if (this.seen.size > 100) this.seen.clear(); // keys are causes, a handful; never let them grow
    this.seen.set(key, { at: now, dropped: 0 });
    const repeats = last === undefined || last.dropped === 0 ? {} : { repeats: last.dropped };
    this.logger[level]({ ...this.context, ...repeats, ...obj }, msg);
  }

  /** Forgets what was logged (after a reconnect, the next failure is news again). */
  reset(): void {
    this.seen.clear();
  }

  info(obj: object, msg: string): void {
    (this.logger.info ?? this.logger.warn).call(this.logger, { ...this.context, ...obj }, msg);
  }

  debug(obj: object, msg: string): void {
    this.logger.debug?.({ ...this.context, ...obj }, msg);
  }
}

/**
 * Calls `expire` `ms` after the event loop is next free (so a caller's own burst of synchronous
 * work — thousands of calls made in one loop — is not counted as waiting on a server); returns
 * the cancel function.
 */
export function afterWait(ms: number, expire: () => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  const immediate = setImmediate(() => (timer = setTimeout(expire, ms)));
  return () => {
    clearImmediate(immediate);
    clearTimeout(timer);
  };
}

/**
 * `work`, or `onTimeout()`'s error when `work` has not settled `ms` after the event loop is next
 * free (see afterWait). A late rejection of `work` is handled here, so abandoning it never leaves
 * an unhandled rejection.
 */
export function within<T>(work: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const cancel = afterWait(ms, () => reject(onTimeout()));
    work.then(
      (v) => {
        cancel();
        resolve(v);
      },
      (err: unknown) => {
        cancel();
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/** Resolves when `work` settles or after `ms`, whichever is first; never rejects. True when `work` settled. */
export function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    const done = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    work.then(done, done);
  });
}

/**
 * Marks a promise the SDK returns as handled: an app that drops it (or awaits it only later)
 * is never crashed by an unhandled rejection; whoever awaits it still gets the error.
 */
export function handled<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}
