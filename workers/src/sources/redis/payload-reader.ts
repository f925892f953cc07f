/**
 * GETs of payload keys over a bare RESP2 connection of their own.
 *
 * ```
 *  get(key) ─► "*2 $3 GET $n key" ─► socket ─► Redis
 *  reply "$262144\r\n" + bytes ─► read into one fixed buffer ─► copied once into the payload's
 *                                   own buffer (sized from the header) ─► resolve(payload)
 * ```
 *
 * Through ioredis a 256 KB value arrived in several socket buffers that its parser gathered and
 * concatenated, with a command object and its promise chain per GET; here each payload's bytes
 * are copied once, from a read buffer that is reused, into memory allocated at the reply's size.
 * Replies come back in order, so the GETs of every job in flight share the connection.
 */
import type { Socket } from 'node:net';
import { DataIOError } from '@inferq/shared';
import { encodeCommand, endpointName, loginCommands, openRespSocket } from '../../io/resp-socket.js';
import type { RespEndpoint } from '../../io/resp-socket.js';

interface Waiter {
  readonly resolve: (value: Buffer | null) => void;
  readonly reject: (err: Error) => void;
}

/** Longest header line accepted ("$<length>\r\n", "+OK\r\n", or an error message). */
const MAX_LINE = 64 * 1024;
const READ_BUFFER = 1024 * 1024;

/** Parses RESP2 replies of the kinds GET, AUTH and SELECT answer with, handing each to the oldest waiter. */
class Connection {
  private readonly waiting: Waiter[] = [];
  private line: Buffer | undefined;
  private body: Buffer | undefined;
  private bodyAt = 0;
  /** Bytes still to skip: a bulk reply's CRLF, or all of a reply over the size limit. */
  private skip = 0;
  /** What the reply being skipped resolves to once skipped. */
  private after: Buffer | null | Error = null;
  failure: Error | undefined;
  private socket: Socket | undefined;

  constructor(
    private readonly where: string,
    private readonly maxBytes: number,
  ) {}

  attach(socket: Socket): void {
    this.socket = socket;
    socket.on('data', (d: Buffer) => this.feed(d, d.length));
    socket.on('error', (err) => this.fail(new DataIOError(`redis ${this.where}: ${err.message}`, { retriable: true, cause: err })));
    socket.on('close', () => this.fail(new DataIOError(`redis ${this.where}: the connection closed`, { retriable: true })));
  }

  command(args: readonly string[]): Promise<Buffer | null> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.socket!.write(encodeCommand(args));
    });
  }

  /** Consumes bytes [0, n) of a read; `chunk` may be reused by the caller afterwards. */
  feed(chunk: Uint8Array, n: number): void {
    let at = 0;
    while (at < n && this.failure === undefined) {
      if (this.skip > 0) {
        const k = Math.min(this.skip, n - at);
        at += k;
        this.skip -= k;
        if (this.skip === 0) this.settle(this.after);
      } else if (this.body !== undefined) {
        const k = Math.min(n - at, this.body.length - this.bodyAt);
        this.body.set(chunk.subarray(at, at + k), this.bodyAt);
        this.bodyAt += k;
        at += k;
        if (this.bodyAt === this.body.length) [this.after, this.body, this.skip] = [this.body, undefined, 2];
      } else {
        at = this.header(chunk, at, n);
      }
    }
  }

  /** Reads a header line starting at `at`; returns where the next bytes start. */
  private header(chunk: Uint8Array, at: number, n: number): number {
    let eol = chunk.indexOf(0x0a, at);
    if (eol >= n) eol = -1;
    const piece = Buffer.from(chunk.buffer, chunk.byteOffset + at, (eol < 0 ? n : eol + 1) - at);
    const line = this.line === undefined ? piece : Buffer.concat([this.line, piece]);
    if (eol < 0) {
      if (line.length > MAX_LINE) this.fail(new DataIOError(`redis ${this.where}: a reply line over ${MAX_LINE} bytes`, { retriable: true }));
      this.line = Buffer.from(line); // the read buffer is reused: keep a copy
      return n;
    }
    this.line = undefined;
    const text = line.toString('latin1', 1, line.length - 2);
    switch (line[0]) {
      case 0x24: {
        const length = Number(text);
        if (length === -1) this.settle(null);
        else if (!Number.isSafeInteger(length) || length < 0) this.fail(new DataIOError(`redis ${this.where}: malformed bulk length "${text}"`, { retriable: true }));
        else if (length > this.maxBytes) [this.after, this.skip] = [new DataIOError(`redis ${this.where}: a value of ${length} bytes, over the ${this.maxBytes}-byte payload limit`), length + 2];
        else [this.body, this.bodyAt] = [Buffer.allocUnsafeSlow(length), 0];
        if (length === 0) [this.after, this.body, this.skip] = [Buffer.alloc(0), undefined, 2];
        break;
      }
      case 0x2b: // +OK
      case 0x3a: // :<integer>
        this.settle(Buffer.from(text));
        break;
      case 0x2d: // -ERR …
        this.settle(new DataIOError(`redis ${this.where}: ${line.toString('utf8', 1, line.length - 2)}`, { retriable: true }));
        break;
      default:
        this.fail(new DataIOError(`redis ${this.where}: unexpected reply type "${String.fromCharCode(line[0]!)}"`, { retriable: true }));
    }
    return eol + 1;
  }

  private settle(value: Buffer | null | Error): void {
    const w = this.waiting.shift();
    if (w === undefined) {
      this.fail(new DataIOError(`redis ${this.where}: a reply that no command waited for`, { retriable: true }));
      return;
    }
    if (value instanceof Error) w.reject(value);
    else w.resolve(value);
  }

  fail(err: Error): void {
    if (this.failure !== undefined) return;
    this.failure = err;
    for (const w of this.waiting.splice(0)) w.reject(err);
    this.socket?.destroy();
  }
}

export class PayloadReader {
  private conn: Promise<Connection> | undefined;
  private closed = false;

  constructor(
    private readonly endpoint: RespEndpoint,
    private readonly options: { readonly maxBytes: number; readonly connectTimeoutMs: number },
  ) {}

  /** The value of `key` (null when missing); rejects with a retriable DataIOError when the server cannot be read. */
  async get(key: string): Promise<Buffer | null> {
    if (this.closed) throw new DataIOError(`redis ${endpointName(this.endpoint)}: the payload reader is closed`, { retriable: true });
    const current = this.conn;
    // A failed open was reported to the GET that started it; this one opens anew.
    let conn = current === undefined ? undefined : await current.catch(() => undefined);
    if (conn === undefined || conn.failure !== undefined) {
      // Concurrent GETs that found the same dead connection share one new one.
      if (this.conn === current) this.conn = this.open();
      const opening = this.conn!;
      conn = await opening.catch((err: unknown) => {
        if (this.conn === opening) this.conn = undefined; // the next job tries again
        throw err;
      });
    }
    return conn.command(['GET', key]);
  }

  close(): void {
    this.closed = true;
    void this.conn?.then((c) => c.fail(new DataIOError(`redis ${endpointName(this.endpoint)}: the payload reader was closed`, { retriable: true }))).catch(() => undefined);
  }

  private async open(): Promise<Connection> {
    const conn = new Connection(endpointName(this.endpoint), this.options.maxBytes);
    const read = Buffer.allocUnsafe(READ_BUFFER);
    const plain = this.endpoint.tls === undefined || this.endpoint.tls === false;
    // Plain sockets read into one buffer of ours; a TLS socket hands over a new buffer per read.
    const socket = await openRespSocket(this.endpoint, this.options.connectTimeoutMs, plain ? { buffer: read, callback: (n: number, buf: Uint8Array) => (conn.feed(buf, n), true) } : undefined);
    conn.attach(socket);
    try {
      for (const login of loginCommands(this.endpoint)) await conn.command(login);
    } catch (err) {
      conn.fail(err as Error);
      throw err;
    }
    if (this.closed) conn.fail(new DataIOError(`redis ${endpointName(this.endpoint)}: the payload reader was closed`, { retriable: true }));
    return conn;
  }
}
