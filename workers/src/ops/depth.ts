/**
 * Reads the depth of the watched sources (queue counts, consumer lag) for a scrape: one read
 * at a time shared by every gauge of the scrape, each scrape waiting for it at most
 * `timeoutMs`. A source that is down never hangs a scrape: its series are left out until a
 * read succeeds again (a read still hanging is not started twice).
 */
import { deadlineRace } from '../deadline.js';
import type { Logger } from '../logging.js';
import type { Source, SourceDepth } from '../sources/source.js';

/** A read this recent is served again (the gauges of one scrape share it). */
const FRESH_MS = 500;

interface Latest {
  readonly at: number;
  readonly depth: SourceDepth;
}

export class DepthReader {
  private readonly sources: Source[] = [];
  private readonly latest = new Map<Source, Latest>();
  private reading: Promise<void> | undefined;
  private readAt = -Infinity;
  private lastWarn = 0;

  constructor(
    private readonly log: Logger,
    private readonly timeoutMs: number,
    /** The clock of freshness (tests pass their own); the wait itself is on real time. */
    private readonly now: () => number = Date.now,
  ) {}

  watch(source: Source): void {
    if (source.depth !== undefined && !this.sources.includes(source)) this.sources.push(source);
  }

  /** The depth of every source read within this scrape's wait; a source not read in time is left out. */
  async read(): Promise<SourceDepth[]> {
    if (this.sources.length === 0) return [];
    const started = this.now();
    if (this.reading === undefined && started - this.readAt >= FRESH_MS) {
      this.readAt = started;
      this.reading = this.readAll().finally(() => (this.reading = undefined));
    }
    if (this.reading !== undefined) await deadlineRace(this.reading, Date.now() + this.timeoutMs);
    const out: SourceDepth[] = [];
    for (const l of this.latest.values()) if (l.at >= this.readAt) out.push(l.depth);
    return out;
  }

  private async readAll(): Promise<void> {
    await Promise.all(
      this.sources.map(async (s) => {
        try {
          const depth = await s.depth!();
          if (depth === undefined) this.latest.delete(s);
          else this.latest.set(s, { at: this.now(), depth });
        } catch (err) {
          this.latest.delete(s);
          // A server down for long fails every scrape: one line a minute.
          if (Date.now() - this.lastWarn > 60_000) {
            this.lastWarn = Date.now();
            this.log.warn({ err, transport: s.name }, 'could not read the queue depth for /metrics');
          }
        }
      }),
    );
  }
}
