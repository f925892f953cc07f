#!/usr/bin/env node
/**
 * The `inferq` command. Entry file: the only place that parses argv, installs
 * signal handlers and sets the exit code; each command lives in commands/.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { ConfigError, InferqError } from '@inferq/shared';
import { registerDeadLetters } from './commands/dead-letters.js';
import { registerModels } from './commands/models.js';
import { registerPrecompute } from './commands/precompute.js';
import { registerPredict } from './commands/predict.js';
import { registerQueue } from './commands/queue.js';
import { registerSchedule } from './commands/schedule.js';
import { registerWorker } from './commands/worker.js';

/** The levels `--log-level` and `$INFERQ_LOG_LEVEL` accept (pino's). */
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** The version of the package this CLI ships in: its package.json is two folders up from both src/cli and dist/cli. */
function cliVersion(): string {
  const url = new URL('../../package.json', import.meta.url);
  const version: unknown = (JSON.parse(readFileSync(url, 'utf8')) as { version?: unknown }).version;
  if (typeof version !== 'string') throw new ConfigError(`${fileURLToPath(url)}: no "version" string`);
  return version;
}

const logLevelOption = (): Option =>
  new Option('--log-level <level>', 'log level on stderr; default warn for predict and precompute, info for worker').choices(LOG_LEVELS).env('INFERQ_LOG_LEVEL');

export function buildProgram(): Command {
  const program = new Command('inferq')
    .description('Queue-driven, batched ML prediction: workers, offline predict and precompute.')
    .version(cliVersion(), '-V, --version', 'print the version of inferq')
    .addOption(logLevelOption())
    // The program's own options go before the command: `inferq predict --version 2` is predict's --version.
    .enablePositionalOptions()
    .showHelpAfterError()
    .configureOutput({ outputError: (s, write) => write(s) });
  // Commands and the processes they start read the level from the environment, so the flag is applied there.
  program.hook('preAction', (root, action) => {
    // A flag (before or after the command name) beats the environment.
    const given = [action, root].find((c) => c.getOptionValueSource('logLevel') === 'cli') ?? action;
    const logLevel = given.opts<{ logLevel?: string }>().logLevel ?? root.opts<{ logLevel?: string }>().logLevel;
    if (logLevel !== undefined) process.env['INFERQ_LOG_LEVEL'] = logLevel;
  });
  registerPredict(program);
  registerPrecompute(program);
  registerSchedule(program);
  registerWorker(program);
  registerQueue(program);
  registerDeadLetters(program);
  registerModels(program);
  // --log-level is also taken after the command name (`inferq worker --log-level debug …`).
  const addLogLevel = (command: Command): void => {
    for (const sub of command.commands) {
      if (sub.commands.length > 0) addLogLevel(sub);
      else sub.addOption(logLevelOption());
    }
  };
  addLogLevel(program);
  return program;
}

async function main(): Promise<void> {
  try {
    await buildProgram().parseAsync(process.argv);
  } catch (err) {
    if (err instanceof InferqError) {
      process.stderr.write(`inferq: error: ${err.message}\n`);
    } else {
      process.stderr.write(`inferq: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    }
    process.exitCode = 1;
  }
}

await main();
