/**
 * One run of one child worker: spawn it, forward its output so that each line says which
 * child wrote it, notice when it serves, and report how it ended.
 *
 * stderr: JSON log lines pass through as they are (they carry `device`); any other line is
 * prefixed with `[cuda:N] `. stdout: the child's "serving" line is taken as its readiness and
 * not repeated (only the supervisor says `inferq worker: serving`); other lines are prefixed.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { ChildCommand } from './child-args.js';

export const SERVING_TEXT = 'inferq worker: serving';

export interface ChildExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** The child's last `inferq: error: …` line on stderr (without that prefix), if any. */
  readonly lastError: string | undefined;
}

export interface ChildOutput {
  stdout(line: string): void;
  stderr(line: string): void;
}

export interface RunChildOptions {
  readonly device: string;
  readonly command: ChildCommand;
  readonly env: NodeJS.ProcessEnv;
  readonly output: ChildOutput;
  /** Called once, when the child prints its serving line. */
  readonly onServing: () => void;
}

/** A child worker process that runs (or ran). */
export class ChildRun {
  readonly pid: number | undefined;
  /** Resolves when the process has exited and its output is read. */
  readonly exited: Promise<ChildExit>;
  private readonly child: ChildProcess;
  private ended = false;

  constructor(opts: RunChildOptions) {
    const prefix = `[${opts.device}] `;
    this.child = spawn(opts.command.file, [...opts.command.args], { env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.pid = this.child.pid;
    let lastError: string | undefined;
    let serving = false;
    const stdoutDone = lines(this.child.stdout!, (line) => {
      if (!serving && line.startsWith(SERVING_TEXT)) {
        serving = true;
        opts.onServing();
      } else opts.output.stdout(`${prefix}${line}`);
    });
    const stderrDone = lines(this.child.stderr!, (line) => {
      if (line.startsWith('inferq: ')) lastError = line.replace(/^inferq: (error: )?/, '');
      opts.output.stderr(line.startsWith('{') ? line : `${prefix}${line}`);
    });
    const processDone = new Promise<{ code: number | null; signal: NodeJS.Signals | null; spawnError?: Error }>((resolve) => {
      this.child.once('error', (err) => resolve({ code: null, signal: null, spawnError: err })); // could not be spawned at all
      this.child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    this.exited = processDone.then(async (end) => {
      this.ended = true;
      if (end.spawnError !== undefined) return { code: end.code, signal: end.signal, lastError: `could not start: ${end.spawnError.message}` };
      await Promise.all([stdoutDone, stderrDone]);
      return { code: end.code, signal: end.signal, lastError };
    });
  }

  get running(): boolean {
    return !this.ended;
  }

  /** Sends `signal` unless the process has ended. */
  kill(signal: NodeJS.Signals): void {
    if (!this.ended) this.child.kill(signal);
  }
}

function lines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): Promise<void> {
  const rl = createInterface({ input: stream, crlfDelay: Infinity });
  rl.on('line', onLine);
  return new Promise((resolve) => rl.once('close', () => resolve()));
}

/** "code 1" / "signal SIGKILL", and the child's last error line. */
export function describeExit(exit: ChildExit): string {
  const how = exit.signal !== null ? `signal ${exit.signal}` : `code ${exit.code ?? '?'}`;
  return exit.lastError === undefined ? how : `${how}: ${exit.lastError}`;
}
