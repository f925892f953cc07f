/**
 * The life of a long-running command (a queue worker): start, serve until a signal or a
 * fatal error, stop within one deadline, exit. Entry-file code: it installs the signal
 * handlers and ends the process, so a connection left retrying can never keep it alive.
 *
 * ```
 *  SIGHUP ──► onReload (model repository scanned again), serving goes on
 *  start() ──ok──► "serving" line ──► SIGTERM / SIGINT ──► onStopping (/readyz 503) ──► stop(deadline) ──► exit 0
 *     │                      └──► fatal(err) ──► stop(deadline) ──► "inferq: error: …" ──► exit 1
 *     └─fails──► stop(deadline) ──► "inferq: error: …" ──► exit 1
 *  a stop that overruns its deadline (plus a moment) ──► "inferq: error: …" ──► exit 1
 * ```
 */
import { InferqError } from '@inferq/shared';
import type { Logger } from '../logging.js';

export interface Service {
  /** Connects and starts taking work; rejects when it cannot. */
  start(): Promise<void>;
  /** Stops taking work and releases everything within `timeoutMs`, whatever is down. */
  stop(timeoutMs: number): Promise<void>;
  /** Counters for the final log line. */
  stats(): Record<string, number>;
}

export interface ServeOptions {
  readonly logger: Logger;
  readonly shutdownTimeoutMs: number;
  /** Printed on stdout once started ("inferq worker: serving …"). */
  readonly servingLine: () => string;
  /** Called with a function the service calls when it cannot go on. */
  readonly onFatal?: (fatal: (err: Error) => void) => void;
  /** Called first when stopping, before the drain starts (readiness turns to "draining"). */
  readonly onStopping?: () => void;
  /** Called on SIGHUP (reload the model repository). Default: SIGHUP is left alone. */
  readonly onReload?: () => void;
}

/** Runs the service until it is stopped, then exits the process with 0 (stopped on a signal) or 1 (could not work). */
export async function serve(service: Service, opts: ServeOptions): Promise<never> {
  const { logger } = opts;
  let stopping: Promise<void> | undefined;
  const stop = (why: Record<string, unknown>): Promise<void> => {
    stopping ??= (async () => {
      opts.onStopping?.();
      // The backstop: whatever hangs in a stop, the process ends shortly after its deadline.
      setTimeout(() => die(`shutdown did not finish within ${opts.shutdownTimeoutMs} ms; exiting`), opts.shutdownTimeoutMs + 3000).unref();
      logger.info({ ...why, timeoutMs: opts.shutdownTimeoutMs }, 'stopping: no new jobs; draining in-flight jobs');
      const started = Date.now();
      await service.stop(opts.shutdownTimeoutMs).catch((err: unknown) => logger.error({ err }, 'stop failed'));
      logger.info({ ...service.stats(), ms: Date.now() - started }, 'stopped');
    })();
    return stopping;
  };
  const outcome = await new Promise<{ code: 0 } | { code: 1; err: unknown }>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => void stop({ signal }).then(() => resolve({ code: 0 }));
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
    const onReload = opts.onReload;
    if (onReload !== undefined) process.on('SIGHUP', () => onReload());
    opts.onFatal?.((err) => {
      logger.error({ err }, 'the worker cannot go on: stopping so that the process is restarted');
      void stop({ fatal: err.message }).then(() => resolve({ code: 1, err }));
    });
    service.start().then(
      () => {
        if (stopping === undefined) process.stdout.write(`${opts.servingLine()}\n`);
      },
      (err: unknown) => void stop({ startFailed: err instanceof Error ? err.message : String(err) }).then(() => resolve({ code: 1, err })),
    );
  });
  if (outcome.code === 1) die(describe(outcome.err));
  process.exit(0);
}

function describe(err: unknown): string {
  if (err instanceof InferqError) return err.message;
  return err instanceof Error ? (err.stack ?? err.message) : String(err);
}

function die(message: string): never {
  process.stderr.write(`inferq: error: ${message.split('\n')[0]}\n`);
  process.exit(1);
}
