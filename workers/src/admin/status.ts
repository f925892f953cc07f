/**
 * `inferq queue status`: what a queue holds and who consumes it.
 *
 * Redis: BullMQ's job counts per state, the dead-letter stream's length, and the workers
 * connected to the queue (BullMQ names their connections; CLIENT LIST reads them).
 * Kafka: the group's lag per partition and which member owns it, the group's members, and
 * the messages in the dead-letter topic.
 */
import kafkajs from 'kafkajs';
import type { Admin } from 'kafkajs';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { ConfigError } from '@inferq/shared';
import { JOB_STATES, queueCounts } from '../sources/redis/counts.js';
import type { JobState } from '../sources/redis/counts.js';
import { consumerLag } from '../sources/kafka/lag.js';
import type { PartitionLag } from '../sources/kafka/lag.js';
import { renderTable } from './table.js';

const { AssignerProtocol } = kafkajs;

export interface RedisConsumer {
  /** The worker's name (inferq workers: host:pid). */
  readonly name: string;
  readonly addr: string;
  /** Seconds connected, and idle. */
  readonly ageSeconds: number;
  readonly idleSeconds: number;
}

export interface RedisStatus {
  readonly transport: 'redis';
  readonly prefix: string;
  readonly queue: string;
  readonly jobs: Readonly<Record<JobState, number>>;
  readonly deadLetters: number;
  /** The workers connected, or undefined when the server does not say (CLIENT LIST refused). */
  readonly consumers: readonly RedisConsumer[] | undefined;
  /** Why consumers is undefined. */
  readonly consumersError?: string;
}

export async function redisStatus(redis: Redis, prefix: string, queue: string): Promise<RedisStatus> {
  const counts = await queueCounts(redis, prefix, queue);
  const q = new Queue(queue, { connection: redis, prefix, skipVersionCheck: true });
  try {
    const clients = await q.getWorkers();
    // BullMQ's answer when CLIENT LIST is not offered (a managed Redis): no client has an address.
    if (clients.some((c) => c['addr'] === undefined)) return { transport: 'redis', prefix, queue, ...counts, consumers: undefined, consumersError: 'the server does not list its clients' };
    return { transport: 'redis', prefix, queue, ...counts, consumers: workerClients(clients) };
  } catch (err) {
    // An ACL that denies CLIENT LIST leaves the counts worth showing.
    return { transport: 'redis', prefix, queue, ...counts, consumers: undefined, consumersError: (err as Error).message };
  } finally {
    await q.close();
  }
}

/** One entry per worker: BullMQ names a worker's connections `<prefix>:<queue>:w:<worker name>`. */
export function workerClients(clients: readonly Record<string, string>[]): RedisConsumer[] {
  const byName = new Map<string, RedisConsumer>();
  for (const c of clients) {
    const raw = c['rawname'] ?? '';
    const at = raw.indexOf(':w:');
    const name = at < 0 ? '' : raw.slice(at + 3);
    const age = Number(c['age'] ?? 0);
    const prior = byName.get(name);
    if (prior === undefined || age > prior.ageSeconds) byName.set(name, { name, addr: c['addr'] ?? '', ageSeconds: age, idleSeconds: Number(c['idle'] ?? 0) });
  }
  return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
}

export interface KafkaMember {
  readonly memberId: string;
  readonly clientId: string;
  readonly host: string;
  /** The partitions of the topic assigned to it. */
  readonly partitions: readonly number[];
}

export interface KafkaStatus {
  readonly transport: 'kafka';
  readonly topic: string;
  readonly group: string;
  /** The group's state (Stable, Empty, PreparingRebalance, Dead…). */
  readonly state: string;
  readonly partitions: readonly (PartitionLag & { readonly owner: string })[];
  /** Sum of the partitions' lag. */
  readonly lag: number;
  readonly members: readonly KafkaMember[];
  readonly deadLetterTopic: string;
  /** Messages in the dead-letter topic (high − low summed); undefined when it does not exist. */
  readonly deadLetters: number | undefined;
}

export async function kafkaStatus(admin: Admin, topic: string, group: string, deadLetterTopic: string): Promise<KafkaStatus> {
  const topics = await admin.listTopics();
  if (!topics.includes(topic)) throw new ConfigError(`topic "${topic}" does not exist`);
  const [lag, described, dead] = await Promise.all([
    consumerLag(admin, group, topic),
    admin.describeGroups([group]),
    topics.includes(deadLetterTopic) ? admin.fetchTopicOffsets(deadLetterTopic) : Promise.resolve(undefined),
  ]);
  const g = described.groups[0];
  const members = (g?.members ?? []).map((m) => ({ memberId: m.memberId, clientId: m.clientId, host: m.clientHost, partitions: assignedPartitions(m.memberAssignment, topic) }));
  const owner = new Map<number, string>();
  for (const m of members) for (const p of m.partitions) owner.set(p, m.clientId === '' ? m.memberId : `${m.clientId}@${m.host}`);
  return {
    transport: 'kafka',
    topic,
    group,
    state: g?.state ?? 'Unknown',
    partitions: lag.map((p) => ({ ...p, owner: owner.get(p.partition) ?? '' })),
    lag: lag.reduce((n, p) => n + p.lag, 0),
    members,
    deadLetterTopic,
    deadLetters: dead?.reduce((n, p) => n + Number(p.high) - Number(p.low), 0),
  };
}

/** The partitions of `topic` a member's assignment holds ([] when it holds none or cannot be read). */
function assignedPartitions(assignment: Buffer, topic: string): number[] {
  if (assignment.byteLength === 0) return [];
  const decoded = AssignerProtocol.MemberAssignment.decode(assignment);
  return [...(decoded?.assignment[topic] ?? [])].sort((a, b) => a - b);
}

/** The status as text tables. */
export function formatStatus(s: RedisStatus | KafkaStatus): string {
  if (s.transport === 'redis') {
    const head = `queue "${s.queue}" (prefix "${s.prefix}")\n\n`;
    const states = renderTable(['STATE', 'JOBS'], [...JOB_STATES.map((st) => [st, s.jobs[st]] as const), ['dead letters', s.deadLetters]]);
    const consumers =
      s.consumers === undefined
        ? `consumers: unknown (${s.consumersError ?? ''})\n`
        : `consumers: ${s.consumers.length}\n` + (s.consumers.length === 0 ? '' : renderTable(['WORKER', 'ADDRESS', 'CONNECTED', 'IDLE'], s.consumers.map((c) => [c.name, c.addr, `${c.ageSeconds} s`, `${c.idleSeconds} s`])));
    return `${head}${states}\n${consumers}`;
  }
  const head = `topic "${s.topic}", group "${s.group}" (${s.state})\n\n`;
  const parts = renderTable(['PARTITION', 'COMMITTED', 'LOW', 'HIGH', 'LAG', 'OWNER'], s.partitions.map((p) => [p.partition, p.committed < 0 ? '-' : p.committed, p.low, p.high, p.lag, p.owner === '' ? '-' : p.owner]));
  const dead = `dead letters (${s.deadLetterTopic}): ${s.deadLetters === undefined ? 'no such topic' : s.deadLetters}\n`;
  const members =
    `members: ${s.members.length}\n` + (s.members.length === 0 ? '' : renderTable(['MEMBER', 'CLIENT', 'HOST', 'PARTITIONS'], s.members.map((m) => [m.memberId, m.clientId, m.host, m.partitions.join(',')])));
  return `${head}${parts}total lag: ${s.lag}\n${dead}\n${members}`;
}
