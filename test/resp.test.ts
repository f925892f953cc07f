/**
 * Precompute's bulk writer (workers/src/precompute/resp.ts) against the real Redis: the bytes
 * RespBuilder makes are commands Redis runs, replies are counted across TCP reads, error
 * replies reject the send that caused them (and only it), AUTH and SELECT from the URL.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataIOError } from '@inferq/shared';
import { RespBuilder, RespConnection, replyEnd } from '../workers/src/precompute/resp.js';
import type { RespEndpoint } from '../workers/src/io/resp-socket.js';
import { startRedis } from './infra/redis.js';
import { redisServer } from './infra/servers.js';
import { queueName } from './helpers/redis.js';

const url = await redisServer();
let redis: Redis;

beforeAll(() => {
  redis = new Redis(url);
});

afterAll(() => {
  redis.disconnect();
});

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

/** What ioredis parses from a URL, as precompute hands it over (`redis.options`). */
function endpoint(u: string): RespEndpoint {
  const client = new Redis(u, { lazyConnect: true });
  const { options } = client;
  client.disconnect();
  return options;
}

describe('RespBuilder + RespConnection', () => {
  it('HSETs of short, long, UTF-8 and binary fields land as written; thousands of replies are counted across reads', async () => {
    const key = `resp-${queueName()}`;
    const fields: [Uint8Array, Uint8Array][] = [
      [bytes('a'), bytes('1')],
      [bytes('España:3:12'), bytes('{"score":[0.25,-1.5e-7]}')],
      [bytes('東京'), bytes('x'.repeat(33))], // past the 32-byte copy loop
      [bytes('long'), bytes('y'.repeat(100_000))],
      [new Uint8Array([0, 13, 10, 255]), new Uint8Array([42, 13, 10])], // CR LF inside a bulk string
    ];
    // Inside one larger buffer, as precompute's key and value columns are.
    const joined = new Uint8Array(fields.reduce((n, [f, v]) => n + f.length + v.length, 7));
    const spans: [number, number][] = [];
    let at = 7;
    for (const [f, v] of fields) {
      for (const part of [f, v]) {
        joined.set(part, at);
        spans.push([at, at + part.length]);
        at += part.length;
      }
    }
    const b = new RespBuilder(16); // grows as it goes
    b.array(2 + spans.length).bulkString('HSET').bulkString(key);
    for (const [s, e] of spans) b.bulk(joined, s, e);
    // 12,000 more commands: their replies (":1\r\n" …) arrive over many reads.
    for (let i = 0; i < 12_000; i++) b.command('HSET', `${key}:many`, `f${i}`, String(i));
    const conn = await RespConnection.open(endpoint(url));
    try {
      await conn.send(b.finish(), 12_001, 'the test writes');
      expect(await redis.hlen(key)).toBe(fields.length);
      for (const [f, v] of fields) expect((await redis.hgetBuffer(key, Buffer.from(f)))?.equals(v), Buffer.from(f).toString('hex')).toBe(true);
      expect(await redis.hlen(`${key}:many`)).toBe(12_000);
      expect(await redis.hget(`${key}:many`, 'f11999')).toBe('11999');
      // Bulk-string and array replies (split across reads too) are counted as one reply each.
      await conn.send(new RespBuilder().command('HGET', key, 'long').command('HGETALL', key).command('GET', `${key}:none`).finish(), 3, 'reads');
    } finally {
      conn.close();
      await redis.del(key, `${key}:many`);
    }
  });

  it('an error reply rejects its send, naming the command and the error, after all its replies; the connection goes on', async () => {
    const key = `resp-${queueName()}`;
    await redis.set(`${key}:string`, 'not a hash');
    const conn = await RespConnection.open(endpoint(url));
    try {
      const bad = new RespBuilder().command('HSET', `${key}:ok`, 'f', '1').command('HSET', `${key}:string`, 'f', '1').command('HSET', `${key}:ok`, 'g', '2').finish();
      const err = await conn.send(bad, 3, 'writing chunk 7').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(DataIOError);
      expect((err as DataIOError).message).toMatch(/^redis 127\.0\.0\.1:\d+: writing chunk 7 failed: WRONGTYPE /);
      expect((err as DataIOError).retriable).toBe(true);
      expect(await redis.hget(`${key}:ok`, 'g')).toBe('2'); // the command after the failed one ran: all replies were read
      await conn.send(new RespBuilder().command('HSET', `${key}:ok`, 'h', '3').finish(), 1, 'next');
      expect(await redis.hget(`${key}:ok`, 'h')).toBe('3');
    } finally {
      conn.close();
      await redis.del(`${key}:string`, `${key}:ok`);
    }
  });

  it('connects where ioredis does for the same URL: user and password, password only, the database as path or ?db=, host:port without a scheme', async () => {
    const server = await startRedis();
    const admin = new Redis(server.url);
    try {
      await admin.acl('SETUSER', 'loader', 'on', '>s3cret/pw', '~*', '+@all');
      await admin.config('SET', 'requirepass', 'top:secret');
      const host = server.url.replace(/^redis:\/\//, '');
      const put = async (u: string, value: string): Promise<void> => {
        const conn = await RespConnection.open(endpoint(u));
        try {
          await conn.send(new RespBuilder().command('SET', value, 'here').finish(), 1, 'set');
        } finally {
          conn.close();
        }
      };
      await put(`redis://loader:${encodeURIComponent('s3cret/pw')}@${host}/3`, 'user-db3');
      await put(`redis://:${encodeURIComponent('top:secret')}@${host}`, 'password-db0');
      await put(`redis://:${encodeURIComponent('top:secret')}@${host}?db=5`, 'query-db5');
      const check = new Redis(`redis://:${encodeURIComponent('top:secret')}@${host}`);
      try {
        const inDb = async (db: number): Promise<string[]> => (await check.select(db), (await check.keys('*')).sort());
        expect(await inDb(3)).toEqual(['user-db3']);
        expect(await inDb(5)).toEqual(['query-db5']);
        expect(await inDb(0)).toEqual(['password-db0']);
        await check.config('SET', 'requirepass', '');
      } finally {
        check.disconnect();
      }
      await put(host, 'no-scheme'); // "127.0.0.1:port", as ioredis takes it
      expect(await admin.get('no-scheme')).toBe('here');
      await admin.config('SET', 'requirepass', 'again');
      const wrong = await RespConnection.open(endpoint(`redis://:nope@${host}`)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(wrong).toBeInstanceOf(DataIOError);
      expect((wrong as Error).message).toMatch(/^redis 127\.0\.0\.1:\d+: AUTH failed: WRONGPASS/);
      expect((wrong as Error).message).not.toContain('nope');
    } finally {
      admin.disconnect();
      await server.stop();
    }
  });

  it('a closed port is a retriable DataIOError naming host and port', async () => {
    const server = await startRedis();
    const port = new URL(server.url).port;
    await server.stop();
    const err = await RespConnection.open(endpoint(`redis://127.0.0.1:${port}`)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DataIOError);
    expect((err as DataIOError).retriable).toBe(true);
    expect((err as Error).message).toContain(`redis 127.0.0.1:${port}: connect ECONNREFUSED`);
  });

  it('replyEnd finds where each reply ends, however the bytes are split, and refuses malformed ones', () => {
    const replies = [':1\r\n', '-WRONGTYPE Operation against a key\r\n', '+OK\r\n', '$5\r\na\r\nbc\r\n', '$-1\r\n', '*2\r\n$1\r\nx\r\n*1\r\n:7\r\n', '*-1\r\n', '$0\r\n\r\n'];
    const all = Buffer.from(replies.join(''), 'latin1');
    const ends: number[] = [];
    for (let at = 0, i = 0; i < replies.length; i++) ends.push((at += replies[i]!.length));
    // Whole: each reply ends where it should.
    let at = 0;
    for (const end of ends) {
      expect(replyEnd(all, at)).toBe(end);
      at = end;
    }
    expect(replyEnd(all, at)).toBe(-1);
    // Cut anywhere: a reply not wholly there is "not yet" (-1), never a wrong end.
    for (let cut = 0; cut < all.length; cut++) {
      const part = all.subarray(0, cut);
      let p = 0;
      for (const end of ends) {
        const e = replyEnd(part, p);
        if (end <= cut) expect(e, `cut ${cut}`).toBe(end);
        else {
          expect(e, `cut ${cut}`).toBe(-1);
          break;
        }
        p = end;
      }
    }
    expect(() => replyEnd(Buffer.from('$x\r\n'), 0)).toThrow('malformed reply length "x"');
    expect(() => replyEnd(Buffer.from('$\r\n'), 0)).toThrow('malformed reply length ""');
    expect(() => replyEnd(Buffer.from(':1\rX'), 0)).toThrow('CR without LF');
    expect(() => replyEnd(Buffer.from('?1\r\n'), 0)).toThrow('unexpected reply type "?"');
  });

  it('sends in flight when the connection drops are rejected, and later sends too', async () => {
    const server = await startRedis();
    const conn = await RespConnection.open(endpoint(server.url));
    try {
      // BLPOP on an empty list holds its reply; the server going away must not leave the send hanging.
      const pending = conn.send(new RespBuilder().command('BLPOP', 'empty', '0').finish(), 1, 'waiting').then(
        () => undefined,
        (e: unknown) => e,
      );
      await server.stop();
      expect(await pending).toBeInstanceOf(DataIOError);
      await expect(conn.send(new RespBuilder().command('PING').finish(), 1, 'after')).rejects.toThrow(/redis 127\.0\.0\.1:\d+: /);
    } finally {
      conn.close();
    }
  });
});
