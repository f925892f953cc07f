/** Options of the Redis source, with their defaults in one place and checked when a source is made. */
import type { Redis, RedisOptions } from 'ioredis';
import { z } from 'zod';
import { ConfigError } from '@inferq/shared';
import { DEAD_LETTER_PAYLOAD_DEFAULTS } from '../../admin/letter-payload.js';
import type { Logger } from '../../logging.js';

export interface RedisSourceOptions {
  /** A Redis URL, or a client (duplicated: the source opens connections of its own). */
  readonly redis: string | Redis;
  /** ioredis options merged into the URL's: TLS files, user, password (cli/connections.ts). The URL's own credentials win. */
  readonly client?: Pick<RedisOptions, 'tls' | 'username' | 'password'>;
  readonly queue: string;
  /** Key prefix. Default "inferq". */
  readonly prefix?: string;
  readonly logger: Logger;
  /** Jobs in flight at once (enough to fill batches; also the bound on memory). Default 256. */
  readonly concurrency?: number;
  /** A job whose worker stops renewing its lock for this long is given to another worker. Default 30 s. */
  readonly lockDurationMs?: number;
  /** How often to look for stalled jobs. Default lockDurationMs / 2. */
  readonly stalledIntervalMs?: number;
  /** Approximate length cap of reply streams (XADD MAXLEN ~). Default 100,000. */
  readonly replyMaxLen?: number;
  /** Largest accepted payload. Default 256 MiB. */
  readonly maxPayloadBytes?: number;
  /** How long start() waits for Redis before it fails with ConnectionError. Default 15 s. */
  readonly connectTimeoutMs?: number;
  /**
   * Told of each valid control message published on {@link controlChannel} (`inferq models reload`).
   * Default: no subscription.
   */
  readonly onControl?: (command: ControlCommand) => void;
  /** Expiry of a dead letter's copy of its job payload (for a replay). Default 604,800 s (7 days). */
  readonly deadLetterTtlSeconds?: number;
}

/** What a control message may ask of the workers of a queue: it carries no path and no code. */
export type ControlCommand = 'reload';

/** The pub/sub channel the workers of a queue listen on for control messages. */
export const controlChannel = (prefix: string, queue: string): string => `${prefix}:${queue}:control`;

/** The control message for `command`, as `inferq models reload` publishes it. */
export const encodeControl = (command: ControlCommand): string => JSON.stringify({ command });

/** A control message's command, or undefined for anything else (the channel is as untrusted as the queue). */
export function decodeControl(message: string): ControlCommand | undefined {
  if (message.length > 256) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(message);
  } catch {
    // Not JSON: not ours; the caller logs it.
    return undefined;
  }
  const ok = typeof parsed === 'object' && parsed !== null && Object.keys(parsed).length === 1 && (parsed as { command?: unknown }).command === 'reload';
  return ok ? 'reload' : undefined;
}

const DEFAULTS = {
  prefix: 'inferq',
  concurrency: 256,
  lockDurationMs: 30_000,
  replyMaxLen: 100_000,
  maxPayloadBytes: 256 * 1024 * 1024,
  connectTimeoutMs: 15_000,
  deadLetterTtlSeconds: DEAD_LETTER_PAYLOAD_DEFAULTS.ttlSeconds as number,
};

const positive = z.number().int().positive();
const schema = z.object({
  queue: z.string().regex(/^[A-Za-z0-9_.-]{1,200}$/, 'a queue name of letters, digits, _, . and -'),
  prefix: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'a key prefix of letters, digits, _, ., : and -'),
  concurrency: positive,
  lockDurationMs: positive,
  stalledIntervalMs: positive.optional(),
  replyMaxLen: positive,
  maxPayloadBytes: positive,
  connectTimeoutMs: positive,
  deadLetterTtlSeconds: positive,
});

export type ResolvedRedisSourceOptions = RedisSourceOptions & typeof DEFAULTS;

/** Fills in the defaults and checks the values; a bad one is a ConfigError naming the option. */
export function resolveRedisSourceOptions(options: RedisSourceOptions): ResolvedRedisSourceOptions {
  const out: Record<string, unknown> = { ...options };
  for (const [k, v] of Object.entries(DEFAULTS)) if (out[k] === undefined) out[k] = v;
  const parsed = schema.safeParse(out);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(`redis source option "${issue.path.join('.')}": ${issue.message}`);
  }
  return out as unknown as ResolvedRedisSourceOptions;
}
