/**
 * `inferq dead-letters list|show|replay|purge` for both transports: what each does, what it
 * prints (text or JSON) and when it fails. The CLI file only parses flags; docs/dead-letters.md
 * describes the behaviour.
 */
import { ConfigError, InferqError, isErrorCode, ERROR_CODES } from '@inferq/shared';
import { KafkaDeadLetters, KafkaReplayer, POSITION } from './kafka-dead-letters.js';
import type { KafkaLetter, KafkaLetterMessage, KafkaReplayResult } from './kafka-dead-letters.js';
import { kafkaLetterFields, kafkaLetterTable, redisLetterFields, redisLetterTable, showText, summarizePayload } from './letters-output.js';
import { RedisDeadLetters } from './redis-dead-letters.js';
import type { LetterResult, RedisLetter } from './redis-dead-letters.js';
import { withKafka, withRedis } from './session.js';
import type { KafkaTopicSpec, QueueSpec, RedisQueueSpec } from './session.js';
import { safeJson } from './table.js';

export type Write = (text: string) => void;

export interface ListOptions {
  readonly limit: number;
  readonly code?: string | undefined;
  readonly json: boolean;
}

export interface SelectOptions {
  /** Every letter (instead of refs). */
  readonly all: boolean;
  /** Only letters of this error code. */
  readonly code?: string | undefined;
  readonly json: boolean;
}

export interface ReplayOptions extends SelectOptions {
  readonly newId: boolean;
  /** Redis: the queue to enqueue into (default the letters' own). */
  readonly toQueue?: string | undefined;
  /** Kafka: the topic to enqueue into (default the request topic). */
  readonly toTopic?: string | undefined;
}

export interface PurgeOptions extends SelectOptions {
  readonly yes: boolean;
}

/** A code given with --code must be one of the closed list (a typo would match nothing, silently). */
export function checkCode(code: string | undefined): void {
  if (code !== undefined && !isErrorCode(code)) throw new ConfigError(`--code "${code}": not an error code (one of ${ERROR_CODES.join(', ')})`);
}

/** Refs or --all, never both nor neither. */
function checkSelection(refs: readonly string[], o: SelectOptions, verb: string): void {
  checkCode(o.code);
  if (o.all && refs.length > 0) throw new ConfigError(`${verb}: give dead letters or --all, not both`);
  if (!o.all && refs.length === 0) throw new ConfigError(`${verb}: name the dead letters (job ids, entry ids or Kafka positions) or pass --all`);
}

export async function listDeadLetters(spec: QueueSpec, o: ListOptions, write: Write): Promise<void> {
  checkCode(o.code);
  if (spec.transport === 'redis') {
    await withRedis(spec, async (redis) => {
      const dl = new RedisDeadLetters(redis, spec.prefix, spec.queue);
      const letters = await dl.list(o.limit, o.code);
      const total = await dl.count();
      if (o.json) write(safeJson({ transport: 'redis', stream: dl.keys.deadLetters, total, letters }));
      else write(`${letters.length === 0 ? '' : redisLetterTable(letters)}${letters.length} shown of ${total} dead letters in ${dl.keys.deadLetters}\n`);
    });
    return;
  }
  await withKafka(spec, async (kafka, admin) => {
    const dl = new KafkaDeadLetters(kafka, admin, spec.deadLetterTopic);
    const letters: KafkaLetter[] = [];
    const read = await dl.read(({ letter }) => {
      if (o.code === undefined || letter.code === o.code) letters.push(letter);
      return letters.length < o.limit;
    }, { idleMs: spec.idleMs });
    const partial = !read.complete && letters.length < o.limit;
    if (o.json) write(safeJson({ transport: 'kafka', topic: spec.deadLetterTopic, total: read.total, complete: !partial, letters }));
    else write(`${letters.length === 0 ? '' : kafkaLetterTable(letters)}${letters.length} shown of ${read.total} messages in ${spec.deadLetterTopic}${partial ? ` (the read stopped: nothing came for ${spec.idleMs} ms)` : ''}\n`);
  });
}

export async function showDeadLetter(spec: QueueSpec, ref: string, o: { json: boolean }, write: Write): Promise<void> {
  if (spec.transport === 'redis') {
    await withRedis(spec, async (redis) => {
      const dl = new RedisDeadLetters(redis, spec.prefix, spec.queue);
      const letter = (await dl.resolve([ref])).found.get(ref)?.at(-1);
      if (letter === undefined) throw new ConfigError(`no dead letter "${ref}" in ${dl.keys.deadLetters} (give a job id or a stream entry id from \`inferq dead-letters list\`)`);
      const bytes = await dl.payload(letter);
      const payload = summarizePayload(typeof bytes === 'string' ? bytes : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      write(o.json ? safeJson({ letter, payload }) : showText(redisLetterFields(letter, dl.keys.deadLetters), payload));
    });
    return;
  }
  await withKafka(spec, async (kafka, admin) => {
    const dl = new KafkaDeadLetters(kafka, admin, spec.deadLetterTopic);
    const found = await findKafka(dl, [ref], spec.idleMs);
    const m = found.get(ref);
    if (m === undefined) throw new ConfigError(`no dead letter "${ref}" in topic ${spec.deadLetterTopic} (give <partition>:<offset> or a job id)`);
    const v = m.message.value;
    const payload = summarizePayload(v === null ? undefined : new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
    write(o.json ? safeJson({ letter: m.letter, payload }) : showText(kafkaLetterFields(m.letter, spec.deadLetterTopic), payload));
  });
}

/**
 * The Kafka letters `refs` name: "<partition>:<offset>" that position, anything else a job id
 * (its newest letter). Reads only the partitions positions name when no job id is asked for.
 */
async function findKafka(dl: KafkaDeadLetters, refs: readonly string[], idleMs: number): Promise<Map<string, KafkaLetterMessage>> {
  // "0:007" and "0:7" name the same message.
  const canonical = (r: string): string => r.split(':').map((n) => BigInt(n).toString()).join(':');
  const positions = new Map(refs.filter((r) => POSITION.test(r)).map((r) => [canonical(r), r]));
  const jobs = new Set(refs.filter((r) => !POSITION.test(r)));
  const found = new Map<string, KafkaLetterMessage>();
  const partitions = jobs.size === 0 ? new Set([...positions.keys()].map((p) => Number(p.split(':')[0]))) : undefined;
  await dl.read(
    (m) => {
      const ref = positions.get(`${m.letter.partition}:${m.letter.offset}`);
      if (ref !== undefined) found.set(ref, m);
      if (jobs.has(m.letter.id)) found.set(m.letter.id, m);
      return jobs.size > 0 || found.size < positions.size;
    },
    { idleMs, ...(partitions === undefined ? {} : { partitions }) },
  );
  return found;
}

export async function replayDeadLetters(spec: QueueSpec, refs: readonly string[], o: ReplayOptions, write: Write): Promise<void> {
  checkSelection(refs, o, 'replay');
  const lines: string[] = [];
  const results: { ref: string; job: string; ok: boolean; enqueued: readonly string[]; reason?: string | undefined }[] = [];
  const report = (ref: string, job: string, ok: boolean, enqueued: readonly string[], reason?: string): void => {
    results.push({ ref, job, ok, enqueued, ...(reason === undefined ? {} : { reason }) });
    if (!o.json) write(ok ? `replayed ${ref} (job ${job}) as ${enqueued.join(', ')}\n` : `not replayed ${ref} (job ${job}): ${reason ?? ''}\n`);
  };
  if (spec.transport === 'redis') await replayRedis(spec, refs, o, report);
  else await replayKafka(spec, refs, o, report, lines);
  const failed = results.filter((r) => !r.ok).length;
  if (o.json) write(safeJson({ replayed: results.filter((r) => r.ok), failed: results.filter((r) => !r.ok) }));
  else write(`${results.length - failed} replayed, ${failed} not replayed\n${lines.join('')}`);
  if (failed > 0) throw new InferqError(`${failed} of ${results.length} dead letters were not replayed`);
}

async function replayRedis(spec: RedisQueueSpec, refs: readonly string[], o: ReplayOptions, report: (ref: string, job: string, ok: boolean, enqueued: readonly string[], reason?: string) => void): Promise<void> {
  await withRedis(spec, async (redis) => {
    const dl = new RedisDeadLetters(redis, spec.prefix, spec.queue);
    const wanted = (l: RedisLetter): boolean => o.code === undefined || l.code === o.code;
    let letters: AsyncIterable<RedisLetter> | Iterable<RedisLetter>;
    if (o.all) letters = filterAsync(dl.scan(), wanted);
    else {
      const { found, missing } = await dl.resolve(refs);
      for (const ref of missing) report(ref, ref, false, [], `no such dead letter in ${dl.keys.deadLetters}`);
      // A job id replays its newest letter: an older one is the same job failing earlier.
      letters = uniqueEntries([...found.values()].map((ls) => ls.at(-1)!)).filter(wanted);
    }
    const done = (r: LetterResult): void => report(r.letter.entry, r.letter.id, r.ok, r.enqueued, r.reason);
    await dl.replay(letters, { newId: o.newId, toQueue: o.toQueue, connectTimeoutMs: spec.timeoutMs }, done);
  });
}

async function replayKafka(spec: KafkaTopicSpec, refs: readonly string[], o: ReplayOptions, report: (ref: string, job: string, ok: boolean, enqueued: readonly string[], reason?: string) => void, notes: string[]): Promise<void> {
  await withKafka(spec, async (kafka, admin) => {
    const dl = new KafkaDeadLetters(kafka, admin, spec.deadLetterTopic);
    const replayer = new KafkaReplayer(spec, o.toTopic ?? spec.topic);
    const last = new Map<number, string>();
    const done = (r: KafkaReplayResult): void => {
      report(`${r.letter.partition}:${r.letter.offset}`, r.letter.id, r.ok, r.enqueued, r.reason);
      last.set(r.letter.partition, r.letter.offset);
    };
    try {
      if (o.all) {
        const read = await dl.read(async (m) => {
          if (o.code === undefined || m.letter.code === o.code) done(await replayer.replay(m, o.newId));
          return true;
        }, { idleMs: spec.idleMs });
        if (!read.complete) report('-', '-', false, [], `the read stopped before the end of ${spec.deadLetterTopic}: nothing came for ${spec.idleMs} ms (the letters after the ones above were not replayed)`);
      } else {
        const found = await findKafka(dl, refs, spec.idleMs);
        for (const ref of refs) {
          const m = found.get(ref);
          if (m === undefined) report(ref, ref, false, [], `no such dead letter in ${spec.deadLetterTopic}`);
          else if (o.code === undefined || m.letter.code === o.code) done(await replayer.replay(m, o.newId));
        }
      }
    } finally {
      await replayer.close();
    }
    // Kafka keeps what it was sent: replayed letters stay until purged.
    if (last.size > 0) notes.push(`replayed letters stay in ${spec.deadLetterTopic}; to drop them: inferq dead-letters purge --transport kafka ${[...last].map(([p, off]) => `${p}:${off}`).join(' ')} --yes\n`);
  });
}

export async function purgeDeadLetters(spec: QueueSpec, refs: readonly string[], o: PurgeOptions, write: Write): Promise<void> {
  checkSelection(refs, o, 'purge');
  if (spec.transport === 'redis') {
    await withRedis(spec, async (redis) => {
      const dl = new RedisDeadLetters(redis, spec.prefix, spec.queue);
      const wanted = (l: RedisLetter): boolean => o.code === undefined || l.code === o.code;
      let missing: string[] = [];
      let selected: AsyncIterable<RedisLetter> | Iterable<RedisLetter>;
      if (o.all) selected = filterAsync(dl.scan(), wanted);
      else {
        const r = await dl.resolve(refs);
        selected = uniqueEntries([...r.found.values()].flat()).filter(wanted);
        missing = r.missing;
      }
      // A page at a time: --all on a long stream never holds it all.
      let count = 0;
      let page: RedisLetter[] = [];
      for await (const l of selected) {
        count++;
        if (!o.yes) continue;
        page.push(l);
        if (page.length >= 500) {
          await dl.delete(page);
          page = [];
        }
      }
      if (!o.yes) throw new ConfigError(`would purge ${count} dead letters from ${dl.keys.deadLetters}: pass --yes to delete them`);
      await dl.delete(page);
      write(o.json ? safeJson({ purged: count, missing }) : `purged ${count} dead letters from ${dl.keys.deadLetters}${missing.length === 0 ? '' : ` (not found: ${missing.join(', ')})`}\n`);
    });
    return;
  }
  if (o.code !== undefined) throw new ConfigError('purge --code: Kafka deletes no single message, only every message below an offset: give <partition>:<offset> positions or --all');
  const bad = refs.filter((r) => !POSITION.test(r));
  if (bad.length > 0) throw new ConfigError(`purge ${bad.join(' ')}: Kafka deletes no single message; give <partition>:<offset> (that message and every one before it in its partition) or --all`);
  await withKafka(spec, async (kafka, admin) => {
    const dl = new KafkaDeadLetters(kafka, admin, spec.deadLetterTopic);
    const ranges = await dl.ranges();
    const upTo = new Map<number, number>();
    if (o.all) for (const r of ranges) upTo.set(r.partition, r.high);
    for (const ref of refs) {
      const [p, off] = ref.split(':').map(Number) as [number, number];
      if (!ranges.some((r) => r.partition === p)) throw new ConfigError(`purge ${ref}: topic ${spec.deadLetterTopic} has no partition ${p}`);
      upTo.set(p, Math.max(upTo.get(p) ?? 0, off + 1));
    }
    const count = ranges.reduce((n, r) => n + Math.max(0, Math.min(upTo.get(r.partition) ?? r.low, r.high) - r.low), 0);
    if (!o.yes) throw new ConfigError(`would delete ${count} messages from ${spec.deadLetterTopic} (${[...upTo].map(([p, off]) => `partition ${p} below offset ${off}`).join(', ')}): pass --yes to delete them`);
    const clamped = new Map([...upTo].map(([p, off]) => [p, Math.min(off, ranges.find((r) => r.partition === p)!.high)]));
    await dl.purge(clamped);
    write(o.json ? safeJson({ deleted: count, below: Object.fromEntries(clamped) }) : `deleted ${count} messages from ${spec.deadLetterTopic} (${[...clamped].map(([p, off]) => `partition ${p} below offset ${off}`).join(', ')})\n`);
  });
}

async function* filterAsync<T>(items: AsyncIterable<T>, keep: (item: T) => boolean): AsyncGenerator<T> {
  for await (const item of items) if (keep(item)) yield item;
}

/** Each entry once (an entry id and its job id may name the same letter). */
function uniqueEntries(letters: readonly RedisLetter[]): RedisLetter[] {
  return [...new Map(letters.map((l) => [l.entry, l])).values()];
}
