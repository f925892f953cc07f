#!/usr/bin/env node
/**
 * The `inferq` command. Entry file: the only place that parses argv, installs
 * signal handlers and sets the exit code; each command lives in commands/.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';

type Register = (program: Command) => void;

/**
 * Each command's module, loaded only when that command runs: between them they pull in
 * Kafka, BullMQ, Redis, Arrow, Parquet and metrics, which cost a cold start far more than any one needs.
 * In the order `inferq --help` lists them.
 */
const COMMANDS: Readonly<Record<string, () => Promise<Register>>> = {
  predict: async () => (await import('./commands/predict.js')).registerPredict,
  precompute: async () => (await import('./commands/precompute.js')).registerPrecompute,
  schedule: async () => (await import('./commands/schedule.js')).registerSchedule,
  worker: async () => (await import('./commands/worker.js')).registerWorker,
  queue: async () => (await import('./commands/queue.js')).registerQueue,
  'dead-letters': async () => (await import('./commands/dead-letters.js')).registerDeadLetters,
  models: async () => (await import('./commands/models.js')).registerModels,
};

/** The levels `--log-level` and `$INFERQ_LOG_LEVEL` accept (pino's). */
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** The version of the package this CLI ships in: its package.json is two folders up from both src/cli and dist/cli. */
async function cliVersion(): Promise<string> {
  const url = new URL('../../package.json', import.meta.url);
  const version: unknown = (JSON.parse(readFileSync(url, 'utf8')) as { version?: unknown }).version;
  if (typeof version === 'string') return version;
  const { ConfigError } = await import('@inferq/shared');
  throw new ConfigError(`${fileURLToPath(url)}: no "version" string`);
}

/**
 * The commands argv asks for: the one it names, none for a bare `--version`, and every one
 * otherwise (help, `help <command>`, a mistyped name: those must list them all).
 */
function commandsFor(argv: readonly string[]): string[] {
  const all = Object.keys(COMMANDS);
  let version = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    // The program's options come before the command (positional options); only --log-level takes a value.
    if (arg === '--log-level') i++;
    else if (arg === '-V' || arg === '--version') version = true;
    else if (arg === '-h' || arg === '--help') return all;
    else if (!arg.startsWith('-')) return Object.hasOwn(COMMANDS, arg) ? [arg] : all;
  }
  return version ? [] : all;
}

const logLevelOption = (): Option =>
  new Option('--log-level <level>', 'log level on stderr; default warn for predict and precompute, info for worker').choices(LOG_LEVELS).env('INFERQ_LOG_LEVEL');

/** The program with the commands `names` (default: every command) registered. */
export async function buildProgram(names: readonly string[] = Object.keys(COMMANDS)): Promise<Command> {
  const registers = await Promise.all(names.map((name) => COMMANDS[name]!()));
  const program = new Command('inferq')
    .description('Queue-driven, batched ML prediction: workers, offline predict and precompute.')
    .version(await cliVersion(), '-V, --version', 'print the version of inferq')
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
  for (const register of registers) register(program);
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
    const program = await buildProgram(commandsFor(process.argv.slice(2)));
    await program.parseAsync(process.argv);
  } catch (err) {
    // Already loaded by whichever command raised an InferqError, so this costs nothing then.
    const { InferqError } = await import('@inferq/shared');
    if (err instanceof InferqError) {
      process.stderr.write(`inferq: error: ${err.message}\n`);
    } else {
      process.stderr.write(`inferq: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    }
    process.exitCode = 1;
  }
}

await main();
