/**
 * Connection settings of every command: TLS and credentials for Kafka, Redis and WebHDFS.
 *
 * Each flag can also come from an environment variable (shown in --help). Secrets never come
 * from a flag alone, because flags show in `ps`: a password or token is read from an
 * environment variable or from a file whose path is a flag. docs/security.md lists them all.
 *
 * ```
 *  addConnectionOptions(command, ['kafka', 'redis', 'hdfs'])   registers the flags; before the
 *                                                             action runs, sets the WebHDFS defaults
 *  kafkaClientConfig(flags)      → { ssl?, sasl? }   for KafkaWorker's `client` (kafkajs)
 *  redisClientOptions(flags, url) → { tls?, … }      for RedisWorker's `client` (ioredis)
 *  kafkaStartFailure(err, brokers) → ConnectionError  one line for a worker that could not connect
 * ```
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Option } from 'commander';
import type { Command } from 'commander';
import type { RedisOptions } from 'ioredis';
import type kafkajs from 'kafkajs';
import type { KafkaConfig, SASLOptions } from 'kafkajs';
import { ConfigError, ConnectionError } from '@inferq/shared';
import { setWebHdfsDefaults } from '../io/webhdfs.js';
import type { WebHdfsDefaults } from '../io/webhdfs.js';

export type Server = 'kafka' | 'redis' | 'hdfs';

/** The parsed connection flags (commander's camelCase names); every field optional. */
export interface ConnectionFlags {
  kafkaSsl?: boolean;
  kafkaCaFile?: string;
  kafkaCertFile?: string;
  kafkaKeyFile?: string;
  kafkaSaslMechanism?: 'plain' | 'scram-sha-256' | 'scram-sha-512';
  kafkaSaslUsername?: string;
  kafkaSaslPasswordFile?: string;
  redisCaFile?: string;
  redisCertFile?: string;
  redisKeyFile?: string;
  redisUsername?: string;
  redisPasswordFile?: string;
  hdfsCaFile?: string;
  hdfsTokenFile?: string;
}

type Env = Readonly<Record<string, string | undefined>>;

const SASL_MECHANISMS = ['plain', 'scram-sha-256', 'scram-sha-512'] as const;

/** Registers the connection flags of `servers` on `command`; returns it. */
export function addConnectionOptions(command: Command, servers: readonly Server[]): Command {
  const opt = (flags: string, description: string, env: string): Option => new Option(flags, description).env(env);
  if (servers.includes('kafka')) {
    command
      .addOption(new Option('--kafka-ssl', 'Kafka: connect over TLS (implied by the three file flags below; env KAFKA_SSL=true)'))
      .addOption(opt('--kafka-ca-file <pem>', 'Kafka: CA certificate(s) that signed the brokers\' certificates (default: the system CAs)', 'KAFKA_CA_FILE'))
      .addOption(opt('--kafka-cert-file <pem>', 'Kafka: client certificate, for brokers that require one (mTLS)', 'KAFKA_CERT_FILE'))
      .addOption(opt('--kafka-key-file <pem>', 'Kafka: the client certificate\'s private key (unencrypted PEM)', 'KAFKA_KEY_FILE'))
      .addOption(opt('--kafka-sasl-mechanism <mechanism>', 'Kafka: SASL authentication', 'KAFKA_SASL_MECHANISM').choices(SASL_MECHANISMS))
      .addOption(opt('--kafka-sasl-username <name>', 'Kafka: SASL user name', 'KAFKA_SASL_USERNAME'))
      .addOption(opt('--kafka-sasl-password-file <file>', 'Kafka: file holding the SASL password (or set KAFKA_SASL_PASSWORD)', 'KAFKA_SASL_PASSWORD_FILE'));
  }
  if (servers.includes('redis')) {
    command
      .addOption(opt('--redis-ca-file <pem>', 'Redis: CA certificate(s) for a rediss:// URL (default: the system CAs)', 'REDIS_CA_FILE'))
      .addOption(opt('--redis-cert-file <pem>', 'Redis: client certificate, for servers that require one (tls-auth-clients yes)', 'REDIS_CERT_FILE'))
      .addOption(opt('--redis-key-file <pem>', 'Redis: the client certificate\'s private key (unencrypted PEM)', 'REDIS_KEY_FILE'))
      .addOption(opt('--redis-username <name>', 'Redis: ACL user name (or in the URL)', 'REDIS_USERNAME'))
      .addOption(opt('--redis-password-file <file>', 'Redis: file holding the password (or set REDIS_PASSWORD, or put it in the URL)', 'REDIS_PASSWORD_FILE'));
  }
  if (servers.includes('hdfs')) {
    command
      .addOption(opt('--hdfs-ca-file <pem>', 'WebHDFS: CA certificate(s) for swebhdfs:// (HTTPS) NameNodes and DataNodes (default: the system CAs)', 'WEBHDFS_CA_FILE'))
      .addOption(opt('--hdfs-token-file <file>', 'WebHDFS: file holding a delegation token, sent as delegation= instead of user.name (or set WEBHDFS_TOKEN)', 'WEBHDFS_TOKEN_FILE'));
    // Files and sinks open WebHDFS clients deep inside the commands: they take these as process-wide defaults.
    command.hook('preAction', (_self, action) => setWebHdfsDefaults(webHdfsDefaults(action.opts<ConnectionFlags>())));
  }
  return command;
}

/** Reads a file named by `flag` (its path came from the flag or `env`), as a ConfigError naming both when it cannot. */
function readSetting(path: string, flag: string, env: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`${flag} (or ${env}) "${path}": ${(err as Error).message}`, { cause: err });
  }
}

/** A secret from the variable `env`, or from the file named by `fileFlag` (not both); trailing newlines dropped. */
function secret(env: Env, name: string, filePath: string | undefined, fileFlag: string, fileEnv: string): string | undefined {
  const fromEnv = env[name];
  if (fromEnv !== undefined && fromEnv !== '' && filePath !== undefined) throw new ConfigError(`both ${name} and ${fileFlag} (${fileEnv}) are set: give the secret once`);
  if (filePath !== undefined) {
    const v = readSetting(filePath, fileFlag, fileEnv).replace(/\r?\n$/, '');
    if (v === '') throw new ConfigError(`${fileFlag} (or ${fileEnv}) "${filePath}" is empty`);
    return v;
  }
  return fromEnv === undefined || fromEnv === '' ? undefined : fromEnv;
}

function envBool(env: Env, name: string): boolean | undefined {
  const v = env[name]?.trim().toLowerCase();
  if (v === undefined || v === '') return undefined;
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  throw new ConfigError(`${name}="${env[name]}": expected true or false`);
}

/** A certificate and its key, both or neither. */
function clientCert(certFile: string | undefined, keyFile: string | undefined, prefix: string, envPrefix: string): { cert: string; key: string } | undefined {
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (certFile === undefined || keyFile === undefined) throw new ConfigError(`--${prefix}-cert-file and --${prefix}-key-file (${envPrefix}_CERT_FILE, ${envPrefix}_KEY_FILE) go together: one is missing`);
  return { cert: readSetting(certFile, `--${prefix}-cert-file`, `${envPrefix}_CERT_FILE`), key: readSetting(keyFile, `--${prefix}-key-file`, `${envPrefix}_KEY_FILE`) };
}

/** kafkajs `ssl` and `sasl` from the flags and KAFKA_* variables; {} for a plaintext, unauthenticated cluster. */
export function kafkaClientConfig(flags: ConnectionFlags, env: Env = process.env): Pick<KafkaConfig, 'ssl' | 'sasl'> {
  const cert = clientCert(flags.kafkaCertFile, flags.kafkaKeyFile, 'kafka', 'KAFKA');
  const ca = flags.kafkaCaFile === undefined ? undefined : readSetting(flags.kafkaCaFile, '--kafka-ca-file', 'KAFKA_CA_FILE');
  const sslWanted = flags.kafkaSsl === true || envBool(env, 'KAFKA_SSL') === true || ca !== undefined || cert !== undefined;
  const ssl = sslWanted ? { ...(ca === undefined ? {} : { ca: [ca] }), ...cert } : undefined;
  const password = secret(env, 'KAFKA_SASL_PASSWORD', flags.kafkaSaslPasswordFile, '--kafka-sasl-password-file', 'KAFKA_SASL_PASSWORD_FILE');
  const mechanism = flags.kafkaSaslMechanism;
  const username = flags.kafkaSaslUsername;
  let sasl: SASLOptions | undefined;
  if (mechanism === undefined) {
    if (username !== undefined || password !== undefined) throw new ConfigError('a Kafka SASL user or password is set but no --kafka-sasl-mechanism (KAFKA_SASL_MECHANISM): plain, scram-sha-256 or scram-sha-512');
  } else {
    if (username === undefined) throw new ConfigError(`--kafka-sasl-mechanism ${mechanism}: --kafka-sasl-username (KAFKA_SASL_USERNAME) is missing`);
    if (password === undefined) throw new ConfigError(`--kafka-sasl-mechanism ${mechanism}: no password; set KAFKA_SASL_PASSWORD or --kafka-sasl-password-file`);
    sasl = { mechanism, username, password };
  }
  return { ...(ssl === undefined ? {} : { ssl }), ...(sasl === undefined ? {} : { sasl }) };
}

/** ioredis options (tls, username, password) from the flags and REDIS_* variables, for a connection to `url`. */
export function redisClientOptions(flags: ConnectionFlags, url: string, env: Env = process.env): Pick<RedisOptions, 'tls' | 'username' | 'password'> {
  const cert = clientCert(flags.redisCertFile, flags.redisKeyFile, 'redis', 'REDIS');
  const ca = flags.redisCaFile === undefined ? undefined : readSetting(flags.redisCaFile, '--redis-ca-file', 'REDIS_CA_FILE');
  const tlsUrl = /^rediss:\/\//i.test(url);
  if ((ca !== undefined || cert !== undefined) && !tlsUrl) throw new ConfigError(`--redis-ca-file / --redis-cert-file are for TLS: use a rediss:// URL, not "${url.replace(/\/\/[^@/]*@/, '//…@')}"`);
  const password = secret(env, 'REDIS_PASSWORD', flags.redisPasswordFile, '--redis-password-file', 'REDIS_PASSWORD_FILE');
  // ioredis lets the URL's credentials win silently: two passwords are refused instead.
  if (password !== undefined && /^rediss?:\/\/[^/@]*:[^/@]*@/i.test(url)) throw new ConfigError('the Redis URL holds a password and REDIS_PASSWORD / --redis-password-file gives another: give it once');
  const tls = ca === undefined && cert === undefined ? undefined : { ...(ca === undefined ? {} : { ca: [ca] }), ...cert };
  return {
    ...(tls === undefined ? {} : { tls }),
    ...(flags.redisUsername === undefined ? {} : { username: flags.redisUsername }),
    ...(password === undefined ? {} : { password }),
  };
}

/** The WebHDFS CA and delegation token from the flags and WEBHDFS_* variables. */
export function webHdfsDefaults(flags: ConnectionFlags, env: Env = process.env): WebHdfsDefaults {
  const ca = flags.hdfsCaFile === undefined ? undefined : readSetting(flags.hdfsCaFile, '--hdfs-ca-file', 'WEBHDFS_CA_FILE');
  const token = secret(env, 'WEBHDFS_TOKEN', flags.hdfsTokenFile, '--hdfs-token-file', 'WEBHDFS_TOKEN_FILE')?.trim();
  return { ...(ca === undefined ? {} : { ca }), ...(token === undefined ? {} : { delegationToken: token }) };
}

type KafkaErrors = Pick<typeof kafkajs, 'KafkaJSError' | 'KafkaJSSASLAuthenticationError' | 'KafkaJSConnectionError'>;
let loadedErrors: KafkaErrors | undefined;
/** kafkajs's error classes, loaded on first use so that commands that never talk to Kafka do not load kafkajs (CommonJS: required, not imported). */
const kafkaErrors = (): KafkaErrors => (loadedErrors ??= createRequire(import.meta.url)('kafkajs') as KafkaErrors);

/** The SASL or connection error inside a kafkajs retry chain ("retries exceeded" wraps it), or the error itself. */
function rootCause(err: Error): Error {
  const { KafkaJSError, KafkaJSSASLAuthenticationError, KafkaJSConnectionError } = kafkaErrors();
  let e = err;
  for (let i = 0; i < 5 && !(e instanceof KafkaJSSASLAuthenticationError) && !(e instanceof KafkaJSConnectionError) && e.cause instanceof KafkaJSError; i++) e = e.cause;
  return e;
}

/**
 * A kafkajs failure to connect or authenticate, as one ConnectionError naming the brokers and
 * what to check; anything else is returned as it is.
 */
export function kafkaStartFailure(err: unknown, brokers: string): unknown {
  const { KafkaJSError, KafkaJSSASLAuthenticationError, KafkaJSConnectionError } = kafkaErrors();
  if (!(err instanceof KafkaJSError)) return err;
  const root = rootCause(err);
  const address = root instanceof KafkaJSConnectionError && root.broker !== undefined ? root.broker : brokers;
  if (root instanceof KafkaJSSASLAuthenticationError) {
    return new ConnectionError(`kafka ${address}: ${root.message.replace(/\s+/g, ' ').trim()} (check --kafka-sasl-mechanism, --kafka-sasl-username and KAFKA_SASL_PASSWORD / --kafka-sasl-password-file)`, { address, causeCode: 'SASL_AUTHENTICATION_FAILED', cause: err });
  }
  if (root instanceof KafkaJSConnectionError) {
    const socketCode = (root as { code?: unknown }).code; // kafkajs copies the socket's code; its types omit it
    const code = typeof socketCode === 'string' ? socketCode : undefined;
    const hint = /closed connection/i.test(root.message)
      ? ' (the broker hung up: a SASL_SSL or SSL listener needs --kafka-ssl / --kafka-ca-file, SASL settings, or a client certificate)'
      : /certificate|SSL|TLS/i.test(root.message)
        ? ' (TLS: --kafka-ca-file for a private CA, --kafka-cert-file / --kafka-key-file for a listener that requires a client certificate)'
        : '';
    // OpenSSL's messages end in a newline: the error stays one line.
    return new ConnectionError(`kafka ${address}: could not connect: ${root.message.replace(/\s+/g, ' ').trim()}${hint}`, { address, causeCode: code, cause: err });
  }
  return err;
}
