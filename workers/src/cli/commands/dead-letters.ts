/** `inferq dead-letters list|show|replay|purge`: the flags; what they do is in admin/dead-letters.ts (docs/dead-letters.md). */
import { Option } from 'commander';
import type { Command } from 'commander';
import { DEFAULT_PREFIX, DEFAULT_QUEUE, kafkaDeadLetterTopic } from '@inferq/shared';
import { listDeadLetters, purgeDeadLetters, replayDeadLetters, showDeadLetter } from '../../admin/dead-letters.js';
import type { Write } from '../../admin/dead-letters.js';
import type { QueueSpec } from '../../admin/session.js';
import { createLogger } from '../../logging.js';
import { addConnectionOptions, kafkaClientConfig, kafkaStartFailure, redisClientOptions } from '../connections.js';
import type { ConnectionFlags } from '../connections.js';
import { defaultRedisUrl, positiveInt } from '../flags.js';

/** The flags every admin command shares: which queue or topic, where, and how long to wait. */
export interface QueueFlags extends ConnectionFlags {
  transport: 'redis' | 'kafka';
  redis: string;
  queue: string;
  prefix: string;
  brokers: string;
  topic: string;
  deadLetterTopic?: string;
  timeoutMs: number;
  readTimeoutMs: number;
  json: boolean;
}

/** Adds the shared flags (and the connection flags of both transports) to `command`. */
export function addQueueOptions(command: Command): Command {
  command
    .addOption(new Option('--transport <kind>', 'queue transport').choices(['redis', 'kafka']).default('redis'))
    .option('--redis <url>', 'Redis URL', defaultRedisUrl())
    .option('--queue <name>', 'queue name (Redis)', DEFAULT_QUEUE)
    .option('--prefix <prefix>', 'key prefix (Redis)', DEFAULT_PREFIX)
    .option('--brokers <host:port,…>', 'Kafka bootstrap brokers', process.env['KAFKA_BROKERS'] ?? '127.0.0.1:9092')
    .option('--topic <name>', 'request topic (Kafka)', DEFAULT_QUEUE)
    .option('--dead-letter-topic <name>', 'dead-letter topic (Kafka; default <topic>.dead)')
    .option('--timeout-ms <n>', 'how long to wait for the server, and for each of its answers, before failing', positiveInt, 5000)
    .option('--read-timeout-ms <n>', 'Kafka: a read of the dead-letter topic stops when no message came for this long', positiveInt, 10_000)
    .option('--json', 'print JSON instead of text', false);
  return addConnectionOptions(command, ['redis', 'kafka']);
}

/** What the flags name: a Redis queue or a Kafka topic, with its connection settings. */
export function queueSpec(f: QueueFlags): QueueSpec {
  if (f.transport === 'redis') return { transport: 'redis', url: f.redis, client: redisClientOptions(f, f.redis), timeoutMs: f.timeoutMs, prefix: f.prefix, queue: f.queue };
  return {
    transport: 'kafka',
    brokers: f.brokers.split(',').map((b) => b.trim()).filter((b) => b !== ''),
    client: kafkaClientConfig(f),
    timeoutMs: f.timeoutMs,
    logger: createLogger({ level: process.env['INFERQ_LOG_LEVEL'] ?? 'warn', base: { cmd: 'inferq-admin' } }),
    topic: f.topic,
    deadLetterTopic: f.deadLetterTopic ?? kafkaDeadLetterTopic(f.topic),
    idleMs: f.readTimeoutMs,
  };
}

/** Runs an admin action; a Kafka connection failure becomes one line naming the brokers. */
export async function runAdmin(f: QueueFlags, action: (spec: QueueSpec) => Promise<void>): Promise<void> {
  try {
    await action(queueSpec(f));
  } catch (err) {
    throw f.transport === 'kafka' ? kafkaStartFailure(err, f.brokers) : err;
  }
}

const write: Write = (text) => void process.stdout.write(text);

export function registerDeadLetters(program: Command): void {
  const dl = program
    .command('dead-letters')
    .description('Jobs that failed for good: list, show, replay (send again) or purge them (docs/dead-letters.md).');
  addQueueOptions(
    dl
      .command('list')
      .description('list dead letters, oldest first')
      .option('--limit <n>', 'show at most this many', positiveInt, 100)
      .option('--code <code>', 'only dead letters of this error code (BAD_SHAPE, UNKNOWN_MODEL…)'),
  ).action((f: QueueFlags & { limit: number; code?: string }) => runAdmin(f, (spec) => listDeadLetters(spec, { limit: f.limit, code: f.code, json: f.json }, write)));
  addQueueOptions(
    dl
      .command('show <letter>')
      .description('show one dead letter and what its payload holds: a job id, a stream entry id (Redis) or <partition>:<offset> (Kafka)'),
  ).action((ref: string, f: QueueFlags) => runAdmin(f, (spec) => showDeadLetter(spec, ref, { json: f.json }, write)));
  addQueueOptions(
    dl
      .command('replay [letters...]')
      .description('enqueue dead letters again, under their own job ids (a job id names its newest dead letter); Redis deletes each letter replayed')
      .option('--all', 'every dead letter (with --code: every one of that code)', false)
      .option('--code <code>', 'only dead letters of this error code')
      .option('--new-id', 'enqueue under new job ids instead of the original ones', false)
      .option('--to-queue <name>', 'Redis: enqueue into this queue instead of the letters\' own')
      .option('--to-topic <name>', 'Kafka: produce to this topic instead of --topic'),
  ).action((refs: string[], f: QueueFlags & { all: boolean; code?: string; newId: boolean; toQueue?: string; toTopic?: string }) =>
    runAdmin(f, (spec) => replayDeadLetters(spec, refs, { all: f.all, code: f.code, newId: f.newId, toQueue: f.toQueue, toTopic: f.toTopic, json: f.json }, write)),
  );
  addQueueOptions(
    dl
      .command('purge [letters...]')
      .description('delete dead letters (Redis: entries and their payload copies; Kafka: every message of a partition up to <partition>:<offset>, or all); needs --yes')
      .option('--all', 'every dead letter (Redis with --code: every one of that code)', false)
      .option('--code <code>', 'Redis: only dead letters of this error code')
      .option('--yes', 'really delete (without it, say what would be deleted and fail)', false),
  ).action((refs: string[], f: QueueFlags & { all: boolean; code?: string; yes: boolean }) =>
    runAdmin(f, (spec) => purgeDeadLetters(spec, refs, { all: f.all, code: f.code, yes: f.yes, json: f.json }, write)),
  );
}
