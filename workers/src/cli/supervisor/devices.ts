/**
 * The devices `--devices` names: an explicit list (`cuda:0,cuda:1`) or `all`, the GPUs this
 * process can see. Under `CUDA_VISIBLE_DEVICES` CUDA numbers the visible GPUs 0..n-1, so `all`
 * yields cuda:0..cuda:n-1 and the children inherit the variable unchanged.
 */
import { execFile } from 'node:child_process';
import { ConfigError } from '@inferq/shared';
import { parseDevice } from '../../runners/device.js';
import { formatDevice } from '../../runners/runner.js';

/** Where `all` looks for GPUs; a test passes its own. */
export interface GpuDiscovery {
  /** The environment (its `CUDA_VISIBLE_DEVICES`). */
  readonly env: NodeJS.ProcessEnv;
  /** The output of `nvidia-smi -L`; rejects when it cannot run. */
  readonly nvidiaSmiList: () => Promise<string>;
}

export const systemGpuDiscovery: GpuDiscovery = {
  env: process.env,
  nvidiaSmiList: () =>
    new Promise((resolve, reject) => {
      execFile('nvidia-smi', ['-L'], { timeout: 10_000, encoding: 'utf8' }, (err, stdout) => (err === null ? resolve(stdout) : reject(err)));
    }),
};

/** The devices of a `--devices` value, formatted (`cuda:0`), in the order given. */
export async function resolveDevices(spec: string, discovery: GpuDiscovery = systemGpuDiscovery): Promise<string[]> {
  if (spec.trim().toLowerCase() === 'all') return allGpus(discovery);
  const entries = spec.split(',').map((s) => s.trim());
  if (entries.some((e) => e === '')) throw new ConfigError(`--devices "${spec}": expected a comma-separated list such as cuda:0,cuda:1, or "all"`);
  const devices = entries.map((e) => formatDevice(parseDevice(e)));
  const seen = new Set<string>();
  for (const d of devices) {
    if (seen.has(d)) throw new ConfigError(`--devices "${spec}": ${d} is named twice (one worker per device)`);
    seen.add(d);
  }
  return devices;
}

async function allGpus(discovery: GpuDiscovery): Promise<string[]> {
  const visible = discovery.env['CUDA_VISIBLE_DEVICES'];
  if (visible !== undefined) {
    const n = visibleCount(visible);
    if (n === 0) throw new ConfigError(`--devices all: no GPUs found: CUDA_VISIBLE_DEVICES="${visible}" makes none visible`);
    return numbered(n);
  }
  let listing: string;
  try {
    listing = await discovery.nvidiaSmiList();
  } catch (err) {
    const why = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new ConfigError(`--devices all: no GPUs found: CUDA_VISIBLE_DEVICES is not set and nvidia-smi -L failed (${why}); name the devices instead (--devices cuda:0,cuda:1)`, { cause: err });
  }
  const n = gpuLines(listing);
  if (n === 0) throw new ConfigError('--devices all: no GPUs found: nvidia-smi -L lists none');
  return numbered(n);
}

/**
 * How many GPUs a `CUDA_VISIBLE_DEVICES` value makes visible: its entries (indices, `GPU-…` or
 * `MIG-…` UUIDs) up to the first negative one, where CUDA stops reading the list.
 */
export function visibleCount(value: string): number {
  let n = 0;
  for (const entry of value.split(',').map((s) => s.trim())) {
    if (entry === '' || entry.startsWith('-')) break;
    n++;
  }
  return n;
}

/** The GPUs in `nvidia-smi -L` output ("GPU 0: NVIDIA H100 … (UUID: GPU-…)"); MIG lines under a GPU are not counted. */
export function gpuLines(listing: string): number {
  return listing.split('\n').filter((line) => /^GPU \d+:/.test(line)).length;
}

function numbered(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `cuda:${i}`);
}
