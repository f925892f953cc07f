/** A consumer group's lag on a topic, per partition: what the group has still to read. */
import type { Admin } from 'kafkajs';

export interface PartitionLag {
  readonly partition: number;
  /** The group's committed offset (the next message it will read), or -1 when it has committed none. */
  readonly committed: number;
  /** The first offset kept by the broker (retention may have removed older ones). */
  readonly low: number;
  /** The offset the next message will get. */
  readonly high: number;
  /** Messages not yet committed by the group: high − committed, or high − low before its first commit. */
  readonly lag: number;
}

/** Lag of `group` on every partition of `topic`, in partition order. */
export async function consumerLag(admin: Admin, group: string, topic: string): Promise<PartitionLag[]> {
  const [ends, [committed]] = await Promise.all([admin.fetchTopicOffsets(topic), admin.fetchOffsets({ groupId: group, topics: [topic] })]);
  const byPartition = new Map((committed?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
  return ends
    .map((e) => {
      const high = Number(e.high);
      const low = Number(e.low);
      const c = byPartition.get(e.partition) ?? -1;
      return { partition: e.partition, committed: c, low, high, lag: Math.max(0, high - (c < 0 ? low : Math.max(c, low))) };
    })
    .sort((a, b) => a.partition - b.partition);
}
