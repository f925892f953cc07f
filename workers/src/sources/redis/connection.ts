/** Connection handling shared by the Redis worker's steps: bounded waits, readable failures, quiet retries. */
import type { Redis } from 'ioredis';
import { ConnectionError } from '@inferq/shared';
import type { Logger } from '../../logging.js';

/** "host:port" (or the unix socket) an ioredis client connects to. */
export function describeRedis(client: Redis): string {
  const o = client.options;
  return o.path !== undefined && o.path !== '' ? o.path : `${o.host ?? '127.0.0.1'}:${o.port ?? 6379}`;
}

/** The error code of a connection failure (ECONNREFUSED, WRONGPASS…), from errno or the server's reply. */
export function errorCode(err: Error | undefined): string | undefined {
  if (err === undefined) return undefined;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') return code;
  const m = /^([A-Z][A-Z_]{2,})\b/.exec(err.message);
  return m?.[1];
}

/** The error start() reports when Redis did not answer in time. */
export function connectionFailure(client: Redis, last: Error | undefined, waitedMs: number): ConnectionError {
  const address = describeRedis(client);
  const code = errorCode(last);
  const why = last === undefined ? 'no answer' : `${last.message}`;
  return new ConnectionError(`cannot reach Redis at ${address}: ${why} (waited ${waitedMs} ms)`, { address, causeCode: code, cause: last });
}

/** Logs a connection error once, then at most once a minute with how many were suppressed: a server down for long does not flood the log. */
export function rateLimitedErrorLog(log: Logger, what: string, everyMs = 60_000): (err: Error) => void {
  let last = 0;
  let suppressed = 0;
  return (err) => {
    const now = Date.now();
    if (now - last < everyMs) {
      suppressed++;
      return;
    }
    log.warn({ err: { message: err.message, code: errorCode(err) }, suppressed }, `${what}: connection error (retrying)`);
    last = now;
    suppressed = 0;
  };
}
