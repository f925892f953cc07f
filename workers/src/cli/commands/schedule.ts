/** `inferq schedule add|list|remove`: cron schedules of precompute runs. */
import { Option } from 'commander';
import type { Command } from 'commander';
import { ConfigError } from '@inferq/shared';
import type { PrecomputeTarget } from '../../precompute/precompute.js';
import { addSchedule, listSchedules, removeSchedule } from '../../precompute/schedules.js';
import { defaultRedisUrl } from '../flags.js';

export function registerSchedule(program: Command): void {
  const schedule = program.command('schedule').description('Cron schedules of precompute runs (BullMQ job schedulers), run by `inferq worker --role precompute`.');
  schedule
    .command('add <name>')
    .description('add or replace a schedule')
    .requiredOption('--cron <pattern>', 'cron pattern, e.g. "0 3 * * *" (a sixth, leading field is seconds)')
    .requiredOption('--spec <spec.yaml>', 'precompute spec (read at each run)')
    .requiredOption('--model-repo <dir>', 'model repository the worker loads from')
    .addOption(new Option('--to <target>', 'where the table goes').choices(['redis', 'parquet', 'both']).default('redis'))
    .option('--redis <url>', 'Redis URL', defaultRedisUrl())
    .action(async (name: string, f: { cron: string; spec: string; modelRepo: string; to: PrecomputeTarget; redis: string }) => {
      await addSchedule(f.redis, name, f.cron, { spec: f.spec, to: f.to, modelRepo: f.modelRepo });
      process.stdout.write(`inferq schedule: "${name}" runs ${f.spec} at "${f.cron}"\n`);
    });
  schedule
    .command('list')
    .description('list the schedules and their next run')
    .option('--redis <url>', 'Redis URL', defaultRedisUrl())
    .action(async (f: { redis: string }) => {
      for (const s of await listSchedules(f.redis)) {
        process.stdout.write(`${s.name}\t${s.cron ?? ''}\tnext ${s.next === undefined ? '-' : new Date(s.next).toISOString()}\t${s.spec ?? ''}\n`);
      }
    });
  schedule
    .command('remove <name>')
    .description('remove a schedule')
    .option('--redis <url>', 'Redis URL', defaultRedisUrl())
    .action(async (name: string, f: { redis: string }) => {
      if (!(await removeSchedule(f.redis, name))) throw new ConfigError(`no schedule named "${name}"`);
      process.stdout.write(`inferq schedule: "${name}" removed\n`);
    });
}
