/**
 * The tensor envelope: one binary message carrying a job's tensors.
 *
 * ```
 *  0        4     5     6        8            12           16
 *  ┌────────┬─────┬─────┬────────┬────────────┬────────────┐
 *  │ "IQE1" │ ver │flags│ (zero) │ headerLen  │ totalLen   │   fixed prefix, little-endian u32s
 *  ├────────┴─────┴─────┴────────┴────────────┴────────────┤
 *  │ crc32 of every byte after this field                  │   16..20
 *  ├───────────────────────────────────────────────────────┤
 *  │ header: UTF-8 JSON (id, model, version, rows, tensors │   20..20+headerLen
 *  │ [{name,dtype,shape,offset,byteLength}], rowIds, ...)  │
 *  ├─ zero padding to a multiple of 8 ─────────────────────┤
 *  │ tensor bytes, each tensor at an 8-aligned offset      │   dataStart..totalLen
 *  │ relative to dataStart, little-endian, row-major       │
 *  └───────────────────────────────────────────────────────┘
 * ```
 *
 * Decoding validates the prefix, the checksum, then every field of the header
 * against the byte region *before* making any view, and then returns typed-array
 * views over the message bytes (no copy, unless the bytes are not aligned for
 * their dtype, in which case the data region is copied once).
 */
import { crc32 } from './checksum.js';
import { DTYPE_BYTES, isDType, viewOf } from './dtype.js';
import type { DType } from './dtype.js';
import { EnvelopeError, jobSuffix } from './errors.js';
import { elementCount } from './tensor.js';
import type { Tensor, TensorMap } from './tensor.js';

const MAGIC = 0x31455149; // "IQE1" read as a little-endian u32
export const ENVELOPE_VERSION = 1;
const PREFIX_BYTES = 20;
/** Hard upper bound of one envelope (2 GiB − 1): larger messages are refused outright. */
export const MAX_ENVELOPE_BYTES = 0x7fffffff;
const MAX_TENSORS = 256;
const MAX_RANK = 8;
const MAX_ID_LENGTH = 512;
const NAME_PATTERN = /^[A-Za-z0-9_.:/-]{1,256}$/;

/** What a request or result envelope says besides its tensors. */
export interface EnvelopeMeta {
  /** Job id: unique per job; used for idempotency and reply correlation. */
  readonly id: string;
  /** Model name. */
  readonly model: string;
  /** Model version; absent means "the version policy's default". */
  readonly version?: string | undefined;
  /** Optional per-row ids (one per row), carried through to results. */
  readonly rowIds?: readonly string[] | undefined;
  /** Where the caller wants the reply (stream or topic name). */
  readonly replyTo?: string | undefined;
  /** Extra sinks for this job's results (URIs). */
  readonly sinks?: readonly string[] | undefined;
  /** Absolute deadline, epoch milliseconds. */
  readonly deadline?: number | undefined;
  /** For result envelopes: set when the job failed. */
  readonly error?: { readonly message: string; readonly kind: string } | undefined;
  /**
   * Set when the envelope packs several jobs (the producer's linger): each job's id, its
   * number of rows and its deadline, in row order. `id` is then the pack's own id.
   */
  readonly jobs?: readonly PackedJob[] | undefined;
}

/** One job of a packed envelope: rows `[start, start + rows)` where start is the sum of the rows before it. */
export interface PackedJob {
  readonly id: string;
  readonly rows: number;
  /** Absolute deadline, epoch milliseconds. */
  readonly deadline?: number | undefined;
}

export interface Envelope extends EnvelopeMeta {
  /** Rows in every tensor (the shared first dimension). */
  readonly rows: number;
  readonly tensors: TensorMap;
}

interface TensorHeader {
  name: string;
  dtype: DType;
  shape: number[];
  offset: number;
  byteLength: number;
}

interface Header {
  id: string;
  model: string;
  version?: string;
  rows: number;
  tensors: TensorHeader[];
  rowIds?: string[];
  replyTo?: string;
  sinks?: string[];
  deadline?: number;
  error?: { message: string; kind: string };
  jobs?: PackedHeader;
}

/** A packed envelope's jobs on the wire: parallel arrays, less JSON to write and parse than an object per job. */
interface PackedHeader {
  ids: string[];
  rows: number[];
  /** Present when some job has a deadline; null for those without. */
  deadlines?: (number | null)[];
}

/** Most jobs one packed envelope may hold. */
export const MAX_PACKED_JOBS = 100_000;

const align8 = (n: number): number => (n + 7) & ~7;
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** Encodes tensors and metadata into one envelope. One copy of each tensor's bytes. */
export function encodeEnvelope(meta: EnvelopeMeta, tensors: TensorMap): Uint8Array {
  const rows = checkTensors(meta, tensors);
  const tensorHeaders: TensorHeader[] = [];
  let dataLength = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const byteLength = t.data.byteLength;
    tensorHeaders.push({ name, dtype: t.dtype, shape: [...t.shape], offset: dataLength, byteLength });
    dataLength = align8(dataLength + byteLength);
  }
  const header: Header = { id: meta.id, model: meta.model, rows, tensors: tensorHeaders };
  if (meta.version !== undefined) header.version = meta.version;
  if (meta.rowIds !== undefined) header.rowIds = [...meta.rowIds];
  if (meta.replyTo !== undefined) header.replyTo = meta.replyTo;
  if (meta.sinks !== undefined) header.sinks = [...meta.sinks];
  if (meta.deadline !== undefined) header.deadline = meta.deadline;
  if (meta.error !== undefined) header.error = { message: meta.error.message, kind: meta.error.kind };
  if (meta.jobs !== undefined) {
    const ids: string[] = [];
    const jobRows: number[] = [];
    let deadlines: (number | null)[] | undefined;
    meta.jobs.forEach((j, i) => {
      ids.push(j.id);
      jobRows.push(j.rows);
      if (j.deadline !== undefined) (deadlines ??= new Array<number | null>(meta.jobs!.length).fill(null))[i] = j.deadline;
    });
    header.jobs = deadlines === undefined ? { ids, rows: jobRows } : { ids, rows: jobRows, deadlines };
  }
  validateHeader(header, dataLength); // never emit what we would refuse to decode

  const headerBytes = encoder.encode(JSON.stringify(header));
  const dataStart = align8(PREFIX_BYTES + headerBytes.length);
  const total = dataStart + dataLength;
  if (total > MAX_ENVELOPE_BYTES) {
    throw new EnvelopeError(`envelope of ${total} bytes exceeds the ${MAX_ENVELOPE_BYTES}-byte limit${jobSuffix(meta.id)}`, {
      jobId: meta.id,
    });
  }
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  view.setUint32(0, MAGIC, true);
  out[4] = ENVELOPE_VERSION;
  view.setUint32(8, headerBytes.length, true);
  view.setUint32(12, total, true);
  out.set(headerBytes, PREFIX_BYTES);
  for (const th of tensorHeaders) {
    const t = tensors[th.name]!;
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), dataStart + th.offset);
  }
  view.setUint32(16, crc32(out.subarray(PREFIX_BYTES)), true);
  return out;
}

/**
 * The rows of a job's tensors, after checking what encodeEnvelope() needs: every tensor's
 * data as long as its shape says, and one shared first dimension (no tensors: zero rows).
 */
export function checkTensors(meta: Pick<EnvelopeMeta, 'id' | 'model'>, tensors: TensorMap): number {
  let rows: number | undefined;
  for (const [name, t] of Object.entries(tensors)) {
    const expected = elementCount(t.shape) * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== expected) {
      throw new EnvelopeError(
        `tensor "${name}": shape [${t.shape.join(',')}] needs ${expected} bytes of ${t.dtype}, data has ${t.data.byteLength}${jobSuffix(meta.id)}`,
        { jobId: meta.id, model: meta.model },
      );
    }
    const r = t.shape[0];
    if (r === undefined) {
      throw new EnvelopeError(`tensor "${name}": rank 0 has no batch dimension${jobSuffix(meta.id)}`, { jobId: meta.id });
    }
    if (rows !== undefined && r !== rows) {
      throw new EnvelopeError(
        `tensor "${name}": ${r} rows, but other tensors have ${rows}${jobSuffix(meta.id)}`,
        { jobId: meta.id },
      );
    }
    rows = r;
  }
  // A job with no tensors is a zero-row job (an empty batch whose width the caller could not know).
  return rows ?? 0;
}

/**
 * Decodes an envelope. Returns typed-array views into `bytes` (zero-copy when
 * aligned). Throws {@link EnvelopeError} naming what is wrong; never returns a
 * tensor that disagrees with its header.
 */
export function decodeEnvelope(bytes: Uint8Array): Envelope {
  if (bytes.byteLength < PREFIX_BYTES) {
    throw new EnvelopeError(`envelope truncated: ${bytes.byteLength} bytes, shorter than the ${PREFIX_BYTES}-byte prefix`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0, true);
  if (magic !== MAGIC) {
    throw new EnvelopeError(`not an inferq envelope: magic 0x${magic.toString(16).padStart(8, '0')}, expected 0x${MAGIC.toString(16)} ("IQE1")`);
  }
  const version = bytes[4]!;
  if (version !== ENVELOPE_VERSION) {
    throw new EnvelopeError(`envelope version ${version} is not supported (this build reads version ${ENVELOPE_VERSION})`);
  }
  if (bytes[5] !== 0 || view.getUint16(6, true) !== 0) {
    throw new EnvelopeError(`envelope flags/reserved bytes are 0x${bytes[5]!.toString(16)}/0x${view.getUint16(6, true).toString(16)}, expected 0 (corrupt bytes)`);
  }
  const headerLength = view.getUint32(8, true);
  const total = view.getUint32(12, true);
  if (total !== bytes.byteLength) {
    throw new EnvelopeError(
      total > bytes.byteLength
        ? `envelope truncated: prefix says ${total} bytes, got ${bytes.byteLength}`
        : `envelope has trailing bytes: prefix says ${total} bytes, got ${bytes.byteLength}`,
    );
  }
  if (PREFIX_BYTES + headerLength > total) {
    throw new EnvelopeError(`envelope header length ${headerLength} runs past the end of the ${total}-byte message`);
  }
  const expectedCrc = view.getUint32(16, true);
  const actualCrc = crc32(bytes.subarray(PREFIX_BYTES));
  if (expectedCrc !== actualCrc) {
    throw new EnvelopeError(
      `envelope checksum mismatch: crc32 0x${actualCrc.toString(16)}, header says 0x${expectedCrc.toString(16)} (corrupt bytes)`,
    );
  }
  const dataStart = align8(PREFIX_BYTES + headerLength);
  if (dataStart > total) {
    throw new EnvelopeError(`envelope header padding runs past the end of the ${total}-byte message`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(decoder.decode(bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength)));
  } catch (cause) {
    throw new EnvelopeError(`envelope header is not valid UTF-8 JSON`, { cause });
  }
  const dataLength = total - dataStart;
  const header = validateHeader(parsed, dataLength);

  // Views must be aligned to their element size; copy the data region once if not.
  let dataBuffer: ArrayBufferLike = bytes.buffer;
  let dataOffset = bytes.byteOffset + dataStart;
  if (dataOffset % 8 !== 0) {
    const copy = new Uint8Array(dataLength);
    copy.set(bytes.subarray(dataStart, total));
    dataBuffer = copy.buffer;
    dataOffset = 0;
  }
  const tensors: Record<string, Tensor> = {};
  for (const th of header.tensors) {
    const length = th.byteLength / DTYPE_BYTES[th.dtype];
    const data = viewOf(th.dtype, dataBuffer, dataOffset + th.offset, length);
    if (th.dtype === 'bool') {
      const u8 = data as Uint8Array;
      for (let i = 0; i < u8.length; i++) {
        if (u8[i]! > 1) {
          throw new EnvelopeError(`tensor "${th.name}": bool element ${i} has value ${u8[i]}, expected 0 or 1${jobSuffix(header.id)}`, {
            jobId: header.id,
          });
        }
      }
    }
    tensors[th.name] = { dtype: th.dtype, shape: th.shape, data };
  }
  return {
    id: header.id,
    model: header.model,
    version: header.version,
    rows: header.rows,
    tensors,
    rowIds: header.rowIds,
    replyTo: header.replyTo,
    sinks: header.sinks,
    deadline: header.deadline,
    error: header.error,
    jobs: header.jobs === undefined ? undefined : packedJobs(header.jobs),
  };
}

function packedJobs(h: PackedHeader): PackedJob[] {
  const out: PackedJob[] = new Array<PackedJob>(h.ids.length);
  for (let i = 0; i < h.ids.length; i++) {
    const deadline = h.deadlines?.[i];
    out[i] = deadline === null || deadline === undefined ? { id: h.ids[i]!, rows: h.rows[i]! } : { id: h.ids[i]!, rows: h.rows[i]!, deadline };
  }
  return out;
}

/**
 * Checks a parsed header field by field against the size of the data region.
 * Hand-written (not a schema library): it runs on every message.
 */
function validateHeader(value: unknown, dataLength: number): Header {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new EnvelopeError('envelope header is not a JSON object');
  }
  const h = value as Record<string, unknown>;
  const id = h['id'];
  if (typeof id !== 'string' || id.length === 0 || id.length > MAX_ID_LENGTH) {
    throw new EnvelopeError(`envelope header "id": expected a string of 1..${MAX_ID_LENGTH} characters, got ${show(id)}`);
  }
  const fail = (message: string): never => {
    throw new EnvelopeError(`${message}${jobSuffix(id)}`, { jobId: id });
  };
  const model = h['model'];
  if (typeof model !== 'string' || !NAME_PATTERN.test(model)) {
    fail(`envelope header "model": expected a model name ([A-Za-z0-9_.:/-], 1..256), got ${show(model)}`);
  }
  const version = h['version'];
  if (version !== undefined && (typeof version !== 'string' || !NAME_PATTERN.test(version))) {
    fail(`envelope header "version": expected a version string, got ${show(version)}`);
  }
  const rows = h['rows'];
  if (!isCount(rows)) fail(`envelope header "rows": expected a non-negative integer, got ${show(rows)}`);
  const tensors = h['tensors'];
  if (!Array.isArray(tensors) || tensors.length > MAX_TENSORS || (tensors.length === 0 && rows !== 0)) {
    fail(`envelope header "tensors": expected 1..${MAX_TENSORS} tensors (none only for zero rows), got ${show(tensors)}`);
  }
  const seen = new Set<string>();
  let end = 0;
  for (const raw of tensors as unknown[]) {
    if (typeof raw !== 'object' || raw === null) fail(`envelope tensor entry is not an object: ${show(raw)}`);
    const t = raw as Record<string, unknown>;
    const name = t['name'];
    if (typeof name !== 'string' || name.length === 0 || name.length > 256) fail(`envelope tensor name: expected a string, got ${show(name)}`);
    const n = name as string;
    if (seen.has(n)) fail(`tensor "${n}" appears twice in the envelope`);
    seen.add(n);
    const dtype = t['dtype'];
    if (!isDType(dtype)) fail(`tensor "${n}": unknown dtype ${show(dtype)}`);
    const shape = t['shape'];
    if (!Array.isArray(shape) || shape.length === 0 || shape.length > MAX_RANK || !shape.every(isCount)) {
      fail(`tensor "${n}": shape must be 1..${MAX_RANK} non-negative integers, got ${show(shape)}`);
    }
    const dims = shape as number[];
    if (dims[0] !== rows) fail(`tensor "${n}": shape [${dims.join(',')}] has ${dims[0]} rows, header says ${rows as number}`);
    const offset = t['offset'];
    const byteLength = t['byteLength'];
    if (!isCount(offset) || (offset as number) % 8 !== 0) fail(`tensor "${n}": offset ${show(offset)} is not a multiple of 8`);
    if (!isCount(byteLength)) fail(`tensor "${n}": byteLength ${show(byteLength)} is not a non-negative integer`);
    const expected = elementCount(dims) * DTYPE_BYTES[dtype as DType];
    if (byteLength !== expected) {
      fail(`tensor "${n}": ${dtype as string} [${dims.join(',')}] needs ${expected} bytes, header says ${byteLength as number}`);
    }
    if ((offset as number) < end) fail(`tensor "${n}": offset ${offset as number} overlaps the previous tensor (ends at ${end})`);
    end = (offset as number) + (byteLength as number);
    if (end > dataLength) fail(`tensor "${n}": bytes ${offset as number}..${end} run past the ${dataLength}-byte data region`);
  }
  const rowIds = h['rowIds'];
  if (rowIds !== undefined) {
    if (!Array.isArray(rowIds) || rowIds.length !== rows || !rowIds.every((r) => typeof r === 'string')) {
      fail(`envelope header "rowIds": expected ${rows as number} strings, got ${show(rowIds)}`);
    }
  }
  const replyTo = h['replyTo'];
  if (replyTo !== undefined && (typeof replyTo !== 'string' || replyTo.length === 0 || replyTo.length > 512)) {
    fail(`envelope header "replyTo": expected a stream or topic name, got ${show(replyTo)}`);
  }
  const sinks = h['sinks'];
  if (sinks !== undefined && (!Array.isArray(sinks) || !sinks.every((s) => typeof s === 'string'))) {
    fail(`envelope header "sinks": expected an array of URIs, got ${show(sinks)}`);
  }
  const deadline = h['deadline'];
  if (deadline !== undefined && !isCount(deadline)) fail(`envelope header "deadline": expected epoch milliseconds, got ${show(deadline)}`);
  const error = h['error'];
  if (error !== undefined) {
    const e = error as Record<string, unknown> | null;
    if (typeof e !== 'object' || e === null || typeof e['message'] !== 'string' || typeof e['kind'] !== 'string') {
      fail(`envelope header "error": expected { message, kind } strings, got ${show(error)}`);
    }
  }
  const jobs = h['jobs'];
  if (jobs !== undefined) {
    const j = (typeof jobs === 'object' && jobs !== null ? jobs : {}) as Record<string, unknown>;
    const ids = j['ids'];
    const jobRows = j['rows'];
    const deadlines = j['deadlines'];
    if (!Array.isArray(ids) || ids.length === 0 || ids.length > MAX_PACKED_JOBS) {
      fail(`envelope header "jobs.ids": expected 1..${MAX_PACKED_JOBS} job ids, got ${show(ids)}`);
    }
    const n = (ids as unknown[]).length;
    if (!Array.isArray(jobRows) || jobRows.length !== n) fail(`envelope header "jobs.rows": expected ${n} row counts, got ${show(jobRows)}`);
    if (deadlines !== undefined && (!Array.isArray(deadlines) || deadlines.length !== n)) fail(`envelope header "jobs.deadlines": expected ${n} entries, got ${show(deadlines)}`);
    const seen = new Set<string>();
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const jid = (ids as unknown[])[i];
      if (typeof jid !== 'string' || jid.length === 0 || jid.length > MAX_ID_LENGTH) {
        fail(`envelope header "jobs.ids"[${i}]: expected a string of 1..${MAX_ID_LENGTH} characters, got ${show(jid)}`);
      }
      seen.add(jid as string);
      if (seen.size !== i + 1) fail(`envelope header "jobs.ids"[${i}]: job id ${show(jid)} appears twice`);
      const r = (jobRows as unknown[])[i];
      if (!isCount(r)) fail(`envelope header "jobs.rows"[${i}]: expected a non-negative integer, got ${show(r)}`);
      sum += r as number;
      const d = (deadlines as unknown[] | undefined)?.[i];
      if (d !== undefined && d !== null && !isCount(d)) fail(`envelope header "jobs.deadlines"[${i}]: expected epoch milliseconds or null, got ${show(d)}`);
    }
    if (sum !== rows) fail(`envelope header "jobs.rows": they add up to ${sum}, header says ${rows as number}`);
  }
  return h as unknown as Header;
}

/**
 * The jobs of a packed envelope as envelopes of their own (views of its tensors, no copy),
 * each with its id, deadline and rows; the rest of the metadata is shared.
 */
export function unpackJobs(envelope: Envelope): Envelope[] {
  const jobs = envelope.jobs;
  if (jobs === undefined) return [envelope];
  // Runs once per job of every packed reply: the per-tensor facts are worked out once.
  const columns = Object.entries(envelope.tensors).map(([name, t]) => ({ name, t, rowShape: t.shape.slice(1), width: rowWidth(t) }));
  const out: Envelope[] = [];
  let start = 0;
  for (const j of jobs) {
    const end = start + j.rows;
    const tensors: Record<string, Tensor> = {};
    for (const c of columns) tensors[c.name] = { dtype: c.t.dtype, shape: [j.rows, ...c.rowShape], data: c.t.data.subarray(start * c.width, end * c.width) };
    out.push({
      id: j.id,
      model: envelope.model,
      version: envelope.version,
      rows: j.rows,
      tensors,
      rowIds: envelope.rowIds?.slice(start, end),
      replyTo: envelope.replyTo,
      sinks: envelope.sinks,
      deadline: j.deadline,
      error: envelope.error,
    });
    start = end;
  }
  return out;
}

/** Rows `[start, end)` of every tensor, as views (no copy). */
export function sliceRows(tensors: TensorMap, start: number, end: number): TensorMap {
  const out: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries(tensors)) {
    const width = rowWidth(t);
    out[name] = { dtype: t.dtype, shape: [end - start, ...t.shape.slice(1)], data: t.data.subarray(start * width, end * width) };
  }
  return out;
}

/** Elements per row (the product of the dimensions after the first). */
function rowWidth(t: Tensor): number {
  let w = 1;
  for (let d = 1; d < t.shape.length; d++) w *= t.shape[d]!;
  return w;
}

function isCount(v: unknown): boolean {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** A short printable form of a bad value for messages. */
function show(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
