/** Flag parsers and helpers the commands share. */
import { InvalidArgumentError } from 'commander';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalStore, localCopy, parseLocation } from '../io/store.js';

export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive integer, got "${value}"`);
  return n;
}

/** A repeatable flag: every occurrence is kept, in order. */
export const collect = (value: string, previous: string[]): string[] => [...previous, value];

/** The default Redis URL of every command: $REDIS_URL, else a local server. */
export const defaultRedisUrl = (): string => process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';

/** A model repository on HDFS is copied to a local folder first (ONNX Runtime loads from bytes on disk). */
export async function modelRepoDir(uri: string): Promise<string> {
  if (parseLocation(uri).store instanceof LocalStore) return uri;
  return localCopy(uri, await mkdtemp(join(tmpdir(), 'inferq-models-')));
}

export function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`expected a non-negative integer, got "${value}"`);
  return n;
}
