/**
 * A real HDFS for tests: MiniDFSCluster (org.apache.hadoop:hadoop-minicluster, jars from
 * Maven Central through test/infra/hdfs/pom.xml, cached in ~/.cache/inferq/hadoop-<v>/libs,
 * a classpath of its own) started by the single-file launcher test/infra/hdfs/MiniHdfs.java
 * with WebHDFS on fixed loopback ports. `WEBHDFS_URL` set in the environment points the
 * suites at an external cluster instead.
 *
 * `startHdfs({ https })` starts a cluster whose NameNode and DataNode serve WebHDFS over HTTPS
 * only (dfs.http.policy=HTTPS_ONLY; ssl-server.xml is a classpath resource, so it goes in a
 * folder added to the classpath), and whose NameNode issues delegation tokens
 * (dfs.namenode.delegation.token.always-use: the secret manager runs without Kerberos).
 * Without Kerberos the NameNode does not check the tokens it is sent (JspHelper.getUGI reads
 * `delegation=` only when security is on): `https.kerberos` secures the cluster with a MiniKdc
 * (hadoop-minikdc, fetched once like the other jars), so a bad token is refused. WebHDFS still
 * takes `user.name` there (hadoop.http.authentication.type=simple), to ask for a token.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mavenLibs, stopChild } from './process.js';
import { freePort } from './redis.js';
import type { TestCerts } from './tls.js';

export const HADOOP_VERSION = '3.4.1';

/** The JVM flags Hadoop itself adds for Java 17 (its code reflects into these packages). */
const ADD_OPENS = ['java.io', 'java.lang', 'java.lang.reflect', 'java.math', 'java.net', 'java.nio', 'java.text', 'java.util', 'java.util.concurrent', 'java.util.zip', 'sun.nio.ch', 'sun.security.util', 'sun.security.x509'].map(
  (p) => `--add-opens=java.base/${p}=ALL-UNNAMED`,
);

export interface HdfsServer {
  /** WebHDFS base URL of the NameNode ("http://127.0.0.1:port", or https:// with `https`). */
  readonly url: string;
  /** Stops the cluster (SIGTERM, then SIGKILL after 20 s). Its data stays. */
  stop(): Promise<void>;
  /** Starts it again on the same ports and data (for outage tests). */
  start(): Promise<void>;
  /** Stops it and deletes its data. */
  destroy(): Promise<void>;
  pid(): number | undefined;
}

/** Fetches the minicluster jars once; returns the libs folder. */
export function hadoopLibs(version = HADOOP_VERSION): Promise<string> {
  return mavenLibs({
    name: `hadoop-${version}`,
    pom: join(dirname(fileURLToPath(import.meta.url)), 'hdfs', 'pom.xml'),
    properties: { 'hadoop.version': version },
    what: `hadoop-minicluster ${version}`,
    instead: 'WEBHDFS_URL to an external cluster',
  });
}

export interface StartHdfsOptions {
  /** WebHDFS over HTTPS only, with the server keystore of `certs`; the NameNode issues delegation tokens (checked with `kerberos`). */
  readonly https?: { readonly certs: TestCerts; readonly kerberos?: boolean };
}

/** Fetches MiniKdc's jars once (only Kerby and hadoop-minikdc: the rest is in hadoopLibs); returns the libs folder. */
export function minikdcLibs(version = HADOOP_VERSION): Promise<string> {
  return mavenLibs({
    name: `hadoop-minikdc-${version}`,
    pom: join(dirname(fileURLToPath(import.meta.url)), 'hdfs', 'minikdc-pom.xml'),
    properties: { 'hadoop.version': version, includeGroupIds: 'org.apache.kerby,org.apache.hadoop' },
    what: `hadoop-minikdc ${version}`,
    instead: 'WEBHDFS_URL to an external cluster',
  });
}

/** ssl-server.xml: the NameNode's and DataNode's HTTPS keystore. */
function sslServerXml(certs: TestCerts): string {
  const props: Record<string, string> = {
    'ssl.server.keystore.location': certs.serverKeystore,
    'ssl.server.keystore.type': 'pkcs12',
    'ssl.server.keystore.password': certs.storePassword,
    'ssl.server.keystore.keypassword': certs.storePassword,
    'ssl.server.truststore.location': certs.truststore,
    'ssl.server.truststore.type': 'pkcs12',
    'ssl.server.truststore.password': certs.storePassword,
  };
  const body = Object.entries(props).map(([k, v]) => `  <property><name>${k}</name><value>${v}</value></property>`).join('\n');
  return `<?xml version="1.0"?>\n<configuration>\n${body}\n</configuration>\n`;
}

export async function startHdfs(options: StartHdfsOptions = {}): Promise<HdfsServer> {
  const libs = await hadoopLibs();
  const launcher = join(dirname(fileURLToPath(import.meta.url)), 'hdfs', 'MiniHdfs.java');
  const dir = await mkdtemp(join(tmpdir(), 'inferq-hdfs-'));
  const ports: number[] = [];
  while (ports.length < 7) {
    const p = await freePort();
    if (!ports.includes(p)) ports.push(p);
  }
  const [nnRpc, nnHttp, dn, dnHttp, dnIpc, nnHttps, dnHttps] = ports as [number, number, number, number, number, number, number];
  let classpath = `${libs}/*`;
  const extra: string[] = [];
  const jvm: string[] = [];
  if (options.https?.kerberos === true) {
    classpath += `:${await minikdcLibs()}/*`;
    extra.push('inferq.kerberos=true');
    // MiniKdc refreshes the JDK's Kerberos config through sun.security.krb5 internals.
    jvm.push('--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED', '--add-opens=java.security.jgss/sun.security.krb5=ALL-UNNAMED');
  }
  if (options.https !== undefined) {
    const confDir = join(dir, 'conf');
    await mkdir(confDir);
    await writeFile(join(confDir, 'ssl-server.xml'), sslServerXml(options.https.certs));
    classpath += `:${confDir}`;
    extra.push(
      'dfs.http.policy=HTTPS_ONLY',
      `dfs.namenode.https-address=127.0.0.1:${nnHttps}`,
      `dfs.datanode.https.address=127.0.0.1:${dnHttps}`,
      ...(options.https.kerberos === true ? [] : ['dfs.namenode.delegation.token.always-use=true']),
    );
  }
  const url = options.https === undefined ? `http://127.0.0.1:${nnHttp}` : `https://127.0.0.1:${nnHttps}`;
  let child: ChildProcess | undefined;
  let formatted = false;
  const start = async (): Promise<void> => {
    let log = '';
    const proc = spawn(
      'java',
      ['-Xmx1g', '-XX:+IgnoreUnrecognizedVMOptions', ...ADD_OPENS, ...jvm, '-Dlog4j.configuration=none', '-Dhadoop.log.dir=' + join(dir, 'logs'), '-cp', classpath, launcher, join(dir, 'data'), ...[nnRpc, nnHttp, dn, dnHttp, dnIpc].map(String), String(!formatted), ...extra],
      // stdin stays open: the launcher exits when it closes (this process died).
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    child = proc;
    proc.stderr?.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-8000)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new Error(`MiniDFSCluster not ready within 120 s\n${log}`));
      }, 120_000);
      proc.stdout?.on('data', (d: Buffer) => {
        if (d.toString().includes('READY')) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`MiniDFSCluster exited (${code}) during start-up\n${log}`));
      });
    });
    formatted = true;
  };
  const stop = async (): Promise<void> => {
    const proc = child;
    child = undefined;
    await stopChild(proc, 20_000);
  };
  await start();
  return {
    url,
    stop,
    start,
    destroy: async () => {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
    pid: () => child?.pid,
  };
}
