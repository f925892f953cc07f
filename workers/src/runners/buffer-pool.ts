/**
 * Batch buffers reused by byte size, so a batch costs a copy but no allocation: every fresh
 * ArrayBuffer is new external memory to V8, and a 1 MB one per batch makes it run a full GC every
 * few hundred milliseconds. One class serves both sides of the model thread: the main thread
 * pools the SharedArrayBuffers it shares with the thread ({@link BufferPool.shared}), the thread
 * pools the ArrayBuffers it copies them into ({@link BufferPool.plain}).
 *
 * No I/O and no imports: the model thread loads this file on its own.
 */

export interface BufferPoolOptions {
  /** Buffers of one byte size kept for reuse. Default 4. */
  readonly perSize?: number;
  /** Bytes kept for reuse, all sizes together. Default 64 MiB. */
  readonly maxBytes?: number;
}

export const BUFFER_POOL_DEFAULTS: Required<BufferPoolOptions> = { perSize: 4, maxBytes: 64 * 1024 * 1024 };

export class BufferPool<B extends ArrayBuffer | SharedArrayBuffer> {
  private readonly free = new Map<number, B[]>();
  private bytes = 0;
  private readonly perSize: number;
  private readonly maxBytes: number;

  /** A pool of plain ArrayBuffers (memory of this thread alone). */
  static plain(options: BufferPoolOptions = {}): BufferPool<ArrayBuffer> {
    return new BufferPool((n) => new ArrayBuffer(n), options);
  }

  /** A pool of SharedArrayBuffers (memory another thread can read without a copy). */
  static shared(options: BufferPoolOptions = {}): BufferPool<SharedArrayBuffer> {
    return new BufferPool((n) => new SharedArrayBuffer(n), options);
  }

  constructor(
    private readonly make: (byteLength: number) => B,
    options: BufferPoolOptions = {},
  ) {
    this.perSize = options.perSize ?? BUFFER_POOL_DEFAULTS.perSize;
    this.maxBytes = options.maxBytes ?? BUFFER_POOL_DEFAULTS.maxBytes;
  }

  /** A kept buffer of exactly `byteLength` bytes (holding what it held before), else a new one. */
  take(byteLength: number): B {
    const buf = this.free.get(byteLength)?.pop();
    if (buf === undefined) return this.make(byteLength);
    this.bytes -= byteLength;
    return buf;
  }

  /** Keeps `buf` for a later take(); false when it was dropped (empty, or the pool is full). */
  give(buf: B): boolean {
    const n = buf.byteLength;
    const list = this.free.get(n) ?? [];
    if (n === 0 || list.length >= this.perSize || this.bytes + n > this.maxBytes) return false;
    if (list.length === 0) this.free.set(n, list);
    list.push(buf);
    this.bytes += n;
    return true;
  }

  /** Bytes held for reuse. */
  get heldBytes(): number {
    return this.bytes;
  }
}
