#!/usr/bin/env node
/**
 * The `inferq` command. Entry file: the only place that parses argv, installs
 * signal handlers and sets the exit code; each command lives in commands/.
 */
import { Command } from 'commander';
import { InferqError } from '@inferq/shared';
import { registerPrecompute } from './commands/precompute.js';
import { registerPredict } from './commands/predict.js';
import { registerSchedule } from './commands/schedule.js';
import { registerWorker } from './commands/worker.js';

export function buildProgram(): Command {
  const program = new Command('inferq')
    .description('Queue-driven, batched ML prediction: workers, offline predict and precompute.')
    .showHelpAfterError()
    .configureOutput({ outputError: (s, write) => write(s) });
  registerPredict(program);
  registerPrecompute(program);
  registerSchedule(program);
  registerWorker(program);
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
