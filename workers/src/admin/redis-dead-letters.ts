/**
 * Dead letters of a Redis queue (`<prefix>:<queue>:dead`, a stream): list, show, replay, purge.
 *
 * ```
 *  list / show     XRANGE in pages (never the whole stream in memory); job ids are searched
 *  replay          the letter's payload copy ─► checked (decodeEnvelope) ─► Producer.enqueue
 *                  (same job id unless --new-id; a failed or completed job of that id is removed
 *                  first, a waiting or active one is left alone and the letter is not replayed)
 *                  ─► the letter and its copy are deleted
 *  purge           XDEL the entries, DEL their payload copies
 * ```
 *
 * A scan stops at the last entry that existed when it started: letters written meanwhile (a
 * replayed job failing again) are not replayed twice by one `--all`.
 */
import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { Producer } from '@inferq/producer';
import { printable, redisKeys } from '@inferq/shared';
import type { RedisKeys } from '@inferq/shared';
import { execAll } from '../sources/redis/runs.js';
import { deadPayloadPrefix, replayJobs } from './letter-payload.js';

/** One entry of the dead-letter stream, as the worker wrote it (sources/redis/replies.ts). */
export interface RedisLetter {
  /** The stream entry id ("1718000000000-0"). */
  readonly entry: string;
  /** The failed job's id (a packed job's own). */
  readonly id: string;
  readonly code: string;
  readonly reason: string;
  readonly retriable: boolean;
  readonly kind: string;
  readonly model: string;
  readonly version: string;
  readonly attempts: number;
  /** When it was written (epoch ms). */
  readonly ts: number | undefined;
  /** The queue job it came from (a pack's id for a packed job; '' from workers before payload copies). */
  readonly job: string;
  /** The key of its payload copy, '' when none was kept. */
  readonly payload: string;
  readonly payloadBytes: number | undefined;
}

/** A stream entry's fields as a letter; missing fields are empty (entries are untrusted). */
export function parseLetter(entry: string, flat: readonly string[]): RedisLetter {
  const f = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) f.set(flat[i]!, flat[i + 1]!);
  const s = (k: string): string => f.get(k) ?? '';
  const n = (k: string): number | undefined => (/^\d+$/.test(s(k)) ? Number(s(k)) : undefined);
  return {
    entry,
    id: s('id'),
    code: s('code'),
    reason: s('reason'),
    retriable: s('retriable') === 'true',
    kind: s('kind'),
    model: s('model'),
    version: s('version'),
    attempts: n('attempts') ?? 0,
    ts: n('ts'),
    job: s('job'),
    payload: s('payload'),
    payloadBytes: n('payloadBytes'),
  };
}

const ENTRY_ID = /^\d+-\d+$/;
const PAGE = 500;

/** What became of one dead letter in a replay or purge. */
export interface LetterResult {
  readonly letter: RedisLetter;
  readonly ok: boolean;
  /** The ids the replay enqueued (more than one when the letter names a whole pack). */
  readonly enqueued: readonly string[];
  readonly reason?: string;
}

export interface ReplayOptions {
  /** Enqueue under fresh ids instead of the letters' own. */
  readonly newId: boolean;
  /** Queue to enqueue into. Default: the letters' own queue. */
  readonly toQueue?: string;
  /** The Producer's connect timeout. */
  readonly connectTimeoutMs: number;
}

export class RedisDeadLetters {
  readonly keys: RedisKeys;

  constructor(
    private readonly redis: Redis,
    readonly prefix: string,
    readonly queue: string,
  ) {
    this.keys = redisKeys(prefix, queue);
  }

  count(): Promise<number> {
    return this.redis.xlen(this.keys.deadLetters);
  }

  /** Every letter, oldest first, up to the last entry that exists now; read a page at a time. */
  async *scan(): AsyncGenerator<RedisLetter> {
    const last = (await this.redis.xrevrange(this.keys.deadLetters, '+', '-', 'COUNT', 1))[0]?.[0];
    if (last === undefined) return;
    let start = '-';
    for (;;) {
      const page = await this.redis.xrange(this.keys.deadLetters, start, last, 'COUNT', PAGE);
      for (const [entry, flat] of page) yield parseLetter(entry, flat);
      if (page.length < PAGE) return;
      start = `(${page[page.length - 1]![0]}`;
    }
  }

  /** Up to `limit` letters (oldest first), of one code when given. */
  async list(limit: number, code?: string): Promise<RedisLetter[]> {
    const out: RedisLetter[] = [];
    for await (const l of this.scan()) {
      if (code !== undefined && l.code !== code) continue;
      out.push(l);
      if (out.length >= limit) break;
    }
    return out;
  }

  /**
   * The letters `refs` name: a stream entry id names its entry; anything else is a job id and
   * names every letter of that job, oldest first. Refs that name nothing are returned apart.
   */
  async resolve(refs: readonly string[]): Promise<{ found: Map<string, RedisLetter[]>; missing: string[] }> {
    const found = new Map<string, RedisLetter[]>();
    const byJob = new Set<string>();
    for (const ref of refs) {
      const entry = ENTRY_ID.test(ref) ? await this.redis.xrange(this.keys.deadLetters, ref, ref) : [];
      if (entry.length > 0) found.set(ref, [parseLetter(entry[0]![0], entry[0]![1])]);
      else byJob.add(ref);
    }
    if (byJob.size > 0) {
      for await (const l of this.scan()) {
        if (!byJob.has(l.id)) continue;
        found.set(l.id, [...(found.get(l.id) ?? []), l]);
      }
    }
    return { found, missing: refs.filter((r) => !found.has(r)) };
  }

  /** The letter's payload copy, or why there is none. */
  async payload(l: RedisLetter): Promise<Buffer | string> {
    if (l.payload === '') return `no payload was kept (${l.code === '' ? 'no code' : l.code}: a payload that was missing, too large or not this queue's, or a worker from before payload copies)`;
    // A forged entry must not make the tool read (and enqueue) any other key.
    if (!l.payload.startsWith(deadPayloadPrefix(this.keys))) return `its payload key "${printable(l.payload)}" is not one of this queue's dead-letter payload keys`;
    const bytes = await this.redis.getBuffer(l.payload);
    return bytes ?? 'its payload copy has expired';
  }

  /** Replays letters one by one through the SDK; each result says whether it went out and why not. */
  async replay(letters: AsyncIterable<RedisLetter> | Iterable<RedisLetter>, o: ReplayOptions, onResult: (r: LetterResult) => void): Promise<void> {
    const target = o.toQueue ?? this.queue;
    const producer = new Producer({ redis: this.redis, queue: target, prefix: this.prefix, connectTimeoutMs: o.connectTimeoutMs });
    const queue = new Queue(target, { connection: this.redis, prefix: this.prefix, skipVersionCheck: true });
    try {
      for await (const l of letters) onResult(await this.replayOne(l, o, producer, queue, redisKeys(this.prefix, target)));
    } finally {
      await producer.close();
      await queue.close();
    }
  }

  private async replayOne(l: RedisLetter, o: ReplayOptions, producer: Producer, queue: Queue, target: RedisKeys): Promise<LetterResult> {
    const bytes = await this.payload(l);
    if (typeof bytes === 'string') return { letter: l, ok: false, enqueued: [], reason: bytes };
    const replay = replayJobs(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), l.id);
    if (typeof replay === 'string') return { letter: l, ok: false, enqueued: [], reason: replay };
    const jobs = replay.jobs;
    if (!o.newId) {
      for (const j of jobs) {
        const blocked = await clearFinishedJob(this.redis, queue, j.id, target);
        if (blocked !== undefined) return { letter: l, ok: false, enqueued: [], reason: blocked };
      }
    }
    const enqueued: string[] = [];
    for (const j of jobs) enqueued.push(await producer.enqueue(j.model, j.tensors, { ...j.options, jobId: o.newId ? randomUUID() : j.id }));
    await this.delete([l]);
    return { letter: l, ok: true, enqueued };
  }

  /** Deletes letters and their payload copies. */
  async delete(letters: readonly RedisLetter[]): Promise<void> {
    if (letters.length === 0) return;
    const prefix = deadPayloadPrefix(this.keys);
    const tx = this.redis.multi();
    tx.xdel(this.keys.deadLetters, ...letters.map((l) => l.entry));
    const copies = letters.map((l) => l.payload).filter((k) => k.startsWith(prefix));
    if (copies.length > 0) tx.del(...copies);
    await execAll(tx);
  }
}

/**
 * Makes room for a job id in the target queue: BullMQ keeps one job per id and answers an add
 * of an existing id with that job, so a failed or completed job of that id is removed first
 * (with its payload key). Returns why not when the id is still waiting or running.
 */
async function clearFinishedJob(redis: Redis, queue: Queue, id: string, keys: RedisKeys): Promise<string | undefined> {
  const job = await queue.getJob(id);
  if (job === undefined) return undefined;
  const state = await job.getState();
  if (state !== 'failed' && state !== 'completed' && state !== 'unknown') {
    return `job "${printable(id)}" is still in queue "${queue.name}" (${state}): not replayed (use --new-id to enqueue a copy under a new id)`;
  }
  const key = (job.data as { key?: unknown } | undefined)?.key;
  await job.remove();
  if (typeof key === 'string' && key.startsWith(keys.payloadPrefix)) await redis.del(key);
  return undefined;
}
