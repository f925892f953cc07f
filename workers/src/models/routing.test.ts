import { describe, expect, it } from 'vitest';
import { ConfigError } from '@inferq/shared';
import type { ModelConfig } from '@inferq/shared';
import { silentLogger } from '../logging.js';
import { captureLogger } from '../../../test/helpers/models.js';
import { VersionRouter, hashPoints, pickVersion } from './routing.js';
import type { RoutingSource } from './routing.js';

/** A repository in memory: what the router reads, and how often. */
function source(config: ModelConfig, servedNow: string[] | undefined): RoutingSource & { reads: number; config: ModelConfig; servedNow: string[] | undefined } {
  const s = {
    reads: 0,
    config,
    servedNow,
    modelConfig: (name: string) => {
      s.reads++;
      return name === 'broken' ? Promise.reject(new ConfigError('/repo/broken/config.yaml: not valid YAML')) : Promise.resolve(s.config);
    },
    served: () => s.servedNow,
  };
  return s;
}

const ids = (n: number, prefix = 'job-'): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
const split9010: ModelConfig = { traffic: [{ version: '3', weight: 90 }, { version: '4', weight: 10 }] };

describe('hashPoints', () => {
  it('is SHA-1 of the UTF-8 id, bytes 0..7 and 8..15 as 53-bit fractions (values from Python hashlib)', () => {
    expect(hashPoints('job-1')).toEqual({ split: 0.775953978209005, sample: 0.5581576474716267 });
    expect(hashPoints('ü-ß')).toEqual({ split: 0.2371301289277148, sample: 0.23104875486598253 });
    expect(hashPoints('')).toEqual({ split: 0.8524420220332277, sample: 0.19662093733984454 });
  });
});

describe('pickVersion', () => {
  it('walks the cumulative weights in order, skipping zero weights', () => {
    const shares = [{ version: '3', weight: 90 }, { version: '4', weight: 0 }, { version: '5', weight: 10 }];
    expect(pickVersion(shares, 0)).toBe('3');
    expect(pickVersion(shares, 0.8999)).toBe('3');
    expect(pickVersion(shares, 0.9)).toBe('5');
    expect(pickVersion(shares, 0.999999999)).toBe('5');
  });
});

describe('VersionRouter', () => {
  it('splits 100 k ids 90/10 within ±1 %, the same way on a second router (another worker)', async () => {
    const a = new VersionRouter({ source: source(split9010, ['3', '4']), logger: silentLogger() });
    const b = new VersionRouter({ source: source(split9010, ['4', '3']), logger: silentLogger() });
    const all = ids(100_000);
    const got = await Promise.all(all.map((id) => a.route('m', id)));
    const again = await Promise.all(all.map((id) => b.route('m', id)));
    expect(again).toEqual(got);
    const share4 = got.filter((v) => v === '4').length / all.length;
    expect(got.every((v) => v === '3' || v === '4')).toBe(true);
    expect(Math.abs(share4 - 0.1)).toBeLessThan(0.01);
  });

  it('gives an explicit version precedence, and no version without traffic', async () => {
    const r = new VersionRouter({ source: source(split9010, ['3', '4']), logger: silentLogger() });
    const idsTo3 = [];
    for (const id of ids(50)) if ((await r.route('m', id)) === '3') idsTo3.push(id);
    expect(idsTo3.length).toBeGreaterThan(0);
    for (const id of idsTo3) expect(await r.route('m', id, '4')).toBe('4');
    const plain = new VersionRouter({ source: source({}, ['3', '4']), logger: silentLogger() });
    expect(await plain.route('m', 'job-1')).toBeUndefined();
    expect(await plain.route('m', 'job-1', '3')).toBe('3');
  });

  it('routes among served versions only, warning once per config change; none served: the default', async () => {
    const src = source({ traffic: [{ version: '3', weight: 50 }, { version: '4', weight: 50 }, { version: '5', weight: 1 }] }, ['4', '5']);
    const { logger, lines } = captureLogger();
    let now = 0;
    const r = new VersionRouter({ source: src, logger, ttlMs: 100, now: () => now });
    const got = await Promise.all(ids(2000).map((id) => r.route('m', id)));
    expect(new Set(got)).toEqual(new Set(['4', '5']));
    // The unserved version's share goes to the served ones in proportion (50:1).
    expect(got.filter((v) => v === '5').length / got.length).toBeLessThan(0.05);
    now = 200;
    await r.route('m', 'x');
    const warnings = (): string[] => lines.filter((l) => l['level'] === 40).map((l) => String(l['msg']));
    expect(warnings()).toEqual(['traffic of model "m" names versions its policy does not serve (3); its jobs go to 4, 5']);
    src.servedNow = ['1'];
    expect(await r.route('m', 'job-1')).toBeUndefined();
    expect(warnings()[1]).toBe('traffic of model "m" names versions its policy does not serve (3, 4, 5); its jobs go to the newest served version');
  });

  it('reads the config again after the TTL or invalidate(), not before', async () => {
    const src = source(split9010, ['3', '4']);
    let now = 1000;
    const r = new VersionRouter({ source: src, logger: silentLogger(), ttlMs: 2000, now: () => now });
    await Promise.all(ids(100).map((id) => r.route('m', id)));
    expect(src.reads).toBe(1);
    src.config = { traffic: [{ version: '4', weight: 1 }] };
    now = 2999;
    expect(await r.route('m', 'job-1')).toBe('3'); // job-1's point is 0.776: version 3 under 90/10
    now = 3000;
    expect(await r.route('m', 'job-1')).toBe('4');
    expect(src.reads).toBe(2);
    src.config = split9010;
    r.invalidate('m');
    expect(await r.route('m', 'job-1')).toBe('3');
    expect(src.reads).toBe(3);
  });

  it('routes a model whose config or served versions cannot be read to the default (the pool fails the job itself)', async () => {
    const r = new VersionRouter({ source: source(split9010, ['3', '4']), logger: silentLogger() });
    expect(await r.route('broken', 'job-1')).toBeUndefined();
    expect(await r.shadowFor('broken', 'job-1')).toBeUndefined();
    expect(await new VersionRouter({ source: source(split9010, undefined), logger: silentLogger() }).route('m', 'job-1')).toBeUndefined();
    const failing = { ...source(split9010, []), served: () => Promise.reject(new ConfigError('unknown model "m"')) };
    expect(await new VersionRouter({ source: failing, logger: silentLogger() }).route('m', 'job-1')).toBeUndefined();
  });

  it('follows the served versions at once, without waiting for the TTL (a version retired by a reload)', async () => {
    const src = source(split9010, ['3', '4']);
    const r = new VersionRouter({ source: src, logger: silentLogger(), ttlMs: 60_000 });
    const to4 = ids(200).filter((id) => hashPoints(id).split >= 0.9);
    expect(to4.length).toBeGreaterThan(0);
    for (const id of to4) expect(await r.route('m', id)).toBe('4');
    src.servedNow = ['3'];
    for (const id of to4) expect(await r.route('m', id)).toBe('3');
    expect(src.reads).toBe(1);
  });

  it('samples shadow batches by the id, independently of the split', async () => {
    const shadow = { version: '4', sample: 0.1 };
    const r = new VersionRouter({ source: source({ ...split9010, shadow }, ['3', '4']), logger: silentLogger() });
    const all = ids(20_000, 'batch-');
    const sampled = [];
    for (const id of all) if ((await r.shadowFor('m', id)) !== undefined) sampled.push(id);
    expect(Math.abs(sampled.length / all.length - 0.1)).toBeLessThan(0.01);
    for (const id of sampled.slice(0, 10)) expect(await r.shadowFor('m', id)).toEqual(shadow);
    // Were the sample drawn from the split's point, every sampled id would go to version 3.
    const to4 = (await Promise.all(sampled.map((id) => r.route('m', id)))).filter((v) => v === '4').length;
    expect(Math.abs(to4 / sampled.length - 0.1)).toBeLessThan(0.03);
    const always = new VersionRouter({ source: source({ shadow: { version: '4', sample: 1 } }, ['3', '4']), logger: silentLogger() });
    for (const id of ids(100)) expect(await always.shadowFor('m', id)).toEqual({ version: '4', sample: 1 });
  });
});
