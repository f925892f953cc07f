/**
 * Producer-side batching, like Kafka's linger.ms: jobs of one window that share model,
 * version, replyTo, sinks, group (Kafka: the partition key) and input signature travel as one
 * envelope (their rows concatenated, `jobs` listing each job's id, rows and deadline) in one
 * BullMQ job or Kafka message.
 *
 * ```
 *  add(job) ─► pack of its key ── full (maxJobs / maxBytes) ─► send ─► addJob(one envelope) ─► every job's enqueue() settles
 *                               └─ window ends (ms) ─────────► send
 * ```
 */
import { randomUUID } from 'node:crypto';
import { ConnectionError, DTYPE_BYTES, EnvelopeError, InferqError, MAX_PACKED_JOBS, checkTensors, encodeEnvelope, jobSuffix, viewOf } from '@inferq/shared';
import type { DType, JobData, PackedJob, Tensor, TensorMap } from '@inferq/shared';

/** The `linger` option (see ProducerOptions). */
export interface LingerOptions {
  readonly ms: number;
  readonly maxJobs?: number;
  readonly maxBytes?: number;
}

/** The metadata of a job that decides its pack. */
export interface PackOptions {
  readonly version?: string | undefined;
  readonly replyTo?: string | undefined;
  readonly sinks?: readonly string[] | undefined;
  readonly rowIds?: readonly string[] | undefined;
  /** Jobs of different groups never share a pack (Kafka: the partition key, whose order must hold). */
  readonly group?: string | undefined;
}

/** A job's options as offer() reads them: its pack's metadata, its deadline, and the BullMQ options a pack cannot carry. */
export interface OfferOptions extends PackOptions {
  readonly deadline?: number | undefined;
  readonly priority?: number | undefined;
  readonly delay?: number | undefined;
  readonly attempts?: number | undefined;
  readonly backoff?: unknown;
}

/** Writes one job (a lone one or a pack) to the queue; `pack` is what its jobs share. */
export type AddJob = (id: string, meta: Omit<JobData, 'key' | 'b64'>, payload: Uint8Array, pack: PackOptions) => Promise<void>;

/** A job waiting in a pack. */
export interface PackedItem {
  readonly job: PackedJob;
  /** Settles the job's enqueue() with its id. */
  readonly resolve: (id: string) => void;
  readonly reject: (err: Error) => void;
}

/** One input of a pack: the bytes of its jobs' rows so far, appended into one growing buffer (a copy: callers may reuse theirs). */
interface PackColumn {
  readonly dtype: DType;
  readonly rowShape: readonly number[];
  bytes: Uint8Array;
  used: number;
}

/** Jobs that will travel as one envelope. */
interface Pack {
  readonly model: string;
  readonly version: string | undefined;
  readonly replyTo: string | undefined;
  readonly sinks: readonly string[] | undefined;
  readonly group: string | undefined;
  readonly items: PackedItem[];
  readonly columns: Map<string, PackColumn>;
  /** Every job's rowIds, concatenated (a pack's jobs either all give rowIds or none does). */
  readonly rowIds: string[] | undefined;
  rows: number;
  bytes: number;
}

export class Packer {
  /** A job with at least this many bytes of features goes alone. */
  private readonly maxBytes: number;
  private readonly maxJobs: number;
  private readonly ms: number;
  private readonly addJob: AddJob;
  /** Packs filling during the current window, by pack key. */
  private readonly packs = new Map<string, Pack>();
  private timer: NodeJS.Timeout | undefined;
  private readonly flushing = new Set<Promise<void>>();

  constructor(linger: LingerOptions, addJob: AddJob) {
    this.ms = linger.ms;
    this.maxJobs = Math.min(linger.maxJobs ?? 1000, MAX_PACKED_JOBS);
    this.maxBytes = linger.maxBytes ?? 1024 * 1024;
    this.addJob = addJob;
  }

  /**
   * Packs a job that can share a pack (no priority, delay, attempts or backoff of its own, and
   * smaller than a pack): resolves with `id` once its pack is sent. Undefined: it goes alone.
   * Throws (at once) what encodeEnvelope() would refuse for this job alone, which must not fail its whole pack later.
   */
  offer(id: string, model: string, options: OfferOptions, tensors: TensorMap): Promise<string> | undefined {
    if (options.priority !== undefined || options.delay !== undefined || options.attempts !== undefined || options.backoff !== undefined) return undefined;
    let bytes = 0;
    for (const name in tensors) bytes += tensors[name]!.data.byteLength;
    if (bytes >= this.maxBytes) return undefined;
    const rows = checkTensors({ id, model }, tensors);
    if (options.rowIds !== undefined && (options.rowIds.length !== rows || !options.rowIds.every((r) => typeof r === 'string'))) {
      throw new EnvelopeError(`rowIds: expected ${rows} strings (one per row), got ${options.rowIds.length} entries${jobSuffix(id)}`, { jobId: id, model });
    }
    if (options.deadline !== undefined && !(Number.isSafeInteger(options.deadline) && options.deadline >= 0)) {
      throw new EnvelopeError(`deadline: expected epoch milliseconds, got ${String(options.deadline)}${jobSuffix(id)}`, { jobId: id, model });
    }
    return new Promise<string>((resolve, reject) => this.add(model, options, tensors, { job: { id, rows, deadline: options.deadline }, resolve, reject }));
  }

  /** Adds a job (its input checked already) to the pack its metadata and input signature choose; sends the pack when full. */
  private add(model: string, options: PackOptions, tensors: TensorMap, item: PackedItem): void {
    // Jobs share a pack only when their rows can be concatenated and their metadata is one.
    let key = `${model}\u0000${options.version ?? ''}\u0000${options.replyTo ?? ''}\u0000${options.sinks === undefined ? '' : JSON.stringify(options.sinks)}\u0000${options.rowIds === undefined ? 0 : 1}\u0000${options.group ?? ''}`;
    for (const name in tensors) {
      const t = tensors[name]!;
      key += `\u0000${name}:${t.dtype}`;
      for (let d = 1; d < t.shape.length; d++) key += `,${t.shape[d]!}`;
    }
    let pack = this.packs.get(key);
    if (pack === undefined) {
      const columns = new Map<string, PackColumn>();
      for (const name in tensors) {
        const t = tensors[name]!;
        columns.set(name, { dtype: t.dtype, rowShape: t.shape.slice(1), bytes: new Uint8Array(Math.max(t.data.byteLength, Math.min(t.data.byteLength * 16, 256 * 1024))), used: 0 });
      }
      pack = { model, version: options.version, replyTo: options.replyTo, sinks: options.sinks, group: options.group, items: [], columns, rowIds: options.rowIds === undefined ? undefined : [], rows: 0, bytes: 0 };
      this.packs.set(key, pack);
    }
    for (const name in tensors) {
      // Bytes as they are, as encodeEnvelope() copies them for a job sent alone.
      const data = tensors[name]!.data;
      const src = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      const col = pack.columns.get(name)!;
      if (col.used + src.length > col.bytes.length) {
        const grown = new Uint8Array(Math.max(2 * col.bytes.length, col.used + src.length));
        grown.set(col.bytes.subarray(0, col.used));
        col.bytes = grown;
      }
      col.bytes.set(src, col.used);
      col.used += src.length;
      pack.bytes += src.length;
    }
    if (pack.rowIds !== undefined) for (const r of options.rowIds!) pack.rowIds.push(r);
    pack.items.push(item);
    pack.rows += item.job.rows;
    if (pack.items.length >= this.maxJobs || pack.bytes >= this.maxBytes) {
      this.packs.delete(key);
      this.send(pack);
    } else {
      this.timer ??= setTimeout(() => this.sendAll(), this.ms);
    }
  }

  /** Sends every pack of the window now; resolves when every pack sent so far has settled (never rejects). */
  async flush(): Promise<void> {
    this.sendAll();
    await Promise.all(this.flushing);
  }

  /** Sends every pack of the window. */
  private sendAll(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const packs = [...this.packs.values()];
    this.packs.clear();
    for (const pack of packs) this.send(pack);
  }

  /** Sends a pack as one BullMQ job (a lone job as an ordinary one); every enqueue() in it resolves (or rejects) with it. */
  private send(pack: Pack): void {
    const items = pack.items;
    let sent: Promise<void>;
    try {
      const meta = { model: pack.model, version: pack.version, replyTo: pack.replyTo, sinks: pack.sinks, rowIds: pack.rowIds, group: pack.group };
      const tensors: Record<string, Tensor> = {};
      for (const [name, col] of pack.columns) {
        tensors[name] = { dtype: col.dtype, shape: [pack.rows, ...col.rowShape], data: viewOf(col.dtype, col.bytes.buffer, col.bytes.byteOffset, col.used / DTYPE_BYTES[col.dtype]) };
      }
      if (items.length === 1) {
        const only = items[0]!.job;
        const payload = encodeEnvelope({ ...meta, id: only.id, deadline: only.deadline }, tensors);
        sent = this.addJob(only.id, { v: 1, model: pack.model, version: pack.version, rows: pack.rows, bytes: payload.byteLength }, payload, meta);
      } else {
        const id = randomUUID();
        const payload = encodeEnvelope({ ...meta, id, jobs: items.map((i) => i.job) }, tensors);
        sent = this.addJob(id, { v: 1, model: pack.model, version: pack.version, rows: pack.rows, bytes: payload.byteLength, bundle: items.length }, payload, meta);
      }
    } catch (err) {
      sent = Promise.reject(err as Error);
    }
    const settled = sent.then(
      () => items.forEach((i) => i.resolve(i.job.id)),
      (err: Error) => {
        // The callers know their own job ids, not the pack's: say which it was and how many it held (a ConnectionError names the server and is theirs too).
        const failure = items.length === 1 || err instanceof ConnectionError ? err : new InferqError(`enqueue of ${items.length} packed jobs (model ${pack.model}) failed: ${err.message}`, { model: pack.model, retriable: true, cause: err });
        items.forEach((i) => i.reject(failure));
      },
    );
    this.flushing.add(settled);
    void settled.then(() => this.flushing.delete(settled)); // settled never rejects
  }
}
