/** The supervisor against real child processes: small Node scripts that serve, crash or ignore SIGTERM. */
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../logging.js';
import { DEFAULT_RESTART_POLICY } from './restarts.js';
import { Supervisor } from './supervisor.js';
import type { SupervisorOptions } from './supervisor.js';

/** A fake child worker: argv = [mode, device]. */
const CHILD = `
const [mode, device] = process.argv.slice(1);
if (mode === 'crash') {
  process.stderr.write('inferq: error: boom on ' + device + '\\n');
  process.exit(1);
}
process.stderr.write(JSON.stringify({ msg: 'hello', device }) + '\\n');
process.stderr.write('a native library says hi\\n');
process.stdout.write('some output\\n');
process.stdout.write('inferq worker: serving fake on ' + device + ' (pid ' + process.pid + ')\\n');
setInterval(() => undefined, 1000);
process.on('SIGHUP', () => process.stderr.write(JSON.stringify({ msg: 'reloading', device }) + '\\n'));
process.on('SIGTERM', () => {
  if (mode === 'stubborn') return;
  process.stderr.write(JSON.stringify({ msg: 'drained', device }) + '\\n');
  setTimeout(() => process.exit(0), 50);
});
`;

type Mode = 'serve' | 'crash' | 'stubborn';

interface Harness {
  readonly supervisor: Supervisor;
  readonly stdout: string[];
  readonly stderr: string[];
  readonly announced: () => number;
}

const started: Supervisor[] = [];
afterEach(async () => {
  for (const s of started.splice(0)) await s.stop('test over');
});

function supervise(modes: Record<string, Mode>, over: Partial<SupervisorOptions> = {}): Harness {
  const stdout: string[] = [];
  const stderr: string[] = [];
  let announced = 0;
  const supervisor = new Supervisor({
    devices: Object.keys(modes),
    command: (device) => ({ file: process.execPath, args: ['-e', CHILD, modes[device]!, device] }),
    env: process.env,
    policy: { ...DEFAULT_RESTART_POLICY, initialBackoffMs: 20, maxCrashes: 3 },
    shutdownTimeoutMs: 5000,
    logger: silentLogger(),
    output: { stdout: (l) => stdout.push(l), stderr: (l) => stderr.push(l) },
    onAllServing: () => announced++,
    ...over,
  });
  started.push(supervisor);
  supervisor.start();
  return { supervisor, stdout, stderr, announced: () => announced };
}

async function waitFor(check: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const alive = (pid: number | undefined): boolean => {
  try {
    process.kill(pid!, 0);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
};

describe('Supervisor', () => {
  it('announces once every child serves, tags their output, restarts one killed with -9, and drains all on stop', async () => {
    const h = supervise({ 'cuda:0': 'serve', 'cuda:1': 'serve' });
    await waitFor(() => h.announced() === 1, 'every child to serve');
    expect(h.stdout.sort()).toEqual(['[cuda:0] some output', '[cuda:1] some output']); // the children's serving lines are not repeated
    expect(h.stderr).toContain('{"msg":"hello","device":"cuda:1"}');
    expect(h.stderr).toContain('[cuda:0] a native library says hi');

    const before = h.supervisor.status();
    process.kill(before[1]!.pid!, 'SIGKILL');
    await waitFor(() => {
      const s = h.supervisor.status()[1]!;
      return s.serving && s.pid !== before[1]!.pid;
    }, 'cuda:1 to be restarted and serve');
    const after = h.supervisor.status();
    expect(after.map((s) => s.restarts)).toEqual([0, 1]);
    expect(after[0]!.pid).toBe(before[0]!.pid); // the other child was left alone
    expect(h.announced()).toBe(1);

    const outcome = await h.supervisor.stop('SIGTERM');
    expect(outcome).toEqual({ code: 0 });
    expect(h.stderr.filter((l) => l.includes('"drained"')).sort()).toEqual(['{"msg":"drained","device":"cuda:0"}', '{"msg":"drained","device":"cuda:1"}']);
    expect(after.map((s) => alive(s.pid))).toEqual([false, false]);
    expect(h.supervisor.status().map((s) => s.running)).toEqual([false, false]);
  });

  it('passes SIGHUP to every serving child, which keeps running', async () => {
    const h = supervise({ 'cuda:0': 'serve', 'cuda:1': 'serve' });
    await waitFor(() => h.announced() === 1, 'every child to serve');
    const pids = h.supervisor.status().map((s) => s.pid);
    expect(h.supervisor.signalServing('SIGHUP')).toBe(2);
    await waitFor(() => h.stderr.filter((l) => l.includes('"reloading"')).length === 2, 'both children to get SIGHUP');
    expect(h.supervisor.status().map((s) => [s.pid, s.running])).toEqual(pids.map((p) => [p, true]));
    expect(await h.supervisor.stop('SIGTERM')).toEqual({ code: 0 });
  });

  it('gives up on a child that exits N times in a row: stops the others and says which, how often and how it ended', async () => {
    const h = supervise({ 'cuda:0': 'serve', 'cuda:1': 'crash' });
    const outcome = await h.supervisor.outcome;
    expect(outcome).toEqual({ code: 1, message: 'worker on cuda:1 exited 3 times in a row (last: code 1: boom on cuda:1)' });
    const status = h.supervisor.status();
    expect(status.map((s) => [s.device, s.restarts, s.running])).toEqual([
      ['cuda:0', 0, false],
      ['cuda:1', 2, false],
    ]);
    expect(h.stderr.filter((l) => l === '[cuda:1] inferq: error: boom on cuda:1')).toHaveLength(3);
    expect(h.announced()).toBe(0); // never did every child serve
  });

  it('kills a child that does not stop within the deadline, and the outcome says not every worker stopped cleanly', async () => {
    const h = supervise({ 'cuda:0': 'serve', 'cuda:1': 'stubborn' }, { shutdownTimeoutMs: 300, killGraceMs: 200 });
    await waitFor(() => h.announced() === 1, 'every child to serve');
    const pids = h.supervisor.status().map((s) => s.pid);
    const t0 = Date.now();
    const outcome = await h.supervisor.stop('SIGTERM');
    const ms = Date.now() - t0;
    expect(outcome).toEqual({ code: 1, message: 'not every worker stopped cleanly (see its log)' });
    expect(ms).toBeGreaterThanOrEqual(450);
    expect(ms).toBeLessThan(3000);
    expect(pids.map(alive)).toEqual([false, false]);
  });

  it('a stop while a child waits for its restart cancels the restart', async () => {
    // The stop outlasts the 400 ms backoff (the stubborn child is killed only after 600 ms): a restart not cancelled would happen during it.
    const h = supervise({ 'cuda:0': 'stubborn', 'cuda:1': 'crash' }, { policy: { ...DEFAULT_RESTART_POLICY, initialBackoffMs: 400, maxCrashes: 3 }, shutdownTimeoutMs: 300, killGraceMs: 300 });
    // cuda:0 serving means its SIGTERM handler is installed (the fake child installs it in the same tick).
    await waitFor(() => h.supervisor.status()[0]!.serving, 'cuda:0 to serve');
    await waitFor(() => h.stderr.includes('[cuda:1] inferq: error: boom on cuda:1') && !h.supervisor.status()[1]!.running, 'cuda:1 to crash once');
    const t0 = Date.now();
    await h.supervisor.stop('SIGTERM');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(550);
    expect(h.supervisor.status().map((s) => [s.restarts, s.running])).toEqual([
      [0, false],
      [0, false],
    ]);
    expect(h.stderr.filter((l) => l.includes('boom'))).toHaveLength(1);
  });
});
