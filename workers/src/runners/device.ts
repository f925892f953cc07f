import { ConfigError } from '@inferq/shared';
import type { Device } from './runner.js';

/** Parses `cpu`, `cuda` (= cuda:0) or `cuda:N`. */
export function parseDevice(text: string): Device {
  const t = text.trim().toLowerCase();
  if (t === 'cpu') return { kind: 'cpu' };
  const m = /^(?:cuda|gpu)(?::(\d{1,3}))?$/.exec(t);
  if (m !== null) return { kind: 'cuda', id: m[1] === undefined ? 0 : Number(m[1]) };
  throw new ConfigError(`device "${text}": expected "cpu" or "cuda:N" (N = GPU index, e.g. cuda:0)`);
}
