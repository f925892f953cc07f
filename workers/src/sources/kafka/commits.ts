/**
 * Offset commits of the Kafka worker: at most one in flight, whatever finished meanwhile goes
 * in the next; a commit that fails (a coordinator moving, a broker restarting) is kept and
 * retried by a timer, and every few seconds all positions are committed again (as Kafka's own
 * auto-commit does), so one acknowledged by a coordinator that then lost it is repaired.
 */
import type { Consumer } from 'kafkajs';
import { InferqError } from '@inferq/shared';
import { deadlineRace } from '../../deadline.js';
import type { Logger } from '../../logging.js';
import type { OffsetTracker } from './offsets.js';

/** A commit sent just before a broker went away can wait forever for its answer: give up on it after this long. */
const COMMIT_TIMEOUT_MS = 10_000;

export class Committer {
  private running: Promise<void> | undefined;
  private again = false;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Commits fail while the group re-forms; positions wait in the tracker until it has. */
  rebalancing = false;
  commits = 0;

  constructor(
    private readonly consumer: Consumer,
    private readonly tracker: OffsetTracker,
    private readonly log: Logger,
  ) {}

  /** Starts the retry timer: pending positions every second, all of them every fifth. */
  start(): void {
    let ticks = 0;
    this.timer = setInterval(() => {
      if (++ticks % 5 === 0) this.tracker.recommitAll();
      if (this.tracker.pending().length > 0) this.schedule();
    }, 1000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Commits what is pending, soon (coalescing with a commit in flight). */
  schedule(): void {
    if (this.running !== undefined) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await new Promise((r) => setImmediate(r));
        await this.once();
      } while (this.again && !this.rebalancing);
    })().finally(() => {
      this.running = undefined;
    });
  }

  /** Commits until nothing is pending or `deadline` (epoch ms) passes; what is left is run again by the next owner. */
  async flush(deadline: number): Promise<void> {
    while (Date.now() < deadline) {
      await deadlineRace(this.running ?? Promise.resolve(), deadline);
      if (this.tracker.pending().length === 0) return;
      await deadlineRace(this.once(), deadline);
      if (this.tracker.pending().length === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    this.log.warn({ pending: this.tracker.pending() }, 'could not commit the last offsets; those messages run again on the next owner');
  }

  private async once(): Promise<void> {
    if (this.rebalancing) return;
    const offsets = this.tracker.pending();
    if (offsets.length === 0) return;
    try {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new InferqError(`offset commit got no answer within ${COMMIT_TIMEOUT_MS} ms`, { retriable: true, code: 'UNAVAILABLE' })), COMMIT_TIMEOUT_MS);
      });
      await Promise.race([this.consumer.commitOffsets(offsets), timeout]).finally(() => clearTimeout(timer));
      this.tracker.committed(offsets);
      this.commits++;
      this.failures = 0;
      this.log.debug({ offsets }, 'offsets committed');
    } catch (err) {
      // Not lost: the tracker still holds them; the next finished message, or the timer, commits again.
      this.failures++;
      if (this.failures % 10 === 3) this.log.warn({ err, offsets, failures: this.failures }, 'offset commits keep failing; retrying');
      else this.log.debug({ err, offsets }, 'offset commit failed; will retry');
    }
  }
}
