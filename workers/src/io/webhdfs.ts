/**
 * A small typed WebHDFS client (the HDFS REST API of the NameNode), on node:http.
 *
 * ```
 *  CREATE / APPEND:  PUT|POST namenode/webhdfs/v1/<path>?op=…  (no body) ─► 307 Location: datanode
 *                    PUT|POST <Location> with the bytes               ─► 201 / 200
 *  OPEN:             GET  namenode …?op=OPEN ─► 307 ─► GET datanode ─► the bytes
 *  MKDIRS, RENAME, DELETE, LISTSTATUS, GETFILESTATUS: one request to the NameNode, JSON answer
 * ```
 *
 * Why not the `webhdfs` npm package: it is built on `request`, deprecated since 2020 and
 * unmaintained, and has no types. Why not fetch: the DataNode answers a write with
 * `100 Continue` whether or not it was asked to, and undici's fetch fails on it
 * ("bad response"); node:http handles it.
 *
 * `https://` NameNodes (`swebhdfs://` in store.ts) are reached over TLS, checked against `ca`
 * when the cluster has a private CA; the NameNode then redirects to the DataNodes' HTTPS ports.
 *
 * Errors carry the RemoteException (`exception`, `javaClassName`, `message`). Requests time
 * out; network errors, 5xx, the NameNode's StandbyException/RetriableException/SafeMode
 * and "no DataNode yet" (a cluster that is starting) are retried with exponential backoff;
 * other 4xx (missing file, bad request, file exists) are not.
 */
import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { InferqError } from '@inferq/shared';

export interface WebHdfsOptions {
  /** NameNode HTTP(S) address, e.g. "http://namenode:9870" or "https://namenode:9871". */
  readonly url: string;
  /** PEM CA certificate(s) that signed the NameNode's and DataNodes' HTTPS certificates. Default: the system CAs. */
  readonly ca?: string | Buffer;
  /** `user.name` for simple authentication. Default: $HADOOP_USER_NAME, $USER, or "inferq". */
  readonly user?: string;
  /** A delegation token (`delegation=`), instead of `user.name`, for secured clusters. */
  readonly delegationToken?: string;
  /** Per-request timeout. Default 30 s. */
  readonly timeoutMs?: number;
  /** Tries for a retriable failure. Default 5 (backoff 200 ms × 2ⁿ, at most 5 s). */
  readonly attempts?: number;
}

/** What the CLI sets once for every client that does not name its own (setWebHdfsDefaults). */
export type WebHdfsDefaults = Pick<WebHdfsOptions, 'ca' | 'delegationToken'>;

let defaults: WebHdfsDefaults = {};

/**
 * The CA and delegation token of clients made without them (files, sinks and model folders
 * open clients deep inside the commands); the CLI calls it once from its flags.
 */
export function setWebHdfsDefaults(d: WebHdfsDefaults): void {
  defaults = { ...d };
}

export interface FileStatus {
  readonly pathSuffix: string;
  readonly type: 'FILE' | 'DIRECTORY' | 'SYMLINK';
  readonly length: number;
  readonly modificationTime: number;
  readonly replication: number;
  readonly permission: string;
  readonly owner: string;
}

/** An HDFS error, with the server's RemoteException when it sent one. */
export class WebHdfsError extends InferqError {
  readonly status: number | undefined;
  readonly exception: string | undefined;
  readonly javaClassName: string | undefined;

  constructor(message: string, opts: { status?: number | undefined; exception?: string | undefined; javaClassName?: string | undefined; retriable: boolean; cause?: unknown }) {
    // A server that may answer later is unavailable; one that refused is an I/O error of ours.
    super(message, { retriable: opts.retriable, cause: opts.cause, code: opts.retriable ? 'UNAVAILABLE' : 'IO' });
    this.status = opts.status;
    this.exception = opts.exception;
    this.javaClassName = opts.javaClassName;
  }
}

interface Response {
  readonly status: number;
  readonly headers: IncomingMessage['headers'];
  readonly body: Buffer;
}

const RETRIABLE_EXCEPTIONS = new Set(['StandbyException', 'RetriableException', 'SafeModeException', 'ConnectException']);

export class WebHdfs {
  readonly url: string;
  private readonly opts: WebHdfsOptions;

  constructor(options: WebHdfsOptions) {
    const ca = options.ca ?? defaults.ca;
    const delegationToken = options.delegationToken ?? defaults.delegationToken;
    this.opts = { ...options, ...(ca === undefined ? {} : { ca }), ...(delegationToken === undefined ? {} : { delegationToken }) };
    this.url = options.url.replace(/\/+$/, '');
  }

  /** Writes a whole file (two-step CREATE). `overwrite` default false: an existing file is an error. */
  async create(path: string, data: Uint8Array, options: { overwrite?: boolean; permission?: string } = {}): Promise<void> {
    await this.twoStep('PUT', path, 'CREATE', { overwrite: String(options.overwrite ?? false), ...(options.permission === undefined ? {} : { permission: options.permission }) }, data, 201);
  }

  /** Appends to an existing file (two-step APPEND). */
  async append(path: string, data: Uint8Array): Promise<void> {
    await this.twoStep('POST', path, 'APPEND', {}, data, 200);
  }

  /** Reads a whole file, or `length` bytes from `offset`. */
  async open(path: string, range?: { readonly offset: number; readonly length: number }): Promise<Buffer> {
    const params: Record<string, string> = range === undefined ? {} : { offset: String(range.offset), length: String(range.length) };
    return (await this.twoStep('GET', path, 'OPEN', params, undefined, 200)).body;
  }

  async mkdirs(path: string): Promise<boolean> {
    return this.json<{ boolean: boolean }>('PUT', path, 'MKDIRS').then((r) => r.boolean);
  }

  /** Renames; false when HDFS refused (e.g. the destination exists). */
  async rename(from: string, to: string): Promise<boolean> {
    return this.json<{ boolean: boolean }>('PUT', from, 'RENAME', { destination: absolute(to) }).then((r) => r.boolean);
  }

  /** Deletes; false when there was nothing to delete. */
  async delete(path: string, recursive = false): Promise<boolean> {
    return this.json<{ boolean: boolean }>('DELETE', path, 'DELETE', { recursive: String(recursive) }).then((r) => r.boolean);
  }

  async listStatus(path: string): Promise<FileStatus[]> {
    return this.json<{ FileStatuses: { FileStatus: FileStatus[] } }>('GET', path, 'LISTSTATUS').then((r) => r.FileStatuses.FileStatus);
  }

  /** The file's status, or undefined when it does not exist. */
  async getFileStatus(path: string): Promise<FileStatus | undefined> {
    try {
      return (await this.json<{ FileStatus: FileStatus }>('GET', path, 'GETFILESTATUS')).FileStatus;
    } catch (err) {
      if (err instanceof WebHdfsError && err.status === 404) return undefined;
      throw err;
    }
  }

  private query(path: string, op: string, params: Record<string, string>): string {
    const q = new URLSearchParams({ op, ...params });
    if (this.opts.delegationToken !== undefined) q.set('delegation', this.opts.delegationToken);
    else q.set('user.name', this.opts.user ?? process.env['HADOOP_USER_NAME'] ?? process.env['USER'] ?? 'inferq');
    return `${this.url}/webhdfs/v1${encodePath(absolute(path))}?${q.toString()}`;
  }

  private async json<T>(method: string, path: string, op: string, params: Record<string, string> = {}): Promise<T> {
    const res = await this.retry(`${op} ${path}`, () => this.send(method, this.query(path, op, params)), 200);
    return JSON.parse(res.body.toString('utf8')) as T;
  }

  /** The NameNode redirects to a DataNode; the body goes (or comes) only in the second request. */
  private twoStep(method: string, path: string, op: string, params: Record<string, string>, data: Uint8Array | undefined, expect: number): Promise<Response> {
    return this.retry(
      `${op} ${path}`,
      async () => {
        const first = await this.send(method, this.query(path, op, params));
        if (first.status !== 307) return first;
        const location = first.headers.location;
        if (location === undefined) throw new WebHdfsError(`${op} ${path}: redirect without a Location`, { status: 307, retriable: true });
        return this.send(method, location, data);
      },
      expect,
    );
  }

  private async retry(what: string, attempt: () => Promise<Response>, expect: number): Promise<Response> {
    const attempts = this.opts.attempts ?? 5;
    for (let i = 1; ; i++) {
      let err: WebHdfsError;
      try {
        const res = await attempt();
        if (res.status === expect) return res;
        err = remoteError(what, res);
      } catch (e) {
        err = e instanceof WebHdfsError ? e : networkError(what, this.url, e);
      }
      if (!err.retriable || i >= attempts) throw err;
      await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** (i - 1))));
    }
  }

  private send(method: string, url: string, body?: Uint8Array): Promise<Response> {
    const timeoutMs = this.opts.timeoutMs ?? 30_000;
    return new Promise((resolve, reject) => {
      const options = { method, timeout: timeoutMs, headers: body === undefined ? {} : { 'content-type': 'application/octet-stream', 'content-length': body.byteLength } };
      const onResponse = (res: IncomingMessage): void => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      };
      // The redirect's Location decides for the second request: an HTTPS NameNode sends HTTPS DataNode addresses.
      const req = /^https:/i.test(url) ? httpsRequest(url, { ...options, ...(this.opts.ca === undefined ? {} : { ca: this.opts.ca }) }, onResponse) : httpRequest(url, options, onResponse);
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(body === undefined ? undefined : Buffer.from(body.buffer, body.byteOffset, body.byteLength));
    });
  }
}

/** Certificate checks that fail the same way every time (node's tls error codes). */
const TLS_REFUSALS = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

function networkError(what: string, url: string, e: unknown): WebHdfsError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code !== undefined && TLS_REFUSALS.has(code)) {
    return new WebHdfsError(`${what}: the server's TLS certificate was refused: ${(e as Error).message} (WebHDFS at ${url}; a private CA is given with --hdfs-ca-file / WEBHDFS_CA_FILE)`, { retriable: false, cause: e });
  }
  return new WebHdfsError(`${what}: ${(e as Error).message} (WebHDFS at ${url})`, { retriable: true, cause: e });
}

function remoteError(what: string, res: Response): WebHdfsError {
  let exception: string | undefined;
  let javaClassName: string | undefined;
  let message = res.body.toString('utf8').slice(0, 500);
  try {
    const parsed = JSON.parse(res.body.toString('utf8')) as { RemoteException?: { exception?: string; javaClassName?: string; message?: string } };
    exception = parsed.RemoteException?.exception;
    javaClassName = parsed.RemoteException?.javaClassName;
    message = parsed.RemoteException?.message ?? message;
  } catch {
    // not JSON
  }
  // A NameNode that just started has no DataNode registered yet for a moment: that passes.
  const noDatanode = exception === 'IOException' && /Failed to find datanode|could only be (written|replicated) to 0/.test(message);
  const retriable = res.status >= 500 || noDatanode || (exception !== undefined && RETRIABLE_EXCEPTIONS.has(exception));
  return new WebHdfsError(`${what}: HTTP ${res.status}${exception === undefined ? '' : ` ${exception}`}: ${message}`, { status: res.status, exception, javaClassName, retriable });
}

const absolute = (p: string): string => (p.startsWith('/') ? p : `/${p}`);
const encodePath = (p: string): string => p.split('/').map(encodeURIComponent).join('/');
