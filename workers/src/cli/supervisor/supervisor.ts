/**
 * Keeps one child worker running per device.
 *
 * ```
 *  start ─► spawn every child ──► all serve ─► onAllServing()
 *             ▲        │ exits unasked
 *             └backoff─┤ (RestartTracker)
 *                      └ N times in a row ─► stop the others ─► outcome 1 "worker on cuda:1 exited N times…"
 *  stop() ─► SIGTERM every child ─► wait shutdownTimeoutMs + killGraceMs ─► SIGKILL the rest
 *        ─► outcome 0 when every child drained (code 0) or was still starting, else 1
 * ```
 */
import type { Logger } from '../../logging.js';
import type { ChildCommand } from './child-args.js';
import { ChildRun, describeExit } from './child.js';
import type { ChildExit, ChildOutput } from './child.js';
import { RestartTracker } from './restarts.js';
import type { RestartPolicy } from './restarts.js';

export interface SupervisorOptions {
  readonly devices: readonly string[];
  /** The command line of the child for `devices[index]`. */
  readonly command: (device: string, index: number) => ChildCommand;
  readonly env: NodeJS.ProcessEnv;
  readonly policy: RestartPolicy;
  /** Each child's own drain deadline (its --shutdown-timeout-ms). */
  readonly shutdownTimeoutMs: number;
  /** How long past `shutdownTimeoutMs` a child may take before it is killed. Default 5000 ms. */
  readonly killGraceMs?: number;
  readonly logger: Logger;
  readonly output: ChildOutput;
  /** Called once, the first time every child serves. */
  readonly onAllServing?: () => void;
}

export interface SupervisorOutcome {
  readonly code: 0 | 1;
  /** Why the code is 1. */
  readonly message?: string;
}

/** What the HTTP endpoints show of one child. */
export interface ChildStatus {
  readonly device: string;
  readonly index: number;
  readonly pid: number | undefined;
  readonly running: boolean;
  readonly serving: boolean;
  readonly restarts: number;
}

interface Slot {
  readonly device: string;
  readonly index: number;
  readonly tracker: RestartTracker;
  run: ChildRun | undefined;
  serving: boolean;
  restarts: number;
  timer: NodeJS.Timeout | undefined;
}

export class Supervisor {
  private readonly slots: Slot[];
  private stopping = false;
  private announced = false;
  private finish: (outcome: SupervisorOutcome) => void = () => undefined;
  /** Resolves once every child has ended, after stop() or after giving up on one. */
  readonly outcome: Promise<SupervisorOutcome>;

  constructor(private readonly opts: SupervisorOptions) {
    this.slots = opts.devices.map((device, index) => ({ device, index, tracker: new RestartTracker(opts.policy), run: undefined, serving: false, restarts: 0, timer: undefined }));
    this.outcome = new Promise((resolve) => (this.finish = resolve));
  }

  start(): void {
    for (const slot of this.slots) this.spawn(slot);
  }

  status(): ChildStatus[] {
    return this.slots.map((s) => ({ device: s.device, index: s.index, pid: s.run?.pid, running: s.run?.running ?? false, serving: s.serving, restarts: s.restarts }));
  }

  /**
   * Passes `signal` (SIGHUP: reload the models) to every child that serves; one still starting
   * has no handler yet and would die of it, and picks up the change when it loads anyway.
   */
  signalServing(signal: NodeJS.Signals): number {
    const serving = this.stopping ? [] : this.slots.filter((s) => s.serving && s.run?.running === true);
    for (const s of serving) s.run!.kill(signal);
    return serving.length;
  }

  /** Stops every child (SIGTERM, then SIGKILL past the deadline); resolves with {@link outcome}. */
  stop(reason: string): Promise<SupervisorOutcome> {
    this.shutdown(reason, (clean) => (clean ? { code: 0 } : { code: 1, message: 'not every worker stopped cleanly (see its log)' }));
    return this.outcome;
  }

  private shutdown(reason: string, outcomeOf: (clean: boolean) => SupervisorOutcome): void {
    if (this.stopping) return;
    this.stopping = true;
    void this.stopAll(reason).then((clean) => this.finish(outcomeOf(clean)));
  }

  private spawn(slot: Slot): void {
    slot.timer = undefined;
    const run = new ChildRun({
      device: slot.device,
      command: this.opts.command(slot.device, slot.index),
      env: this.opts.env,
      output: this.opts.output,
      onServing: () => this.served(slot, run),
    });
    slot.run = run;
    this.opts.logger.info({ device: slot.device, childPid: run.pid }, 'child worker started');
    void run.exited.then((exit) => this.exited(slot, run, exit));
  }

  private served(slot: Slot, run: ChildRun): void {
    if (slot.run !== run) return;
    slot.serving = true;
    slot.tracker.serving(Date.now());
    this.opts.logger.info({ device: slot.device, childPid: run.pid }, 'child worker serving');
    if (!this.announced && !this.stopping && this.slots.every((s) => s.serving)) {
      this.announced = true;
      this.opts.onAllServing?.();
    }
  }

  private exited(slot: Slot, run: ChildRun, exit: ChildExit): void {
    slot.serving = false;
    if (this.stopping) return;
    const decision = slot.tracker.exited(Date.now());
    const log = { device: slot.device, childPid: run.pid, code: exit.code, signal: exit.signal, crashes: decision.crashes };
    if (!decision.restart) {
      const message = `worker on ${slot.device} exited ${decision.crashes} times in a row (last: ${describeExit(exit)})`;
      this.opts.logger.error(log, 'child worker keeps exiting: giving up');
      this.shutdown(`giving up on ${slot.device}`, () => ({ code: 1, message }));
      return;
    }
    this.opts.logger.warn({ ...log, restartInMs: decision.delayMs }, 'child worker exited unasked: restarting it');
    slot.timer = setTimeout(() => {
      if (this.stopping) return;
      slot.restarts++;
      this.spawn(slot);
    }, decision.delayMs);
  }

  /** True when every child that ran stopped cleanly. */
  private async stopAll(reason: string): Promise<boolean> {
    const deadline = this.opts.shutdownTimeoutMs + (this.opts.killGraceMs ?? 5000);
    this.opts.logger.info({ reason, timeoutMs: this.opts.shutdownTimeoutMs }, 'stopping every child worker');
    for (const slot of this.slots) clearTimeout(slot.timer);
    const runs = this.slots.flatMap((s) => (s.run?.running === true ? [{ slot: s, run: s.run }] : []));
    for (const { run } of runs) run.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const overdue = new Promise<void>((resolve) => (timer = setTimeout(resolve, deadline)));
    await Promise.race([Promise.all(runs.map((r) => r.run.exited)), overdue]);
    clearTimeout(timer);
    for (const { slot, run } of runs) {
      if (!run.running) continue;
      this.opts.logger.error({ device: slot.device, childPid: run.pid, ms: deadline }, 'child worker did not stop in time: killing it');
      run.kill('SIGKILL');
    }
    const exits = await Promise.all(runs.map((r) => r.run.exited));
    runs.forEach(({ slot, run }, i) => {
      const exit = exits[i]!;
      const log = { device: slot.device, childPid: run.pid, code: exit.code, signal: exit.signal };
      if (stoppedCleanly(exit)) this.opts.logger.info(log, 'child worker stopped');
      else this.opts.logger.error({ ...log, last: exit.lastError }, 'child worker did not stop cleanly');
    });
    return exits.every(stoppedCleanly);
  }
}

/**
 * A child stopped by our SIGTERM drained when it exits with 0; one that ends by that signal
 * itself had not installed its handler yet, so it was still starting and held no job.
 */
function stoppedCleanly(exit: ChildExit): boolean {
  return exit.code === 0 || exit.signal === 'SIGTERM';
}
