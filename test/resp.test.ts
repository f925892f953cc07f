/**
 * Precompute's bulk writer (workers/src/precompute/resp.ts) against the real Redis: the bytes
 * RespBuilder makes are commands Redis runs, replies are counted across TCP reads, error
 * replies reject the send that caused them (and only it), AUTH and SELECT from the URL.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ConfigError, DataIOError } from '@inferq/shared';
import { RespBuilder, RespConnection } from '../workers/src/precompute/resp.js';
import { startRedis } from './infra/redis.js';
import { queueName } from './helpers/redis.js';

const url = inject('redisUrl');
let redis: Redis;

beforeAll(() => {
  redis = new Redis(url);
});

afterAll(() => {
  redis.disconnect();
});

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

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
    const conn = await RespConnection.open(url);
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
    const conn = await RespConnection.open(url);
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

  it('AUTH (password, or user and password) and SELECT come from the URL; a wrong password is refused by name', async () => {
    const server = await startRedis();
    const admin = new Redis(server.url);
    try {
      await admin.acl('SETUSER', 'loader', 'on', '>s3cret/pw', '~*', '+@all');
      await admin.config('SET', 'requirepass', 'top:secret');
      const host = server.url.replace(/^redis:\/\//, '');
      const withUser = await RespConnection.open(`redis://loader:${encodeURIComponent('s3cret/pw')}@${host}/3`);
      await withUser.send(new RespBuilder().command('SET', 'k', 'in db 3').finish(), 1, 'set');
      withUser.close();
      const withPassword = await RespConnection.open(`redis://:${encodeURIComponent('top:secret')}@${host}`);
      await withPassword.send(new RespBuilder().command('SET', 'k', 'in db 0').finish(), 1, 'set');
      withPassword.close();
      const check = new Redis(`redis://:${encodeURIComponent('top:secret')}@${host}/3`);
      try {
        expect(await check.get('k')).toBe('in db 3');
        expect(await check.select(0).then(() => check.get('k'))).toBe('in db 0');
      } finally {
        check.disconnect();
      }
      const wrong = await RespConnection.open(`redis://:nope@${host}`).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(wrong).toBeInstanceOf(DataIOError);
      expect((wrong as Error).message).toMatch(/^redis 127\.0\.0\.1:\d+: AUTH failed: WRONGPASS/);
    } finally {
      admin.disconnect();
      await server.stop();
    }
  });

  it('bad URLs are refused before connecting (passwords never shown); a closed port is a retriable DataIOError', async () => {
    await expect(RespConnection.open('localhost:6379')).rejects.toThrow(ConfigError);
    await expect(RespConnection.open('http://u:pw@127.0.0.1:1')).rejects.toThrow('redis URL "http://u:***@127.0.0.1:1": precompute writes need a redis:// or rediss:// URL');
    await expect(RespConnection.open('redis://127.0.0.1:1/x')).rejects.toThrow('database "x" is not a number');
    const server = await startRedis();
    const port = new URL(server.url).port;
    await server.stop();
    const err = await RespConnection.open(`redis://127.0.0.1:${port}`).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DataIOError);
    expect((err as DataIOError).retriable).toBe(true);
    expect((err as Error).message).toContain(`redis 127.0.0.1:${port}: connect ECONNREFUSED`);
  });

  it('sends in flight when the connection drops are rejected, and later sends too', async () => {
    const server = await startRedis();
    const conn = await RespConnection.open(server.url);
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
