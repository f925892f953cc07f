import { describe, expect, it } from 'vitest';
import { ConfigError } from './errors.js';
import { checkVersionLevel, compareVersions, parseModelConfig } from './model-config.js';

const parse = (text: string) => parseModelConfig(text, '/repo/m/config.yaml');
const refused = (text: string): string => {
  try {
    parse(text);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error(`accepted: ${text}`);
};

describe('traffic', () => {
  it('is a list of versions in numeric order with their weights', () => {
    expect(parse('traffic: { "3": 90, "4": 10 }').traffic).toEqual([
      { version: '3', weight: 90 },
      { version: '4', weight: 10 },
    ]);
    expect(parse('traffic:\n  10: 1\n  9: 2\n  100: 0\n').traffic).toEqual([
      { version: '9', weight: 2 },
      { version: '10', weight: 1 },
      { version: '100', weight: 0 },
    ]);
  });

  it('refuses bad versions and weights, naming them and the file', () => {
    expect(refused('traffic: { a: 1 }')).toBe('/repo/m/config.yaml: "traffic.a": version "a" is not an integer version');
    expect(refused('traffic: { "3": -1 }')).toBe('/repo/m/config.yaml: "traffic.3": weight -1 is not a non-negative number');
    expect(refused('traffic: { "3": .nan }')).toContain('NaN');
    expect(refused('traffic: { "3": .inf }')).toContain('"traffic.3"');
    expect(refused('traffic: { "3": "ninety" }')).toContain('"traffic.3"');
    expect(refused('traffic: { "3": 0, "4": 0 }')).toBe('/repo/m/config.yaml: "traffic": weights sum to 0; at least one must be positive');
    expect(refused('traffic: {}')).toContain('weights sum to 0');
    expect(refused('traffic: [3, 4]')).toContain('"traffic"');
  });
});

describe('shadow', () => {
  it('takes a version (string or integer) and a sample in (0, 1]', () => {
    expect(parse('shadow: { version: 4, sample: 0.1 }').shadow).toEqual({ version: '4', sample: 0.1 });
    expect(parse('shadow: { version: "12", sample: 1 }').shadow).toEqual({ version: '12', sample: 1 });
  });

  it('refuses a bad version or sample, naming it', () => {
    expect(refused('shadow: { version: "v4", sample: 0.5 }')).toBe('/repo/m/config.yaml: "shadow.version": version "v4" is not an integer version');
    expect(refused('shadow: { version: 4, sample: 0 }')).toBe('/repo/m/config.yaml: "shadow.sample": sample 0 is not in (0, 1]');
    expect(refused('shadow: { version: 4, sample: 1.5 }')).toContain('sample 1.5 is not in (0, 1]');
    expect(refused('shadow: { version: 4 }')).toContain('"shadow.sample"');
    expect(refused('shadow: { version: 4, sample: 0.5, extra: 1 }')).toContain('"shadow"');
  });
});

describe('checkVersionLevel', () => {
  it('refuses traffic, shadow and versionPolicy in a version-level file, naming the file', () => {
    const file = '/repo/m/3/config.yaml';
    expect(() => checkVersionLevel(parseModelConfig('traffic: { "3": 1 }', file), file, '/repo/m/config.yaml')).toThrow(
      new ConfigError('/repo/m/3/config.yaml: traffic belongs in /repo/m/config.yaml (model level)'),
    );
    expect(() => checkVersionLevel(parseModelConfig('shadow: { version: 4, sample: 1 }', file), file, '/repo/m/config.yaml')).toThrow(/shadow belongs in/);
    expect(() => checkVersionLevel(parseModelConfig('versionPolicy: all', file), file, '/repo/m/config.yaml')).toThrow(/versionPolicy belongs in/);
    expect(() => checkVersionLevel(parseModelConfig('batching: { maxBatchSize: 8 }', file), file, '/repo/m/config.yaml')).not.toThrow();
  });
});

describe('compareVersions', () => {
  it('orders numerically at any length, leading zeros ignored', () => {
    expect(['10', '9', '100', '010', '123456789012345679', '123456789012345678'].sort(compareVersions)).toEqual(['9', '10', '010', '100', '123456789012345678', '123456789012345679']);
  });
});
