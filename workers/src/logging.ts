import pino from 'pino';
import type { Logger } from 'pino';

export type { Logger };

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** Minimum level. Default `info`, or `$INFERQ_LOG_LEVEL`. */
  readonly level?: string;
  /** Base fields on every line. */
  readonly base?: Record<string, unknown>;
}

/**
 * Structured JSON logs on stderr (stdout is kept for command output). Components
 * take a `logger` and make children with their context: `logger.child({ model, version, device })`.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? process.env['INFERQ_LOG_LEVEL'] ?? 'info',
      base: { pid: process.pid, ...options.base },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    pino.destination({ fd: 2, sync: true }),
  );
}

/** A logger that drops everything (tests, benchmarks). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
