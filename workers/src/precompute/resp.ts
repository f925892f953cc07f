/**
 * A bare RESP2 connection for precompute's bulk writes, and the builder of the bytes it sends.
 *
 * ```
 *  RespBuilder: *4 $4 HSET $<n> <bucket> $<n> <key> $<n> <json> …   (one Buffer per chunk)
 *  RespConnection.send(bytes, replies) ─► socket ─► Redis ─► `:1` `:1` … `-ERR …`
 *     └ resolves once `replies` replies came back; rejects with the first error reply
 * ```
 *
 * Redis's own advice for mass insertion is to generate the protocol and pipe it in. A chunk of
 * 8,192 rows is ~1,000 HSETs of ~16 fields: through ioredis each field was a string held across
 * the write's awaits and turned into protocol text argument by argument; that handling and the
 * garbage collections its surviving strings caused were most of a run's main-thread time
 * outside the model. Here the rows' keys and values arrive as UTF-8 bytes and are copied into
 * one buffer, and the replies (integers, for HSET and SADD) are counted, not turned into objects.
 * ioredis still does the rest of a run's Redis work: the lock, the run's metadata, the swap.
 */
import type { Socket } from 'node:net';
import { DataIOError } from '@inferq/shared';
import { endpointName, loginCommands, openRespSocket } from '../io/resp-socket.js';
import type { RespEndpoint } from '../io/resp-socket.js';

/** Builds RESP2 commands into one growing buffer. */
export class RespBuilder {
  private buf: Buffer;
  private at = 0;

  constructor(capacity = 4096) {
    this.buf = Buffer.allocUnsafe(Math.max(64, capacity));
  }

  /** The header of a command of `n` arguments (the command's name counts). */
  array(n: number): this {
    this.room(24);
    this.buf[this.at++] = 0x2a; // *
    this.int(n);
    return this.crlf();
  }

  /** A bulk string: `bytes[start … end)`. */
  bulk(bytes: Uint8Array, start: number, end: number): this {
    const len = end - start;
    this.room(len + 24);
    this.buf[this.at++] = 0x24; // $
    this.int(len);
    this.crlf();
    const buf = this.buf;
    if (len <= 32) {
      // Keys and JSON values are short: a loop beats a subarray view and a native copy.
      let at = this.at;
      for (let i = start; i < end; i++) buf[at++] = bytes[i]!;
      this.at = at;
    } else {
      buf.set(bytes.subarray(start, end), this.at);
      this.at += len;
    }
    return this.crlf();
  }

  bulkString(s: string): this {
    const len = Buffer.byteLength(s);
    this.room(len + 24);
    this.buf[this.at++] = 0x24; // $
    this.int(len);
    this.crlf();
    this.at += this.buf.write(s, this.at);
    return this.crlf();
  }

  command(...args: readonly string[]): this {
    this.array(args.length);
    for (const a of args) this.bulkString(a);
    return this;
  }

  /** The bytes built so far (a view; the builder is not used after this). */
  finish(): Buffer {
    return this.buf.subarray(0, this.at);
  }

  private room(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + n));
    this.buf.copy(grown, 0, 0, this.at);
    this.buf = grown;
  }

  private crlf(): this {
    this.buf[this.at++] = 0x0d;
    this.buf[this.at++] = 0x0a;
    return this;
  }

  private int(n: number): void {
    if (n < 10) {
      this.buf[this.at++] = 0x30 + n;
      return;
    }
    let digits = 1;
    for (let x = n; x >= 10; x = Math.floor(x / 10)) digits++;
    let at = this.at + digits;
    this.at = at;
    for (let x = n; at > this.at - digits; x = Math.floor(x / 10)) this.buf[--at] = 0x30 + (x % 10);
  }
}

interface Waiting {
  left: number;
  error: string | undefined;
  readonly what: string;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

const EMPTY = Buffer.alloc(0);

export class RespConnection {
  private rest: Buffer = EMPTY;
  private readonly waiting: Waiting[] = [];
  private failure: Error | undefined;

  private constructor(
    private readonly socket: Socket,
    /** host:port, or the unix socket path, for messages. */
    readonly where: string,
  ) {
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (err) => this.fail(new DataIOError(`redis ${where}: ${err.message}`, { retriable: true, cause: err })));
    socket.on('close', () => this.fail(new DataIOError(`redis ${where}: the connection closed`, { retriable: true })));
  }

  /**
   * Connects to the server an ioredis client of the same URL talks to (pass its parsed
   * `options`: host and port or a unix socket path, TLS, user, password, database), then
   * sends AUTH and SELECT as they ask.
   */
  static async open(endpoint: RespEndpoint, timeoutMs = 10_000): Promise<RespConnection> {
    const socket = await openRespSocket(endpoint, timeoutMs);
    const conn = new RespConnection(socket, endpointName(endpoint));
    try {
      for (const login of loginCommands(endpoint)) await conn.send(new RespBuilder().command(...login).finish(), 1, login[0]!);
    } catch (err) {
      conn.close();
      throw err;
    }
    return conn;
  }

  /**
   * Sends commands already encoded; resolves when `replies` replies have come back (one per
   * command), or rejects, after all of them came back, with the first error reply among them.
   * Replies come back in order, so several sends may be in flight.
   */
  send(payload: Uint8Array, replies: number, what: string): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ left: replies, error: undefined, what, resolve, reject });
      this.socket.write(payload);
    });
  }

  close(): void {
    this.fail(new DataIOError(`redis ${this.where}: the connection was closed`, { retriable: true }));
  }

  private onData(data: Buffer): void {
    const buf = this.rest.length === 0 ? data : Buffer.concat([this.rest, data]);
    let at = 0;
    for (;;) {
      let end: number;
      try {
        end = replyEnd(buf, at);
      } catch (err) {
        this.fail(new DataIOError(`redis ${this.where}: ${(err as Error).message}`, { retriable: true }));
        return;
      }
      if (end < 0) break;
      const error = buf[at] === 0x2d ? buf.toString('utf8', at + 1, end - 2) : undefined; // -ERR …
      at = end;
      this.reply(error);
      if (this.failure !== undefined) return;
    }
    // The unparsed tail of a reply is small: copy it, so the socket's buffer is not kept.
    this.rest = at === buf.length ? EMPTY : Buffer.from(buf.subarray(at));
  }

  private reply(error: string | undefined): void {
    const head = this.waiting[0];
    if (head === undefined) {
      this.fail(new DataIOError(`redis ${this.where}: a reply that no command waited for${error === undefined ? '' : ` (${error})`}`, { retriable: true }));
      return;
    }
    if (error !== undefined && head.error === undefined) head.error = error;
    if (--head.left > 0) return;
    this.waiting.shift();
    if (head.error === undefined) head.resolve();
    else head.reject(new DataIOError(`redis ${this.where}: ${head.what} failed: ${head.error}`, { retriable: true }));
  }

  private fail(err: Error): void {
    if (this.failure !== undefined) return;
    this.failure = err;
    for (const w of this.waiting.splice(0)) w.reject(err);
    this.socket.destroy();
  }
}

/** Where the RESP2 reply at `at` ends, or -1 when it has not all arrived yet (exported for tests). */
export function replyEnd(buf: Buffer, at: number): number {
  if (at >= buf.length) return -1;
  const eol = buf.indexOf(0x0d, at);
  if (eol < 0 || eol + 1 >= buf.length) return -1;
  if (buf[eol + 1] !== 0x0a) throw new Error('malformed reply: CR without LF');
  const line = eol + 2;
  const type = buf[at];
  if (type === 0x2b || type === 0x2d || type === 0x3a) return line; // + - :
  if (type === 0x24 || type === 0x2a) {
    // $ bulk string, * array
    const text = buf.toString('latin1', at + 1, eol);
    const n = /^-?\d+$/.test(text) ? Number(text) : Number.NaN;
    if (!Number.isSafeInteger(n)) throw new Error(`malformed reply length "${text}"`);
    if (n < 0) return line; // null
    if (type === 0x24) return line + n + 2 <= buf.length ? line + n + 2 : -1;
    let p = line;
    for (let i = 0; i < n; i++) {
      p = replyEnd(buf, p);
      if (p < 0) return -1;
    }
    return p;
  }
  throw new Error(`unexpected reply type "${String.fromCharCode(type!)}"`);
}
