/**
 * TLS and authentication against real secured servers, each started once for this suite:
 * a Kafka broker with SASL_SSL (SCRAM-SHA-256/512, PLAIN) and SSL (client certificate)
 * listeners, a TLS-only redis-server requiring client certificates, and an HTTPS-only
 * MiniDFSCluster that issues delegation tokens. The `inferq worker` processes get their
 * secrets from environment variables, as docs/security.md tells users to.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import type { ConnectionOptions } from 'node:tls';
import * as ort from 'onnxruntime-node';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConnectionError, KafkaProducer, Producer } from '@inferq/producer';
import type { Reply } from '@inferq/producer';
import { kafkaClientConfig, redisClientOptions, webHdfsDefaults } from '../workers/src/cli/connections.js';
import { HdfsStore, openParquet, parseLocation, WebHdfs, WebHdfsError } from '@inferq/workers';
import { startHdfs } from './infra/hdfs.js';
import type { HdfsServer } from './infra/hdfs.js';
import { startKafka } from './infra/kafka.js';
import type { KafkaServer } from './infra/kafka.js';
import { startRedis } from './infra/redis.js';
import type { RedisServer } from './infra/redis.js';
import { redisServer } from './infra/servers.js';
import { makeTestCerts } from './infra/tls.js';
import type { TestCerts } from './infra/tls.js';
import { cliArgv, REPO_ROOT } from './helpers/cli.js';
import { createTopic, topicName } from './helpers/kafka.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { dropQueue, queueName, waitFor } from './helpers/redis.js';
import type { WorkerProcess } from './helpers/redis.js';

const USER = { name: 'inferq-app', password: 'app-secret-3141' };
const spec = smallMlp([4, 8, 2], 5);
let certs: TestCerts;
let repo: string;
let session: ort.InferenceSession;

beforeAll(async () => {
  certs = await makeTestCerts();
  repo = join(await tempDir(), 'models');
  const dir = await writeModel(repo, 'mlp', '1', spec);
  session = await ort.InferenceSession.create(await readFile(join(dir, 'model.onnx')));
});

afterAll(async () => {
  await session?.release();
});

const x = [
  [0.1, -0.2, 0.3, 0.4],
  [1, 2, -3, 0.5],
];

async function expectScores(reply: Reply): Promise<void> {
  const out = await session.run({ features: new ort.Tensor('float32', Float32Array.from(x.flat()), [x.length, 4]) });
  const want = Array.from(out['score']!.data as Float32Array);
  const got = Array.from(reply.outputs['score']!.data as Float32Array);
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThan(1e-6);
}

/** `inferq worker` with these arguments and extra environment (secrets travel there, never in argv). */
function worker(args: readonly string[], env: NodeJS.ProcessEnv = {}): WorkerProcess {
  const child = spawn(process.execPath, cliArgv(['worker', ...args]), {
    cwd: REPO_ROOT,
    env: { ...process.env, INFERQ_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('inferq worker: serving')) resolve();
    });
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => reject(new Error(`worker exited (${code}) before it was ready:\n${out}`)));
  });
  ready.catch(() => undefined);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { child, ready, exited, output: () => out };
}

async function stop(w: WorkerProcess): Promise<void> {
  if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGTERM');
  await w.exited;
}

/** The last non-empty stderr/stdout line of an exited worker, and how many lines mention a stack frame. */
function lastLine(w: WorkerProcess): { line: string; stackFrames: number } {
  const lines = w.output().split('\n').filter((l) => l.trim() !== '');
  return { line: lines[lines.length - 1] ?? '', stackFrames: lines.filter((l) => /^\s+at /.test(l)).length };
}

describe('connection settings (cli/connections.ts)', () => {
  it('reads secrets from the environment or a file, never both, and refuses incomplete settings by name', async () => {
    const pwFile = join(certs.dir, 'kafka-password');
    await writeFile(pwFile, 'from-a-file\n');
    const sasl = { kafkaSaslMechanism: 'scram-sha-512', kafkaSaslUsername: 'u' } as const;
    expect(kafkaClientConfig({ ...sasl, kafkaSaslPasswordFile: pwFile }, {})).toEqual({ sasl: { mechanism: 'scram-sha-512', username: 'u', password: 'from-a-file' } });
    expect(kafkaClientConfig({ ...sasl, kafkaCaFile: certs.caFile }, { KAFKA_SASL_PASSWORD: 'env' })).toEqual({ ssl: { ca: [certs.ca] }, sasl: { mechanism: 'scram-sha-512', username: 'u', password: 'env' } });
    expect(kafkaClientConfig({}, { KAFKA_SSL: 'true' })).toEqual({ ssl: {} });
    expect(kafkaClientConfig({}, {})).toEqual({});
    expect(() => kafkaClientConfig({ ...sasl, kafkaSaslPasswordFile: pwFile }, { KAFKA_SASL_PASSWORD: 'env' })).toThrow(/both KAFKA_SASL_PASSWORD and --kafka-sasl-password-file/);
    expect(() => kafkaClientConfig(sasl, {})).toThrow(/no password; set KAFKA_SASL_PASSWORD or --kafka-sasl-password-file/);
    expect(() => kafkaClientConfig({ kafkaSaslUsername: 'u' }, {})).toThrow(/no --kafka-sasl-mechanism/);
    expect(() => kafkaClientConfig({ kafkaCertFile: certs.clientCertFile }, {})).toThrow(/--kafka-cert-file and --kafka-key-file .* go together/);
    expect(() => kafkaClientConfig({ kafkaCaFile: join(certs.dir, 'missing.pem') }, {})).toThrow(/--kafka-ca-file \(or KAFKA_CA_FILE\) ".*missing.pem"/);
    expect(redisClientOptions({ redisCaFile: certs.caFile }, 'rediss://h:6380', { REDIS_PASSWORD: 'pw' })).toEqual({ tls: { ca: [certs.ca] }, password: 'pw' });
    expect(() => redisClientOptions({ redisCaFile: certs.caFile }, 'redis://h:6379', {})).toThrow(/use a rediss:\/\/ URL/);
    expect(() => redisClientOptions({}, 'rediss://:inurl@h:6380', { REDIS_PASSWORD: 'pw' })).toThrow(/URL holds a password/);
    expect(webHdfsDefaults({ hdfsCaFile: certs.caFile }, { WEBHDFS_TOKEN: ' tok \n' })).toEqual({ ca: certs.ca, delegationToken: 'tok' });
  });
});

describe('Kafka over SASL_SSL and mTLS', () => {
  let kafka: KafkaServer;
  let saslBrokers: string;
  let sslBrokers: string;

  beforeAll(async () => {
    kafka = await startKafka({ security: { certs, users: [USER] } });
    saslBrokers = kafka.secured!.saslSsl.join(',');
    sslBrokers = kafka.secured!.ssl.join(',');
  });

  afterAll(async () => {
    await kafka?.destroy();
  });

  const workerArgs = (topic: string, brokers: string): string[] => ['--transport', 'kafka', '--topic', topic, '--group', `g-${topic}`, '--brokers', brokers, '--model-repo', repo, '--threads', '1', '--shutdown-timeout-ms', '5000'];

  it('a worker on SCRAM-SHA-512 (password from KAFKA_SASL_PASSWORD) serves a predict() made over SCRAM-SHA-256', async () => {
    const topic = topicName('auth');
    await createTopic(kafka.brokers, topic, 1);
    const w = worker([...workerArgs(topic, saslBrokers), '--kafka-ca-file', certs.caFile, '--kafka-sasl-mechanism', 'scram-sha-512', '--kafka-sasl-username', USER.name], {
      KAFKA_SASL_PASSWORD: USER.password,
    });
    const producer = new KafkaProducer({
      brokers: kafka.secured!.saslSsl,
      topic,
      ssl: { ca: [certs.ca] },
      sasl: { mechanism: 'scram-sha-256', username: USER.name, password: USER.password },
    });
    try {
      await w.ready;
      expect(w.output()).not.toContain(USER.password);
      await expectScores(await producer.predict('mlp', x, { timeoutMs: 30_000 }));
    } finally {
      await producer.close();
      await stop(w);
    }
  });

  it('a worker on the mTLS listener (KAFKA_* variables only) serves a predict() made with a client certificate', async () => {
    const topic = topicName('auth');
    await createTopic(kafka.brokers, topic, 1);
    const w = worker(workerArgs(topic, sslBrokers), { KAFKA_CA_FILE: certs.caFile, KAFKA_CERT_FILE: certs.clientCertFile, KAFKA_KEY_FILE: certs.clientKeyFile });
    const producer = new KafkaProducer({ brokers: kafka.secured!.ssl, topic, ssl: { ca: [certs.ca], cert: certs.clientCert, key: certs.clientKey } });
    try {
      await w.ready;
      await expectScores(await producer.predict('mlp', x, { timeoutMs: 30_000 }));
    } finally {
      await producer.close();
      await stop(w);
    }
  });

  it('a worker with a wrong password exits non-zero with one line naming the broker and the SASL failure', async () => {
    const topic = topicName('auth');
    const w = worker([...workerArgs(topic, saslBrokers), '--kafka-sasl-mechanism', 'scram-sha-512', '--kafka-sasl-username', USER.name], {
      KAFKA_CA_FILE: certs.caFile,
      KAFKA_SASL_PASSWORD: 'not-the-password',
    });
    const { code } = await w.exited;
    expect(code).toBe(1);
    const { line, stackFrames } = lastLine(w);
    expect(stackFrames, w.output()).toBe(0);
    expect(line).toMatch(/^inferq: error: /);
    expect(line).toContain(saslBrokers);
    expect(line).toMatch(/SASL SCRAM SHA512 authentication failed/i);
    expect(w.output()).not.toContain('not-the-password');
  });

  it('a worker without SASL settings, or without a client certificate on the mTLS listener, exits non-zero with one line naming the broker', async () => {
    const topic = topicName('auth');
    for (const [brokers, reason] of [
      [saslBrokers, /could not connect: .*Closed connection \(the broker hung up/],
      [sslBrokers, /could not connect: .*alert bad certificate.*\(TLS: /],
    ] as const) {
      const w = worker(workerArgs(topic, brokers), { KAFKA_CA_FILE: certs.caFile });
      const { code } = await w.exited;
      expect(code).toBe(1);
      const { line, stackFrames } = lastLine(w);
      expect(stackFrames, w.output()).toBe(0);
      expect(line).toMatch(/^inferq: error: kafka /);
      expect(line).toContain(brokers);
      expect(line).toMatch(reason);
    }
  });

  it('the SDK is refused without credentials, with a wrong password, and without the client certificate', async () => {
    const topic = topicName('auth');
    const [sasl, ssl] = [kafka.secured!.saslSsl[0]!, kafka.secured!.ssl[0]!];
    const attempts: { what: string; producer: KafkaProducer; address: string; error: RegExp }[] = [
      {
        what: 'wrong password',
        producer: new KafkaProducer({ brokers: [sasl], topic, ssl: { ca: [certs.ca] }, sasl: { mechanism: 'scram-sha-256', username: USER.name, password: 'wrong' } }),
        address: sasl,
        error: /SASL SCRAM SHA256 authentication failed/,
      },
      { what: 'no SASL', producer: new KafkaProducer({ brokers: [sasl], topic, ssl: { ca: [certs.ca] } }), address: sasl, error: /closed connection/i },
      { what: 'no client certificate', producer: new KafkaProducer({ brokers: [ssl], topic, ssl: { ca: [certs.ca] } }), address: ssl, error: /alert bad certificate/ },
    ];
    for (const a of attempts) {
      try {
        const err = await a.producer.predict('mlp', x, { timeoutMs: 20_000 }).catch((e: unknown) => e);
        expect(err, a.what).toBeInstanceOf(ConnectionError);
        expect((err as ConnectionError).address, a.what).toBe(a.address);
        expect((err as Error).message, a.what).toMatch(a.error);
      } finally {
        await a.producer.close();
      }
    }
  }, 120_000);
});

describe('Redis over TLS (rediss://, client certificates required)', () => {
  let redis: RedisServer;

  beforeAll(async () => {
    redis = await startRedis({ tls: { certs, requireClientCert: true } });
  });

  afterAll(async () => {
    await redis?.stop();
  });

  it('a worker with the CA and a client certificate (REDIS_* variables) serves a Producer over rediss://', async () => {
    const queue = queueName('auth');
    const w = worker(['--queue', queue, '--redis', redis.url, '--model-repo', repo, '--threads', '1', '--shutdown-timeout-ms', '5000'], {
      REDIS_CA_FILE: certs.caFile,
      REDIS_CERT_FILE: certs.clientCertFile,
      REDIS_KEY_FILE: certs.clientKeyFile,
    });
    const client = new Redis(redis.url, { tls: { ca: [certs.ca], cert: certs.clientCert, key: certs.clientKey } });
    const producer = new Producer({ redis: client, queue });
    try {
      await w.ready;
      await expectScores(await producer.predict('mlp', x, { timeoutMs: 30_000 }));
    } finally {
      await producer.close();
      client.disconnect();
      await stop(w);
    }
  });

  it('a client without the CA, or without a client certificate, is refused with a TLS error', async () => {
    const cases: [string, ConnectionOptions, RegExp][] = [
      ['no CA', { cert: certs.clientCert, key: certs.clientKey }, /self-signed certificate in certificate chain/],
      ['no client certificate', { ca: [certs.ca] }, /./],
    ];
    for (const [what, tls, error] of cases) {
      const errors: string[] = [];
      const client = new Redis(redis.url, { tls, maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
      client.on('error', (e: Error) => errors.push(e.message));
      await expect(client.connect().then(() => client.ping()), what).rejects.toThrow();
      await waitFor(() => errors.length > 0, `a TLS error (${what})`, 10_000);
      expect(errors.join('\n'), what).toMatch(error);
      client.disconnect();
    }
  });

  it('a Producer over rediss:// without the CA rejects predict() with a ConnectionError naming the server and the certificate', async () => {
    const producer = new Producer({ redis: new Redis(redis.url, { tls: { cert: certs.clientCert, key: certs.clientKey }, lazyConnect: true }), queue: queueName('auth'), connectTimeoutMs: 3000 });
    try {
      const err = await producer.predict('mlp', x, { timeoutMs: 10_000 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectionError);
      expect((err as ConnectionError).address).toContain(String(redis.port));
      expect((err as Error).message).toMatch(/self-signed certificate in certificate chain/);
    } finally {
      await producer.close();
    }
  });
});


/** A request to the NameNode over HTTPS (trusting the test CA); the status and the body. */
function httpsCall(method: string, url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, ca }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * The token with one byte of its password (the NameNode's HMAC of the identifier) flipped. A
 * token's URL string is base64url of: vint identifier length, identifier, vint password length,
 * password, kind, service (Hadoop's Token.write); lengths under 128 are one byte.
 */
function tamperPassword(token: string): string {
  const bytes = Buffer.from(token, 'base64url');
  const idLength = bytes[0]!;
  expect(idLength).toBeLessThan(128);
  const at = 1 + idLength + 1;
  bytes[at] = bytes[at]! ^ 0xff;
  return bytes.toString('base64url');
}

describe('WebHDFS over HTTPS (swebhdfs://) with delegation tokens, on a Kerberos-secured HDFS', () => {
  let hdfs: HdfsServer;
  let authority: string;

  beforeAll(async () => {
    hdfs = await startHdfs({ https: { certs, kerberos: true } });
    authority = new URL(hdfs.url).host;
  });

  afterAll(async () => {
    await hdfs?.destroy();
  });

  /** A delegation token for `user`, from the NameNode's GETDELEGATIONTOKEN. */
  async function delegationToken(user: string): Promise<string> {
    const res = await httpsCall('GET', `${hdfs.url}/webhdfs/v1/?op=GETDELEGATIONTOKEN&user.name=${user}&renewer=${user}`, certs.ca);
    expect(res.status, res.body).toBe(200);
    return (JSON.parse(res.body) as { Token: { urlString: string } }).Token.urlString;
  }

  it('swebhdfs:// with the CA writes and reads a file (NameNode and DataNode over HTTPS)', async () => {
    const loc = parseLocation(`swebhdfs://${authority}/inferq-auth/${randomUUID()}/f.bin`, { ca: certs.ca });
    expect(loc.store).toBeInstanceOf(HdfsStore);
    expect((loc.store as HdfsStore).client.url).toBe(`https://${authority}`);
    const bytes = Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 251));
    await loc.store.putBytes(loc.path, bytes);
    expect(Buffer.compare(await loc.store.readFile(loc.path), bytes)).toBe(0);
  });

  it('a client without the CA, or trusting another CA, is refused at once with a TLS error naming the fix', async () => {
    for (const ca of [undefined, await readFile(certs.otherCaFile, 'utf8')]) {
      const client = new WebHdfs({ url: hdfs.url, ...(ca === undefined ? {} : { ca }), attempts: 5 });
      const started = Date.now();
      const err = await client.listStatus('/').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WebHdfsError);
      expect((err as WebHdfsError).retriable).toBe(false);
      expect((err as Error).message).toMatch(/TLS certificate was refused: self-signed certificate in certificate chain .*WEBHDFS_CA_FILE/);
      expect(Date.now() - started).toBeLessThan(2000); // not retried with backoff
    }
  });

  it('a token from GETDELEGATIONTOKEN goes as delegation= instead of user.name: the client writes and reads as the token\'s user', async () => {
    const token = await delegationToken('token-user');
    const client = new WebHdfs({ url: hdfs.url, ca: certs.ca, delegationToken: token, user: 'not-sent' });
    const dir = `/inferq-auth/${randomUUID()}`;
    await client.mkdirs(dir);
    await client.create(`${dir}/t.txt`, Buffer.from('with a token'));
    expect((await client.open(`${dir}/t.txt`)).toString()).toBe('with a token');
    expect((await client.getFileStatus(`${dir}/t.txt`))!.owner).toBe('token-user');
  });

  it('a tampered or cancelled token is refused (HTTP 403), not retried', async () => {
    const good = await delegationToken('token-user');
    const cancelled = await delegationToken('token-user');
    const cancel = await httpsCall('PUT', `${hdfs.url}/webhdfs/v1/?op=CANCELDELEGATIONTOKEN&user.name=token-user&token=${cancelled}`, certs.ca);
    expect(cancel.status, cancel.body).toBe(200);
    const path = `/inferq-auth/${randomUUID()}/refused.txt`;
    for (const [what, token, reason] of [
      ['tampered', tamperPassword(good), /InvalidToken: .*password doesn't match/],
      ['cancelled', cancelled, /InvalidToken: .*can't be found in cache/],
    ] as const) {
      const client = new WebHdfs({ url: hdfs.url, ca: certs.ca, delegationToken: token, attempts: 5 });
      const err = await client.create(path, Buffer.from('no')).catch((e: unknown) => e);
      expect(err, what).toBeInstanceOf(WebHdfsError);
      expect((err as WebHdfsError).status, what).toBe(403);
      expect((err as WebHdfsError).retriable, what).toBe(false);
      expect((err as Error).message, what).toMatch(reason);
    }
    // The good token still writes: the refusals were about the tokens.
    await new WebHdfs({ url: hdfs.url, ca: certs.ca, delegationToken: good }).create(path, Buffer.from('yes'));
  });

  it('a Redis worker writes its Parquet sink to swebhdfs:// with the CA and token from WEBHDFS_CA_FILE / WEBHDFS_TOKEN_FILE', async () => {
    const redisUrl = await redisServer();
    const queue = queueName('auth-hdfs');
    const dir = `/inferq-auth/sink-${queue}`;
    const tokenFile = join(certs.dir, `token-${queue}`);
    await writeFile(tokenFile, `${await delegationToken('sink-user')}\n`, { mode: 0o600 });
    const w = worker(['--queue', queue, '--redis', redisUrl, '--model-repo', repo, '--threads', '1', '--sink', `parquet:swebhdfs://${authority}${dir}`, '--sink-roll-ms', '200', '--shutdown-timeout-ms', '5000'], {
      WEBHDFS_CA_FILE: certs.caFile,
      WEBHDFS_TOKEN_FILE: tokenFile,
    });
    const producer = new Producer({ redis: redisUrl, queue });
    try {
      await w.ready;
      await expectScores(await producer.predict('mlp', x, { timeoutMs: 30_000 }));
      const client = new WebHdfs({ url: hdfs.url, ca: certs.ca });
      let files: string[] = [];
      const walk = async (path: string): Promise<string[]> => {
        if ((await client.getFileStatus(path)) === undefined) return [];
        const found: string[] = [];
        for (const e of await client.listStatus(path)) {
          if (e.pathSuffix.startsWith('_')) continue;
          if (e.type === 'DIRECTORY') found.push(...(await walk(`${path}/${e.pathSuffix}`)));
          else found.push(`${path}/${e.pathSuffix}`);
        }
        return found;
      };
      await waitFor(async () => (files = await walk(dir)).length > 0, 'a sink file on HDFS', 30_000, 200);
      expect(files).toHaveLength(1);
      // Written with the token from WEBHDFS_TOKEN_FILE: the file belongs to the token's user.
      expect((await client.getFileStatus(files[0]!))!.owner).toBe('sink-user');
      const local = join(certs.dir, `${queue}.parquet`);
      await writeFile(local, await client.open(files[0]!));
      const reader = await openParquet(local);
      expect(reader.numRows).toBe(x.length);
      await reader.close();
    } finally {
      await producer.close();
      await stop(w);
      await dropQueue(redisUrl, queue);
    }
  });
});
