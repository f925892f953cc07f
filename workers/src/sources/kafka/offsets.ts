/**
 * Which Kafka offsets are safe to commit when messages finish out of order.
 *
 * Per partition the worker tracks every message it took, in offset order. A message
 * is "done" when its results are written (reply, sinks, or dead letter). The offset
 * to commit is the first offset not yet done, so a commit never passes a message
 * whose results are not all written, however the batches finish:
 *
 * ```
 *  taken:  10 11 12 13 14 15      done: 10 11 13 14      → commit 12 (12 still running)
 *  12 finishes                    done: 10 11 12 13 14   → commit 15
 * ```
 *
 * Offsets need not be contiguous (compaction and transaction markers leave gaps).
 * A partition revoked in a rebalance is forgotten: nothing is committed for it
 * again, whatever its in-flight messages do later.
 *
 * Each commit carries, as its metadata, the highest offset taken so far: a worker that
 * gets the partition next knows which messages may have been started (and answered)
 * before, and does not fail those for their deadline (see KafkaWorker).
 */

interface PartitionState {
  /** Offsets taken, in order, from `head`; done flags beside them, and whether their sink rows are buffered. */
  readonly offsets: number[];
  readonly done: boolean[];
  readonly ready: boolean[];
  head: number;
  /** Highest offset ever taken (messages at or below it are already ours). */
  highest: number;
  /** Next offset to commit that was last committed (or -1). */
  committed: number;
  /** The highest offset taken when the last commit was made (or -1). */
  highestCommitted: number;
}

export interface TopicPartitionOffset {
  readonly topic: string;
  readonly partition: number;
  /** The next offset to consume, as Kafka commits it (a string, as kafkajs wants it). */
  readonly offset: string;
  /** The highest offset taken so far (a decimal string; Kafka stores it beside the offset). */
  readonly metadata?: string;
}

/** The highest offset a previous owner had taken, from a committed offset's metadata; -1 when it says nothing. */
export function startedUpTo(metadata: string | null | undefined): number {
  const n = Number(metadata ?? '');
  return metadata !== null && metadata !== undefined && /^\d{1,18}$/.test(metadata) && Number.isSafeInteger(n) ? n : -1;
}

const key = (topic: string, partition: number): string => `${topic}\u0000${partition}`;

export class OffsetTracker {
  private readonly parts = new Map<string, PartitionState & { readonly topic: string; readonly partition: number }>();

  /**
   * Takes a message. Returns false when this offset was already taken (a redelivery
   * after a rebalance kept the partition here, or a re-fetch): do not process it again.
   */
  take(topic: string, partition: number, offset: number): boolean {
    const k = key(topic, partition);
    let p = this.parts.get(k);
    if (p === undefined) {
      p = { topic, partition, offsets: [], done: [], ready: [], head: 0, highest: -1, committed: -1, highestCommitted: -1 };
      this.parts.set(k, p);
    }
    if (offset <= p.highest) return false;
    p.highest = offset;
    p.offsets.push(offset);
    p.done.push(false);
    p.ready.push(false);
    return true;
  }

  /** Marks a message whose sink rows are buffered (or that has none): a roll may cover it before it is done. */
  ready(topic: string, partition: number, offset: number): void {
    const p = this.parts.get(key(topic, partition));
    if (p === undefined) return;
    const i = lowerBound(p.offsets, p.head, offset);
    if (p.offsets[i] === offset) p.ready[i] = true;
  }

  /**
   * The highest offset up to which every message taken is done or has its rows buffered: a roll
   * of the partition may cover up to it (rolls cover contiguous offsets). -1 when none.
   */
  readyUpTo(topic: string, partition: number): number {
    const p = this.parts.get(key(topic, partition));
    if (p === undefined) return -1;
    let i = p.head;
    while (i < p.offsets.length && (p.done[i] || p.ready[i])) i++;
    if (i < p.offsets.length) return p.offsets[i]! - 1;
    return p.highest;
  }

  /** Marks a message done. Ignored for partitions no longer tracked (revoked). */
  done(topic: string, partition: number, offset: number): void {
    const p = this.parts.get(key(topic, partition));
    if (p === undefined) return;
    const i = lowerBound(p.offsets, p.head, offset);
    if (p.offsets[i] !== offset) return;
    p.done[i] = true;
    if (i !== p.head) return;
    while (p.head < p.offsets.length && p.done[p.head]) p.head++;
    if (p.head > 1024 && p.head * 2 > p.offsets.length) {
      p.offsets.splice(0, p.head);
      p.done.splice(0, p.head);
      p.ready.splice(0, p.head);
      p.head = 0;
    }
  }

  /**
   * Positions that moved past what was last committed, or whose highest taken offset did: the
   * first offset not done (nothing past an unfinished message is ever committed), with the
   * highest offset taken as metadata.
   */
  pending(): TopicPartitionOffset[] {
    const out: TopicPartitionOffset[] = [];
    for (const p of this.parts.values()) {
      if (p.highest < 0) continue;
      const position = p.head < p.offsets.length ? p.offsets[p.head]! : p.highest + 1;
      if (position > p.committed || p.highest > p.highestCommitted) out.push({ topic: p.topic, partition: p.partition, offset: String(position), metadata: String(p.highest) });
    }
    return out;
  }

  /** Records a successful commit (never moves backwards). */
  committed(offsets: readonly TopicPartitionOffset[]): void {
    for (const o of offsets) {
      const p = this.parts.get(key(o.topic, o.partition));
      if (p === undefined) continue;
      p.committed = Math.max(p.committed, Number(o.offset));
      p.highestCommitted = Math.max(p.highestCommitted, startedUpTo(o.metadata));
    }
  }

  /**
   * Forgets what was committed, so that the next pending() offers every partition's
   * offset again. After a group re-forms or a coordinator moves, a commit that was
   * acknowledged may not be what the group holds now; committing again is harmless.
   */
  recommitAll(): void {
    for (const p of this.parts.values()) {
      p.committed = -1;
      p.highestCommitted = -1;
    }
  }

  /** Keeps only these partitions (after a rebalance); the others are forgotten. */
  retain(assigned: ReadonlyMap<string, readonly number[]>): void {
    for (const [k, p] of this.parts) {
      if (!(assigned.get(p.topic) ?? []).includes(p.partition)) this.parts.delete(k);
    }
  }

  /** Partitions tracked now. */
  partitions(): { topic: string; partition: number }[] {
    return [...this.parts.values()].map((p) => ({ topic: p.topic, partition: p.partition }));
  }
}

/** First index ≥ from whose value is ≥ x (the array is sorted). */
function lowerBound(a: readonly number[], from: number, x: number): number {
  let lo = from;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
