import { availableParallelism, totalmem } from 'node:os';
import { describe, expect, it } from 'vitest';
import { cpuBudget, cpusOfCpuMax, memoryBudget } from './budget.js';
import type { ReadText } from './budget.js';

const files =
  (contents: Record<string, string>): ReadText =>
  (path) =>
    contents[path];

describe('CPU and memory budget', () => {
  it('a cgroup v2 CPU quota lowers the CPU count (rounded up); "max" or no cgroup leaves the machine', () => {
    expect(cpusOfCpuMax('200000 100000\n')).toBe(2);
    expect(cpusOfCpuMax('150000 100000')).toBe(2);
    expect(cpusOfCpuMax('50000 100000')).toBe(1);
    expect(cpusOfCpuMax('max 100000')).toBeUndefined();
    expect(cpusOfCpuMax(undefined)).toBeUndefined();
    expect(cpuBudget(files({ '/sys/fs/cgroup/cpu.max': '200000 100000\n' }), 64)).toBe(2);
    expect(cpuBudget(files({ '/sys/fs/cgroup/cpu.max': 'max 100000\n' }), 64)).toBe(64);
    expect(cpuBudget(files({ '/sys/fs/cgroup/cpu.max': '800000 100000\n' }), 4)).toBe(4); // a quota above the machine
    expect(cpuBudget(files({}), 8)).toBe(8);
  });

  it('cgroup v1: cfs quota and period; -1 is no quota', () => {
    expect(cpuBudget(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '300000\n', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n' }), 64)).toBe(3);
    expect(cpuBudget(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1\n', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n' }), 64)).toBe(64);
  });

  it('a memory limit (v2 memory.max, v1 limit_in_bytes) lowers the memory; "max" and v1\'s huge "unlimited" leave the machine', () => {
    const GB = 1024 ** 3;
    expect(memoryBudget(files({ '/sys/fs/cgroup/memory.max': `${4 * GB}\n` }), 64 * GB)).toBe(4 * GB);
    expect(memoryBudget(files({ '/sys/fs/cgroup/memory.max': 'max\n' }), 64 * GB)).toBe(64 * GB);
    expect(memoryBudget(files({ '/sys/fs/cgroup/memory/memory.limit_in_bytes': '9223372036854771712\n' }), 64 * GB)).toBe(64 * GB);
    expect(memoryBudget(files({ '/sys/fs/cgroup/memory/memory.limit_in_bytes': `${2 * GB}\n` }), 64 * GB)).toBe(2 * GB);
    expect(memoryBudget(files({}), 16 * GB)).toBe(16 * GB);
  });

  it('on this machine: at least one CPU, no more than the machine has', () => {
    expect(cpuBudget()).toBeGreaterThanOrEqual(1);
    expect(cpuBudget()).toBeLessThanOrEqual(availableParallelism());
    expect(memoryBudget()).toBeGreaterThan(0);
    expect(memoryBudget()).toBeLessThanOrEqual(totalmem());
  });
});
