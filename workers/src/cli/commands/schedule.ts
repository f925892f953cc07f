/** `inferq schedule add|list|remove`: cron schedules of precompute runs. */
import { Option } from 'commander';
import type { Command } from 'commander';
import { ConfigError, DEFAULT_PREFIX } from '@inferq/shared';
import type { PrecomputeTarget } from '../../precompute/precompute.js';
import { addSchedule, listSchedules, removeSchedule } from '../../precompute/schedules.js';
import type { RedisEndpoint } from '../../precompute/schedules.js';
import { addConnectionOptions, redisClientOptions } from '../connections.js';
import type { ConnectionFlags } from '../connections.js';
import { defaultRedisUrl } from '../flags.js';

interface AddFlags extends ConnectionFlags {
  cron: string;
  spec: string;
  specsRoot?: string;
  modelRepo?: string;
  to: PrecomputeTarget;
  redis: string;
  prefix: string;
}

interface ListFlags extends ConnectionFlags {
  redis: string;
  prefix: string;
}

const endpoint = (f: ConnectionFlags & { redis: string }): RedisEndpoint => ({ url: f.redis, options: redisClientOptions(f, f.redis) });

export function registerSchedule(program: Command): void {
  const schedule = program
    .command('schedule')
    .description('Cron schedules of precompute runs (BullMQ job schedulers), run by `inferq worker --role precompute` (see docs/precompute.md).');
  schedule
    .command('add <name>')
    .description('add or replace a schedule')
    .requiredOption('--cron <pattern>', 'cron pattern, e.g. "0 3 * * *" (a sixth, leading field is seconds)')
    .requiredOption('--spec <spec.yaml>', 'precompute spec: its text goes into the schedule (add the schedule again to change it)')
    .option('--specs-root <dir>', "the folder the workers' --allow-specs is a copy of: the spec's folder is recorded relative to it, and the files the spec names must lie inside it (default: the spec's own folder)")
    .option('--model-repo <dir>', "check that the spec's model and version exist in this repository (the worker loads from its own --model-repo)")
    .addOption(new Option('--to <target>', 'where the table goes').choices(['redis', 'parquet', 'both']).default('redis'))
    .option('--redis <url>', 'Redis URL', defaultRedisUrl())
    .option('--prefix <prefix>', "key prefix of the schedules queue (the worker's --prefix)", DEFAULT_PREFIX)
    .action(async (name: string, f: AddFlags) => {
      const job = await addSchedule(endpoint(f), name, f.cron, { spec: f.spec, specsRoot: f.specsRoot, modelRepo: f.modelRepo, to: f.to, prefix: f.prefix });
      process.stdout.write(`inferq schedule: "${name}" runs ${job.spec.dir}/${job.spec.file} (sha256 ${job.spec.sha256.slice(0, 12)}…, --to ${job.to}) at "${f.cron}"\n`);
    });
  schedule
    .command('list')
    .description('list the schedules and their next run')
    .option('--redis <url>', 'Redis URL', defaultRedisUrl())
    .option('--prefix <prefix>', 'key prefix of the schedules queue', DEFAULT_PREFIX)
    .action(async (f: ListFlags) => {
      for (const s of await listSchedules(endpoint(f), f.prefix)) {
        process.stdout.write(`${s.name}\t${s.cron ?? ''}\tnext ${s.next === undefined ? '-' : new Date(s.next).toISOString()}\t${s.spec}\t${s.to}\n`);
      }
    });
  schedule
    .command('remove <name>')
    .description('remove a schedule')
    .option('--redis <url>', 'Redis URL', defaultRedisUrl())
    .option('--prefix <prefix>', 'key prefix of the schedules queue', DEFAULT_PREFIX)
    .action(async (name: string, f: ListFlags) => {
      if (!(await removeSchedule(endpoint(f), name, f.prefix))) throw new ConfigError(`no schedule named "${name}"`);
      process.stdout.write(`inferq schedule: "${name}" removed\n`);
    });
  for (const sub of schedule.commands) addConnectionOptions(sub, ['redis']);
}
