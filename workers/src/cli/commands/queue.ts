/** `inferq queue status`: job counts, dead letters and consumers of a Redis queue; lag per partition and members of a Kafka group. */
import type { Command } from 'commander';
import { formatStatus, kafkaStatus, redisStatus } from '../../admin/status.js';
import { withKafka, withRedis } from '../../admin/session.js';
import { safeJson } from '../../admin/table.js';
import { addQueueOptions, runAdmin } from './dead-letters.js';
import type { QueueFlags } from './dead-letters.js';

export function registerQueue(program: Command): void {
  const queue = program.command('queue').description('Look at a queue (Redis) or request topic (Kafka).');
  addQueueOptions(
    queue
      .command('status')
      .description('jobs per state, dead letters and workers (Redis); lag per partition, dead letters and group members (Kafka)')
      .option('--group <id>', 'consumer group (Kafka): the workers\' --group', 'inferq-workers'),
  ).action((f: QueueFlags & { group: string }) =>
    runAdmin(f, async (spec) => {
      const status =
        spec.transport === 'redis'
          ? await withRedis(spec, (redis) => redisStatus(redis, spec.prefix, spec.queue))
          : await withKafka(spec, (_kafka, admin) => kafkaStatus(admin, spec.topic, f.group, spec.deadLetterTopic));
      process.stdout.write(f.json ? safeJson(status) : formatStatus(status));
    }),
  );
}
