/** `inferq models reload`: ask the workers of a Redis queue to scan their model repository now. */
import type { Command } from 'commander';
import { DEFAULT_PREFIX, DEFAULT_QUEUE } from '@inferq/shared';
import { withRedis } from '../../admin/session.js';
import { controlChannel, encodeControl } from '../../sources/redis/options.js';
import { addConnectionOptions, redisClientOptions } from '../connections.js';
import type { ConnectionFlags } from '../connections.js';
import { defaultRedisUrl, positiveInt } from '../flags.js';

interface ReloadFlags extends ConnectionFlags {
  redis: string;
  queue: string;
  prefix: string;
  timeoutMs: number;
}

export function registerModels(program: Command): void {
  const models = program.command('models').description('Act on the models workers serve (docs/models.md).');
  const reload = models
    .command('reload')
    .description('tell every worker of a Redis queue to look at its model repository now (Kafka workers: send them SIGHUP)')
    .option('--redis <url>', 'Redis URL', defaultRedisUrl())
    .option('--queue <name>', 'queue name: the workers\' --queue', DEFAULT_QUEUE)
    .option('--prefix <prefix>', 'key prefix: the workers\' --prefix', DEFAULT_PREFIX)
    .option('--timeout-ms <n>', 'how long to wait for Redis before failing', positiveInt, 5000)
    .action(async (f: ReloadFlags) => {
      const channel = controlChannel(f.prefix, f.queue);
      const listeners = await withRedis({ url: f.redis, client: redisClientOptions(f, f.redis), timeoutMs: f.timeoutMs }, (redis) => redis.publish(channel, encodeControl('reload')));
      process.stdout.write(listeners === 0 ? `no worker of queue "${f.queue}" is listening on ${channel}\n` : `reload sent to ${listeners} worker(s) of queue "${f.queue}"\n`);
    });
  addConnectionOptions(reload, ['redis']);
}
