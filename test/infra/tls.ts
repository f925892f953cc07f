/**
 * Throw-away certificates for the secured test servers, made with `openssl` (and `keytool`
 * for the Java servers' stores) in a temp folder at test time; never committed.
 *
 *   ca.pem / ca-key.pem           a self-signed CA
 *   server.pem / server-key.pem   signed by it, SAN 127.0.0.1 and localhost
 *   client.pem / client-key.pem   signed by it, CN "inferq-client" (mTLS)
 *   server.p12, client.p12        PKCS12 keystores (key + chain), password `storePassword`
 *   truststore.p12                PKCS12 truststore holding the CA (keytool: Java trusts only entries it wrote)
 *   other-ca.pem                  a second CA that signed nothing here (a client that trusts the wrong CA)
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestCerts {
  readonly dir: string;
  readonly caFile: string;
  readonly serverCertFile: string;
  readonly serverKeyFile: string;
  readonly clientCertFile: string;
  readonly clientKeyFile: string;
  readonly serverKeystore: string;
  readonly clientKeystore: string;
  readonly truststore: string;
  readonly otherCaFile: string;
  /** Password of the PKCS12 stores. */
  readonly storePassword: string;
  /** PEM contents, for clients that take bytes (kafkajs `ssl`, ioredis `tls`). */
  readonly ca: string;
  readonly clientCert: string;
  readonly clientKey: string;
}

function run(cmd: string, args: readonly string[], cwd: string): void {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status}): ${r.stderr}${r.stdout}`);
}

/** A self-signed CA into `<name>.pem` / `<name>-key.pem`. */
function makeCa(dir: string, name: string, cn: string): void {
  run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${cn}`, '-keyout', `${name}-key.pem`, '-out', `${name}.pem`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
}

/** A key and a certificate signed by ca.pem, with the given extensions. */
function makeLeaf(dir: string, name: string, cn: string, extensions: string): void {
  writeFileSync(join(dir, `${name}.ext`), extensions);
  run('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', `${name}-key.pem`, '-out', `${name}.csr`], dir);
  run('openssl', ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.pem`], dir);
}

export async function makeTestCerts(): Promise<TestCerts> {
  const dir = await mkdtemp(join(tmpdir(), 'inferq-certs-'));
  const storePassword = 'inferq-test';
  makeCa(dir, 'ca', 'inferq test CA');
  makeCa(dir, 'other-ca', 'some other CA');
  makeLeaf(dir, 'server', 'localhost', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n');
  makeLeaf(dir, 'client', 'inferq-client', 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n');
  for (const name of ['server', 'client']) {
    run('openssl', ['pkcs12', '-export', '-in', `${name}.pem`, '-inkey', `${name}-key.pem`, '-certfile', 'ca.pem', '-name', name, '-out', `${name}.p12`, '-passout', `pass:${storePassword}`], dir);
  }
  run('keytool', ['-importcert', '-noprompt', '-alias', 'ca', '-file', 'ca.pem', '-keystore', 'truststore.p12', '-storetype', 'PKCS12', '-storepass', storePassword], dir);
  const f = (name: string): string => join(dir, name);
  return {
    dir,
    caFile: f('ca.pem'),
    serverCertFile: f('server.pem'),
    serverKeyFile: f('server-key.pem'),
    clientCertFile: f('client.pem'),
    clientKeyFile: f('client-key.pem'),
    serverKeystore: f('server.p12'),
    clientKeystore: f('client.p12'),
    truststore: f('truststore.p12'),
    otherCaFile: f('other-ca.pem'),
    storePassword,
    ca: readFileSync(f('ca.pem'), 'utf8'),
    clientCert: readFileSync(f('client.pem'), 'utf8'),
    clientKey: readFileSync(f('client-key.pem'), 'utf8'),
  };
}
