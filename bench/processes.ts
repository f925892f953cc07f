/** Child processes of a bench run and the CPU they use: spawn, watch, account, and kill them all on exit. */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));


/** CPU seconds (user + system, all threads) of a process, from /proc; NaN where unreadable. */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  if (pid === process.pid) {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return Number.NaN;
  }
}

/** CPU seconds the whole machine spent busy (all processes, all cores), from /proc/stat; NaN where unreadable. */
export function machineBusySeconds(): number {
  try {
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = cpu as [number, number, number, number, number, number, number, number];
    return (user + nice + system + irq + softirq + steal) / 100;
  } catch {
    return Number.NaN;
  }
}

export interface Child {
  readonly proc: ChildProcess;
  readonly pid: number | undefined;
  tail(): string;
  /** SIGTERM, then SIGKILL after 5 s; resolves true when it had to be killed. */
  stop(): Promise<boolean>;
}

const children = new Set<ChildProcess>();
/** Servers the bench started (redis-server, the Kafka JVM): killed with the children. */
const servers = new Set<number>();
export const watchServer = (pid: number): void => void servers.add(pid);
export const unwatchServer = (pid: number): void => void servers.delete(pid);
export const killAll = (): void => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const pid of servers) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
};
/** SIGINT / SIGTERM while the bench runs: kill what it started, then exit as the signal would. */
export const onSignal = (signal: NodeJS.Signals): void => {
  killAll();
  process.exit(signal === 'SIGINT' ? 130 : 143);
};

/** Spawns `node --conditions=inferq-source --import tsx ARGS…` in the repo root; resolves when stdout shows `ready`. */
export async function spawnNode(label: string, args: string[], ready: string): Promise<Child> {
  const proc = spawn(process.execPath, ['--conditions=inferq-source', '--import', 'tsx', ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, INFERQ_LOG_LEVEL: process.env['INFERQ_LOG_LEVEL'] ?? 'warn' },
  });
  children.add(proc);
  let out = '';
  let err = '';
  proc.stdout?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-8000)));
  proc.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-8000)));
  const tail = (): string => `${label} stdout: ${out.trim().slice(-2000) || '(empty)'}\n${label} stderr: ${err.trim().slice(-2000) || '(empty)'}`;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${label} not ready within 60 s\n${tail()}`)), 60_000);
    const onData = (): void => {
      if (!out.includes(ready)) return;
      clearTimeout(timer);
      proc.stdout?.off('data', onData);
      resolve();
    };
    proc.stdout?.on('data', onData);
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`${label} exited (code ${proc.exitCode}, signal ${proc.signalCode}) before it was ready\n${tail()}`));
    });
  });
  const stop = async (): Promise<boolean> => {
    let killed = false;
    if (proc.exitCode === null && proc.signalCode === null) {
      const kill = setTimeout(() => {
        killed = true;
        proc.kill('SIGKILL');
      }, 5_000);
      proc.kill('SIGTERM');
      await exited;
      clearTimeout(kill);
    }
    children.delete(proc);
    return killed;
  };
  return { proc, pid: proc.pid, tail, stop };
}

