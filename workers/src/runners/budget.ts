/**
 * The CPUs and memory this process may use. `os.availableParallelism()` and `os.totalmem()`
 * describe the machine; in a container with limits (a Kubernetes pod with `limits.cpu`,
 * `limits.memory`) the cgroup allows less. The defaults that size onnxruntime (threads,
 * instances) take the smaller of the two, so a 2-CPU pod on a 64-core node does not start 64
 * instances.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism, totalmem } from 'node:os';

export type ReadText = (path: string) => string | undefined;

const readText: ReadText = (path) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
};

/** CPUs from a cgroup v2 `cpu.max` ("<quota> <period>" or "max <period>"); undefined when unlimited or unreadable. */
export function cpusOfCpuMax(text: string | undefined): number | undefined {
  const m = /^\s*(\d+)\s+(\d+)\s*$/.exec(text ?? '');
  if (m === null || Number(m[2]) <= 0) return undefined;
  return Math.max(1, Math.ceil(Number(m[1]) / Number(m[2])));
}

/** CPUs this process may use: the machine's, lowered to the cgroup's CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`). */
export function cpuBudget(read: ReadText = readText, machine = availableParallelism()): number {
  let quota = cpusOfCpuMax(read('/sys/fs/cgroup/cpu.max'));
  if (quota === undefined) {
    const q = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us')?.trim());
    const p = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_period_us')?.trim());
    if (Number.isFinite(q) && Number.isFinite(p) && q > 0 && p > 0) quota = Math.max(1, Math.ceil(q / p));
  }
  return Math.max(1, Math.min(machine, quota ?? machine));
}

/** Bytes this process may use: the machine's memory, lowered to the cgroup's limit (v2 `memory.max`, v1 `memory.limit_in_bytes`). */
export function memoryBudget(read: ReadText = readText, machine = totalmem()): number {
  for (const path of ['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes']) {
    const text = read(path)?.trim();
    if (text !== undefined && /^\d+$/.test(text)) return Math.min(machine, Number(text)); // v1 "unlimited" is a huge number: the machine wins
  }
  return machine;
}
