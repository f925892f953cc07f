import { describe, expect, it } from 'vitest';
import { ConfigError } from '@inferq/shared';
import { gpuLines, resolveDevices, visibleCount } from './devices.js';
import type { GpuDiscovery } from './devices.js';

const H100S = ['GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0b6c7e8a-1111-2222-3333-444455556666)', 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-1b6c7e8a-1111-2222-3333-444455556666)', ''].join('\n');

function discovery(env: NodeJS.ProcessEnv, listing: string | Error): GpuDiscovery & { calls: number } {
  const d = {
    env,
    calls: 0,
    nvidiaSmiList: () => {
      d.calls++;
      return listing instanceof Error ? Promise.reject(listing) : Promise.resolve(listing);
    },
  };
  return d;
}

async function configError(p: Promise<unknown>): Promise<ConfigError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigError);
  return err as ConfigError;
}

describe('--devices', () => {
  it('takes an explicit list in its order, normalised (cuda = cuda:0)', async () => {
    const none = discovery({}, new Error('must not be asked'));
    expect(await resolveDevices('cuda:1, cuda:0,cuda:3', none)).toEqual(['cuda:1', 'cuda:0', 'cuda:3']);
    expect(await resolveDevices('cuda', none)).toEqual(['cuda:0']);
    expect(await resolveDevices('cpu', none)).toEqual(['cpu']);
    expect(none.calls).toBe(0);
  });

  it('refuses a device named twice, an empty entry, an empty list and a bad device, naming the value', async () => {
    const d = discovery({}, H100S);
    expect((await configError(resolveDevices('cuda:0,cuda:1,cuda', d))).message).toBe('--devices "cuda:0,cuda:1,cuda": cuda:0 is named twice (one worker per device)');
    expect((await configError(resolveDevices('cpu,cpu', d))).message).toMatch(/"cpu,cpu": cpu is named twice/);
    expect((await configError(resolveDevices('cuda:0,,cuda:1', d))).message).toMatch(/^--devices "cuda:0,,cuda:1": expected a comma-separated list/);
    expect((await configError(resolveDevices('', d))).message).toMatch(/^--devices "": expected a comma-separated list/);
    expect((await configError(resolveDevices('cuda:0,tpu:1', d))).message).toMatch(/device "tpu:1": expected "cpu" or "cuda:N"/);
  });

  it('all: the GPUs CUDA_VISIBLE_DEVICES makes visible, numbered as CUDA renumbers them, without asking nvidia-smi', async () => {
    const d = discovery({ CUDA_VISIBLE_DEVICES: '2,3' }, H100S);
    expect(await resolveDevices('all', d)).toEqual(['cuda:0', 'cuda:1']);
    expect(await resolveDevices('ALL', discovery({ CUDA_VISIBLE_DEVICES: 'GPU-0b6c7e8a,MIG-1,MIG-2' }, H100S))).toEqual(['cuda:0', 'cuda:1', 'cuda:2']);
    expect(d.calls).toBe(0);
    expect(visibleCount('0,1,-1,3')).toBe(2); // CUDA reads the list up to the first invalid index
    expect(visibleCount(' 4 ')).toBe(1);
    const empty = await configError(resolveDevices('all', discovery({ CUDA_VISIBLE_DEVICES: '' }, H100S)));
    expect(empty.message).toBe('--devices all: no GPUs found: CUDA_VISIBLE_DEVICES="" makes none visible');
    expect((await configError(resolveDevices('all', discovery({ CUDA_VISIBLE_DEVICES: '-1' }, H100S)))).message).toMatch(/CUDA_VISIBLE_DEVICES="-1" makes none visible/);
  });

  it('all: otherwise one device per GPU line of nvidia-smi -L (MIG lines are not GPUs)', async () => {
    expect(await resolveDevices('all', discovery({}, H100S))).toEqual(['cuda:0', 'cuda:1']);
    const mig = 'GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaa)\n  MIG 3g.20gb     Device  0: (UUID: MIG-bbb)\n  MIG 3g.20gb     Device  1: (UUID: MIG-ccc)\n';
    expect(gpuLines(mig)).toBe(1);
    const zero = await configError(resolveDevices('all', discovery({}, 'No devices were found\n')));
    expect(zero.message).toBe('--devices all: no GPUs found: nvidia-smi -L lists none');
    const missing = await configError(resolveDevices('all', discovery({}, new Error('spawn nvidia-smi ENOENT'))));
    expect(missing.message).toBe(
      '--devices all: no GPUs found: CUDA_VISIBLE_DEVICES is not set and nvidia-smi -L failed (spawn nvidia-smi ENOENT); name the devices instead (--devices cuda:0,cuda:1)',
    );
  });
});
