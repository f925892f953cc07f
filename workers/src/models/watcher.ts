/**
 * Runs the pool's refresh every `pollMs` (`--model-poll-ms`; 0 = only on demand) and on
 * demand (SIGHUP, `inferq models reload`). `sync` runs first each time: it brings a remote
 * (HDFS) repository's changes into the local copy the pool reads.
 */
import type { Logger } from '../logging.js';
import type { ModelPool } from './model-pool.js';

export interface ModelWatcherOptions {
  readonly pool: Pick<ModelPool, 'refresh'>;
  /** Between two scans; 0 = no polling. */
  readonly pollMs: number;
  readonly logger: Logger;
  /** Brings a remote repository's changes into the local folder the pool reads. Default: nothing. */
  readonly sync?: () => Promise<void>;
  /** A manual reload scans twice this far apart, so that a version copied just before it counts (two equal scans). Default 1000 ms. */
  readonly settleMs?: number;
}

export class ModelWatcher {
  private readonly options: ModelWatcherOptions;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(options: ModelWatcherOptions) {
    this.options = options;
  }

  start(): void {
    if (this.options.pollMs > 0) this.schedule();
  }

  /** A manual reload: two scans `settleMs` apart; resolves when both were acted on. */
  async reload(): Promise<void> {
    this.options.logger.info('model reload requested');
    await this.tick();
    await new Promise((resolve) => setTimeout(resolve, this.options.settleMs ?? 1000));
    await this.tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick().then(() => this.schedule()), this.options.pollMs);
    // The queue connections keep a worker alive; this timer alone must not.
    this.timer.unref();
  }

  /** One scan; a scan already running is waited for instead of doubled. */
  private tick(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.running ??= (async () => {
      try {
        await this.options.sync?.();
        await this.options.pool.refresh();
      } catch (err) {
        this.options.logger.warn({ err }, 'model repository scan failed; serving what was served');
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }
}
