/**
 * `inferq worker --devices …`: one child worker per device, each this same CLI with its own
 * `--device` (and `--http-port <base + 1 + i>`), restarted when it dies, drained together on
 * SIGTERM. Entry-file code: it installs the signal handlers and ends the process.
 */
import { ConfigError } from '@inferq/shared';
import { createLogger } from '../../logging.js';
import type { WorkerFlags } from '../commands/worker.js';
import { childArgs, selfCommand } from './child-args.js';
import { resolveDevices } from './devices.js';
import { startSupervisorHttp } from './http.js';
import type { SupervisorHttp } from './http.js';
import { DEFAULT_RESTART_POLICY } from './restarts.js';
import { Supervisor } from './supervisor.js';

/** Supervisor flags beyond the worker's own. */
export interface SupervisorFlags {
  /** `--max-restarts`: give up when a child exits this many times in a row (default 5). */
  readonly maxRestarts?: number;
}

/** A child may take this long past its own --shutdown-timeout-ms (whose backstop is 3 s) before it is killed. */
const KILL_GRACE_MS = 5000;

export async function superviseDevices(flags: WorkerFlags & SupervisorFlags): Promise<void> {
  const devices = await resolveDevices(flags.devices ?? '');
  const maxCrashes = flags.maxRestarts ?? DEFAULT_RESTART_POLICY.maxCrashes;
  if (!Number.isInteger(maxCrashes) || maxCrashes < 1) throw new ConfigError(`--max-restarts ${maxCrashes}: expected a whole number of at least 1`);
  const childPort = (i: number): number => (flags.httpPort === 0 ? 0 : flags.httpPort + 1 + i);
  if (childPort(devices.length - 1) > 65_535) throw new ConfigError(`--http-port ${flags.httpPort}: the children's ports (${flags.httpPort + 1}…) would pass 65535 for ${devices.length} devices`);
  const logger = createLogger({ base: { cmd: 'worker', role: 'supervisor', devices: devices.join(',') } });
  const userArgs = process.argv.slice(2);
  const supervisor = new Supervisor({
    devices,
    command: (device, i) => selfCommand(childArgs(userArgs, device, childPort(i))),
    env: process.env,
    policy: { ...DEFAULT_RESTART_POLICY, maxCrashes },
    shutdownTimeoutMs: flags.shutdownTimeoutMs,
    killGraceMs: KILL_GRACE_MS,
    logger,
    output: { stdout: (line) => process.stdout.write(`${line}\n`), stderr: (line) => process.stderr.write(`${line}\n`) },
    onAllServing: () => process.stdout.write(`inferq worker: serving ${source(flags)} on ${devices.join(',')} (pid ${process.pid})\n`),
  });
  let draining = false;
  let http: SupervisorHttp | undefined;
  if (flags.httpPort !== 0) {
    http = await startSupervisorHttp({
      port: flags.httpPort,
      children: () => supervisor.status().map((c) => ({ device: c.device, port: childPort(c.index), running: c.running, restarts: c.restarts })),
      draining: () => draining,
    });
  }
  // Kept for every signal: a second Ctrl-C must not kill the supervisor and orphan its children.
  const onSignal = (signal: NodeJS.Signals): void => {
    draining = true;
    void supervisor.stop(signal);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // Without a handler SIGHUP would end the supervisor; the children reload their models on it.
  process.on('SIGHUP', () => logger.info({ children: supervisor.signalServing('SIGHUP') }, 'SIGHUP passed to the serving child workers (model reload)'));
  supervisor.start();
  const outcome = await supervisor.outcome;
  draining = true;
  await http?.close().catch((err: unknown) => logger.error({ err }, 'closing the HTTP port failed'));
  logger.info({ code: outcome.code }, 'every child worker stopped');
  if (outcome.code === 1) process.stderr.write(`inferq: error: ${outcome.message ?? 'a worker failed'}\n`);
  process.exit(outcome.code);
}

function source(flags: WorkerFlags): string {
  if (flags.role === 'precompute') return `precompute schedules and offline tasks (queue "${flags.queue}")`;
  return flags.transport === 'kafka' ? `topic "${flags.topic}" (group "${flags.group}")` : `queue "${flags.queue}"`;
}
