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
  const root = pino(
    {
      level: options.level ?? process.env['INFERQ_LOG_LEVEL'] ?? 'info',
      base: { pid: process.pid, ...options.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      hooks: {
        logMethod(args, method) {
          const first: unknown = args[0];
          if (isPlainObject(first)) args[0] = withoutBound(first, this.bindings()) as never;
          method.apply(this, args);
        },
      },
    },
    pino.destination({ fd: 2, sync: true }),
  );
  dedupeChildren(root);
  return root;
}

/**
 * pino writes a key again when a child or a log call names one already bound (a line with
 * `"device"` twice): fields equal to the bound value are dropped instead.
 */
function dedupeChildren(root: Logger): void {
  const original = Object.getPrototypeOf(root) as { child: Logger['child'] };
  // Children inherit from the logger they are made from, so this reaches every descendant.
  root.child = function (this: Logger, bindings, opts) {
    return original.child.call(this, withoutBound(bindings, this.bindings()), opts);
  } as Logger['child'];
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !(v instanceof Error) && Object.getPrototypeOf(v) === Object.prototype;
}

function withoutBound<T extends Record<string, unknown>>(fields: T, bound: Record<string, unknown>): T {
  let out: Record<string, unknown> | undefined;
  for (const key of Object.keys(fields)) {
    if (key in bound && bound[key] === fields[key]) {
      out ??= { ...fields };
      delete out[key];
    }
  }
  return (out ?? fields) as T;
}

/** A logger that drops everything (tests, benchmarks). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
