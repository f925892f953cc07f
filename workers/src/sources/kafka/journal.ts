/**
 * What a Kafka worker knows of its Parquet rolls: their file names. A roll of a partition
 * covers a contiguous range of its offsets (`part-<topic>-<partition>-<first>-<last>-…`),
 * and is committed only after it is published; so on (re)assignment the highest `last` of a
 * partition's complete rolls in a sink says which messages that sink already holds (the
 * files of an incomplete roll, left by a crash, are deleted: their messages come again).
 */
import { printable } from '@inferq/shared';
import type { Logger } from '../../logging.js';
import type { ParquetSink } from '../../sinks/parquet-sink.js';
import type { RollJournal, SinkJob } from '../../sinks/sink.js';
import type { SinkSet } from '../../sinks/sink-set.js';
import type { OffsetTracker } from './offsets.js';

/** A sink group: one Kafka partition (its roll files are named after it). */
export const sinkGroup = (topic: string, partition: number): string => `${topic}-${partition}`;

export class KafkaRolls implements RollJournal {
  /** Recovery of each sink for each group, started once per assignment. */
  private readonly marks = new Map<string, Promise<number>>();
  private readonly partitions = new Map<string, { readonly topic: string; readonly partition: number }>();

  constructor(
    private readonly tracker: OffsetTracker,
    private readonly log: Logger,
  ) {}

  /** A partition assigned to this worker. */
  assign(topic: string, partition: number): string {
    const group = sinkGroup(topic, partition);
    this.partitions.set(group, { topic, partition });
    return group;
  }

  /** A partition gone to another worker: what was recovered for it is forgotten. */
  revoke(group: string): void {
    this.partitions.delete(group);
    for (const k of [...this.marks.keys()]) if (k.endsWith(`\u0000${group}`)) this.marks.delete(k);
  }

  async written(job: SinkJob, targets: readonly { readonly key: string; readonly sink: ParquetSink }[]): Promise<Set<string>> {
    const done = new Set<string>();
    const position = job.position;
    if (position === undefined) return done;
    for (const t of targets) if (position.seq <= (await this.watermark(t.key, t.sink, position.group))) done.add(t.key);
    return done;
  }

  /** The lowest watermark of the worker's own sinks for a group: messages at or below it are answered and written. */
  async skipUpTo(group: string, sinks: SinkSet): Promise<number> {
    let low = Infinity;
    for (const sink of sinks.defaults()) low = Math.min(low, await this.watermark(sinks.keyOf(sink), sink, group));
    return low === Infinity ? -1 : low;
  }

  /** File names carry the ranges: nothing to record. */
  async record(): Promise<void> {}

  async forget(): Promise<void> {}

  rollableUpTo(group: string): number | undefined {
    const p = this.partitions.get(group);
    return p === undefined ? -1 : this.tracker.readyUpTo(p.topic, p.partition);
  }

  /** The highest `last` of the complete rolls of `group` in `sink`, after removing incomplete ones (retried until the sink answers). */
  private watermark(key: string, sink: ParquetSink, group: string): Promise<number> {
    const k = `${key}\u0000${group}`;
    let p = this.marks.get(k);
    if (p === undefined) {
      p = (async () => {
        for (let attempt = 1; ; attempt++) {
          try {
            return await sink.recover(group);
          } catch (err) {
            this.log.warn({ err, sink: printable(key), group, attempt }, 'could not read the sink to recover; retrying');
            await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** Math.min(attempt, 5))));
          }
        }
      })();
      this.marks.set(k, p);
    }
    return p;
  }
}
