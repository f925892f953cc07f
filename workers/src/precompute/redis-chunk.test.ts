import { describe, expect, it } from 'vitest';
import { tableBucket, tableKeys } from '@inferq/shared';
import type { TensorMap } from '@inferq/shared';
import { utf8Bytes } from '../io/utf8.js';
import { redisChunk, rowJson } from './precompute.js';

/** The commands in RESP2 bytes, each as its arguments (UTF-8). */
function parseCommands(payload: Buffer): string[][] {
  const out: string[][] = [];
  let at = 0;
  const line = (): string => {
    const end = payload.indexOf('\r\n', at);
    const s = payload.toString('latin1', at, end);
    at = end + 2;
    return s;
  };
  while (at < payload.length) {
    const head = line();
    expect(head[0]).toBe('*');
    const args: string[] = [];
    for (let i = 0; i < Number(head.slice(1)); i++) {
      const len = line();
      expect(len[0]).toBe('$');
      const n = Number(len.slice(1));
      args.push(payload.toString('utf8', at, at + n));
      expect(payload.toString('latin1', at + n, at + n + 2)).toBe('\r\n');
      at += n + 2;
    }
    out.push(args);
  }
  return out;
}

describe('redisChunk', () => {
  it('one HSET per bucket the rows fall in, fields in row order, each row once with its JSON; then SADD of the chunk', () => {
    const keys = Array.from({ length: 500 }, (_, r) => (r % 7 === 0 ? `Zürich:${r}` : r % 11 === 0 ? `東京:${r}` : `k:${r}`));
    const outputs: TensorMap = {
      score: { dtype: 'float32', shape: [500, 1], data: Float32Array.from({ length: 500 }, (_, r) => (r === 3 ? Number.NaN : Math.sin(r))) },
      emb: { dtype: 'float64', shape: [500, 3], data: Float64Array.from({ length: 1500 }, (_, i) => i / 7) },
    };
    const tk = tableKeys('inferq', 'tbl');
    const { payload, replies } = redisChunk(tk, 'run1', 37, 12, utf8Bytes(keys), outputs);
    const commands = parseCommands(payload);
    expect(replies).toBe(commands.length);
    expect(commands.at(-1)).toEqual(['SADD', tk.done('run1'), '12']);
    const json = rowJson(outputs);
    const seen = new Map<string, string>();
    const buckets = new Set<string>();
    for (const [cmd, bucket, ...fields] of commands.slice(0, -1)) {
      expect(cmd).toBe('HSET');
      expect(buckets.has(bucket!)).toBe(false); // one HSET per bucket
      buckets.add(bucket!);
      let lastRow = -1;
      for (let i = 0; i < fields.length; i += 2) {
        const key = fields[i]!;
        const row = keys.indexOf(key);
        expect(row).toBeGreaterThan(lastRow); // row order within a bucket
        lastRow = row;
        expect(bucket).toBe(tk.bucket('run1', tableBucket(key, 37))); // where every reader looks
        expect(seen.has(key)).toBe(false);
        seen.set(key, fields[i + 1]!);
      }
    }
    expect(seen.size).toBe(500);
    for (const [r, key] of keys.entries()) expect(seen.get(key)).toBe(json(r));
    expect(JSON.parse(seen.get(keys[3]!)!)).toEqual({ score: null, emb: [9 / 7, 10 / 7, 11 / 7] });
  });
});
