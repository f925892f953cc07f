/**
 * The restart policy for a Kafka consumer that crashed and that kafkajs will not restart.
 *
 * kafkajs 2.2.4 restarts its consumer only after errors it deems retriable. Some it treats
 * as fatal are ordinary outage symptoms: `KafkaJSGroupCoordinatorNotFound`
 * ("Failed to find group coordinator") when the broker holding the group is down or still
 * loading it. Left alone, such a consumer is gone for good while its process runs on.
 * Every kafkajs consumer of ours (the worker's, the SDK's `subscribe()` and its reply
 * inbox) feeds its crashes and rejoins into one of these, which runs it again with
 * backoff and gives up only after `maxRestarts` crashes in a row with no rejoin between.
 *
 * No kafkajs types here: the caller wires `crashed()` to the consumer's CRASH event and
 * `joined()` to GROUP_JOIN, and `run` re-subscribes and runs the consumer.
 */
export interface ConsumerRestartOptions {
  /** Subscribes and runs the consumer again (kafkajs has already disconnected it when it crashed). */
  readonly run: () => Promise<void>;
  /** True once the owner is closing: crashes then are not restarted. */
  readonly stopped: () => boolean;
  /** Crashes in a row with no rejoin before giving up. Default 8. */
  readonly maxRestarts?: number;
  /** First delay; it doubles per crash in a row. Default 500 ms. */
  readonly initialDelayMs?: number;
  /** Default 30 s. */
  readonly maxDelayMs?: number;
  readonly onRestart?: (err: Error, attempt: number, delayMs: number) => void;
  /** Called once, after more than `maxRestarts` crashes in a row (as `failed` rejects). */
  readonly onGiveUp?: (err: Error) => void;
  /** Timers, replaceable in tests. */
  readonly setTimer?: (f: () => void, ms: number) => void;
}

export class ConsumerRestarter {
  private readonly opts: ConsumerRestartOptions;
  private inARow = 0;
  private total = 0;
  private gaveUp = false;
  private reject: (err: Error) => void = () => undefined;
  /** Rejects with the last crash's error when the policy gives up; never resolves. For owners that race it against their own end. */
  readonly failed: Promise<never>;

  constructor(options: ConsumerRestartOptions) {
    this.opts = options;
    this.failed = new Promise<never>((_, reject) => (this.reject = reject));
    this.failed.catch(() => undefined); // an owner that never awaits it must not see an unhandled rejection
  }

  /** Restarts this policy made (for stats). */
  get restarts(): number {
    return this.total;
  }

  /** The consumer (re)joined its group: the next crash starts the backoff again. */
  joined(): void {
    this.inARow = 0;
  }

  /** A CRASH event. `kafkajsRestarts`: the event's `restart` flag (then kafkajs restarts it itself). */
  crashed(err: Error, kafkajsRestarts: boolean): void {
    if (kafkajsRestarts || this.gaveUp || this.opts.stopped()) return;
    const limit = this.opts.maxRestarts ?? 8;
    const n = ++this.inARow;
    if (n > limit) {
      this.gaveUp = true;
      this.reject(err);
      this.opts.onGiveUp?.(err);
      return;
    }
    const delayMs = Math.min(this.opts.maxDelayMs ?? 30_000, (this.opts.initialDelayMs ?? 500) * 2 ** (n - 1));
    this.total++;
    this.opts.onRestart?.(err, n, delayMs);
    const setTimer =
      this.opts.setTimer ??
      ((f: () => void, ms: number): void => {
        setTimeout(f, ms).unref();
      });
    setTimer(() => {
      if (this.opts.stopped()) return;
      // A run that fails before kafkajs's own crash handling (subscribe, say) counts as a crash too.
      this.opts.run().catch((runErr: unknown) => this.crashed(runErr instanceof Error ? runErr : new Error(String(runErr)), false));
    }, delayMs);
  }
}
