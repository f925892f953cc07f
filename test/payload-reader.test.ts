/** The Redis worker's payload reader against real servers: sizes, order, limits, logins, TLS, a restart. */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataIOError } from '@inferq/shared';
import { PayloadReader } from '../workers/src/sources/redis/payload-reader.js';
import { startRedis } from './infra/redis.js';
import type { RedisServer } from './infra/redis.js';
import { makeTestCerts } from './infra/tls.js';

let server: RedisServer;
let admin: Redis;
const MB = 1024 * 1024;

beforeAll(async () => {
  server = await startRedis();
  admin = new Redis(server.url);
});
afterAll(async () => {
  admin.disconnect();
  await server.stop();
});

const bytes = (n: number): Buffer => randomBytes(n);

describe('PayloadReader', () => {
  it('reads values of every size, in order, many GETs in flight at once', async () => {
    const reader = new PayloadReader(admin.options, { maxBytes: 8 * MB, connectTimeoutMs: 5000 });
    try {
      // Sizes around the 1 MiB read buffer and the kernel's reads, and an empty value.
      const sizes = [0, 1, 13, 4096, 262_144, MB - 3, MB, MB + 7, 5 * MB + 1];
      const values = sizes.map(bytes);
      await Promise.all(values.map((v, i) => admin.set(`pr:${i}`, v)));
      const keys = Array.from({ length: 300 }, (_, k) => k % sizes.length);
      const got = await Promise.all(keys.map((i) => reader.get(`pr:${i}`)));
      for (const [k, i] of keys.entries()) expect(Buffer.compare(got[k]!, values[i]!), `GET #${k} (${sizes[i]} bytes)`).toBe(0);
      expect(await reader.get('pr:missing')).toBeNull();
    } finally {
      reader.close();
    }
  });

  it('refuses a value over the limit with an error naming it, and the next GETs still work', async () => {
    const reader = new PayloadReader(admin.options, { maxBytes: 1000, connectTimeoutMs: 5000 });
    try {
      await admin.set('pr:big', bytes(5000));
      await admin.set('pr:ok', Buffer.from('fine'));
      const [big, ok] = await Promise.allSettled([reader.get('pr:big'), reader.get('pr:ok')]);
      expect(big.status).toBe('rejected');
      expect(String((big as PromiseRejectedResult).reason)).toMatch(/5000 bytes, over the 1000-byte payload limit/);
      expect((ok as PromiseFulfilledResult<Buffer>).value.toString()).toBe('fine');
    } finally {
      reader.close();
    }
  });

  it('an error reply rejects that GET only', async () => {
    const reader = new PayloadReader(admin.options, { maxBytes: MB, connectTimeoutMs: 5000 });
    try {
      await admin.hset('pr:hash', 'f', 'v');
      await admin.set('pr:after', 'after');
      const [wrong, after] = await Promise.allSettled([reader.get('pr:hash'), reader.get('pr:after')]);
      expect(String((wrong as PromiseRejectedResult).reason)).toMatch(/WRONGTYPE/);
      expect((after as PromiseFulfilledResult<Buffer>).value.toString()).toBe('after');
    } finally {
      reader.close();
    }
  });

  it('logs in as an ACL user and selects the database of the URL', async () => {
    const user = `pr-${randomBytes(3).toString('hex')}`;
    await admin.acl('SETUSER', user, 'on', '>s3cret', '~*', '+@all');
    const db3 = new Redis(`${server.url}/3`);
    try {
      await db3.set('pr:db', 'in db 3');
      const url = new URL(server.url);
      const client = new Redis({ host: url.hostname, port: Number(url.port), username: user, password: 's3cret', db: 3, lazyConnect: true });
      const reader = new PayloadReader(client.options, { maxBytes: MB, connectTimeoutMs: 5000 });
      try {
        expect((await reader.get('pr:db'))?.toString()).toBe('in db 3');
      } finally {
        reader.close();
      }
      const wrong = new PayloadReader({ ...client.options, password: 'nope' }, { maxBytes: MB, connectTimeoutMs: 5000 });
      await expect(wrong.get('pr:db')).rejects.toThrow(/WRONGPASS/);
      wrong.close();
    } finally {
      db3.disconnect();
      await admin.acl('DELUSER', user);
    }
  });

  it('reconnects after the server restarts; GETs meanwhile fail as retriable', async () => {
    const own = await startRedis();
    const client = new Redis(own.url, { lazyConnect: true });
    const reader = new PayloadReader(client.options, { maxBytes: MB, connectTimeoutMs: 2000 });
    try {
      const c = new Redis(own.url);
      await c.set('k', 'one');
      expect((await reader.get('k'))?.toString()).toBe('one');
      c.disconnect();
      await own.stop();
      const down = await reader.get('k').catch((err: unknown) => err);
      expect(down).toBeInstanceOf(DataIOError);
      expect((down as DataIOError).retriable).toBe(true);
      await own.start();
      const c2 = new Redis(own.url);
      await c2.set('k', 'two');
      // GETs that find the dead connection together share one new connection.
      const got = await Promise.all(Array.from({ length: 20 }, () => reader.get('k')));
      expect(got.map((b) => b?.toString())).toEqual(Array.from({ length: 20 }, () => 'two'));
      const clients = (await c2.client('LIST')) as string;
      expect(clients.trim().split('\n')).toHaveLength(2); // c2 and the reader's one connection
      c2.disconnect();
    } finally {
      reader.close();
      await own.stop();
    }
  });

  it('reads over TLS', async () => {
    const certs = await makeTestCerts();
    const tlsServer = await startRedis({ tls: { certs } });
    const tls = { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey };
    const c = new Redis(tlsServer.url, { tls });
    const reader = new PayloadReader(c.options, { maxBytes: 4 * MB, connectTimeoutMs: 5000 });
    try {
      const v = bytes(3 * MB);
      await c.set('k', v);
      expect(Buffer.compare((await reader.get('k'))!, v)).toBe(0);
    } finally {
      reader.close();
      c.disconnect();
      await tlsServer.stop();
    }
  });

  it('a closed reader refuses GETs and fails those in flight', async () => {
    const reader = new PayloadReader(admin.options, { maxBytes: MB, connectTimeoutMs: 5000 });
    await admin.set('pr:x', 'x');
    expect((await reader.get('pr:x'))?.toString()).toBe('x');
    reader.close();
    await expect(reader.get('pr:x')).rejects.toThrow(/closed/);
  });
});
