/**
 * The sinks a worker writes to: its own (`--sink`, every result), and the extra sinks a job
 * may name (`enqueue(…, { sinks })`), allowed only under the folders the worker was given
 * (`--allow-job-sinks`), so a job cannot make a worker write anywhere it can reach.
 *
 * A job sink is a Parquet folder, written `parquet:<uri>` or `<uri>` (a local path, file://,
 * webhdfs:// or hdfs://). It is allowed when it lies inside an allowed folder of the same
 * store, after `..` and `.` segments are resolved and, on local disk, after symlinks are
 * followed. Each distinct folder is opened once, on first use, with the worker's roll
 * settings, and probed: a folder that cannot be created or written is refused before the
 * job runs.
 */
import { realpath } from 'node:fs/promises';
import { basename, dirname, join, posix } from 'node:path';
import { InvalidInputError, SinkRefusedError, jobSuffix, printable } from '@inferq/shared';
import { parseLocation } from '../io/store.js';
import type { ParquetSink } from './parquet-sink.js';
import { isPermanentWriteError } from './write-errors.js';

export interface SinkSetOptions {
  /** The worker's own sinks: every result goes there. */
  readonly defaults: readonly ParquetSink[];
  /** Folders under which jobs may name sinks of their own. Default: none (a job naming one is refused). */
  readonly allowJobSinksUnder?: readonly string[];
  /** Opens a sink for a folder (with the worker's roll settings). */
  readonly open: (uri: string) => ParquetSink;
  /** Most distinct job sinks held open. Default 64. */
  readonly maxJobSinks?: number;
}

/** Roll files as a sink names them: `<base>/model=…/version=…/date=…/part-….parquet`. */
const PART_FILE = /^part-[A-Za-z0-9_.:-]+-\d{20}-\d{20}-\d+of\d+\.parquet$/;

export class SinkSet {
  private readonly opts: SinkSetOptions;
  private readonly allowed: { readonly key: string; readonly uri: string }[];
  /** Every open sink by its canonical key (defaults first). */
  private readonly byKey = new Map<string, ParquetSink>();
  /** Job sinks being opened (probed), by key. */
  private readonly opening = new Map<string, Promise<ParquetSink>>();
  private readonly defaultKeys: string[];

  constructor(options: SinkSetOptions) {
    this.opts = options;
    this.allowed = (options.allowJobSinksUnder ?? []).map((uri) => ({ key: canonicalKey(uri), uri }));
    this.defaultKeys = options.defaults.map((sink) => {
      const key = canonicalKey(sink.location.uri);
      this.byKey.set(key, sink);
      return key;
    });
  }

  /** Whether any result may ever be written (own sinks, or job sinks allowed). */
  get active(): boolean {
    return this.defaultKeys.length > 0 || this.allowed.length > 0;
  }

  /** Every open sink. */
  all(): ParquetSink[] {
    return [...this.byKey.values()];
  }

  /** The worker's own sinks. */
  defaults(): ParquetSink[] {
    return this.defaultKeys.map((k) => this.byKey.get(k)!);
  }

  /** Whether jobs may name sinks of their own. */
  get allowsJobSinks(): boolean {
    return this.allowed.length > 0;
  }

  /** The key under which a sink's rolls are recorded. */
  keyOf(sink: ParquetSink): string {
    return canonicalKey(sink.location.uri);
  }

  /** Whether the sink is one of the worker's own (a permanent failure there stops the worker, not one job). */
  isDefault(sink: ParquetSink): boolean {
    return this.defaultKeys.includes(this.keyOf(sink));
  }

  /** Probes the worker's own sinks (at start): a folder that cannot be written fails the start. */
  async probeDefaults(): Promise<void> {
    for (const key of this.defaultKeys) await this.byKey.get(key)!.probe();
  }

  /**
   * The sinks a job's rows go to: the worker's own, then the job's own (deduplicated), each
   * opened and probed. Throws InvalidInputError naming the first job sink that is not allowed,
   * SinkRefusedError when one cannot be written, a retriable error when that may pass.
   */
  async forJob(jobSinks: readonly string[] | undefined, jobId: string): Promise<ParquetSink[]> {
    const keys = [...this.defaultKeys];
    for (const spec of jobSinks ?? []) {
      const key = this.check(spec, jobId);
      if (!keys.includes(key)) keys.push(key);
    }
    const out: ParquetSink[] = [];
    for (const key of keys) out.push(this.byKey.get(key) ?? (await this.openJobSink(key, jobId)));
    return out;
  }

  /**
   * The sink and files of a roll record read back from the source (untrusted): the sink must
   * be one this worker may write, and every file a roll file inside it. Undefined otherwise.
   */
  async recordedFiles(key: string, files: unknown, jobId: string): Promise<{ sink: ParquetSink; files: string[] } | undefined> {
    if (!Array.isArray(files) || files.length === 0 || files.length > 10_000) return undefined;
    let sink: ParquetSink;
    try {
      sink = this.byKey.get(key) ?? (await this.openJobSink(this.check(key, jobId), jobId));
    } catch {
      return undefined;
    }
    const base = sink.location.path.replace(/\/+$/, '');
    for (const f of files) {
      if (typeof f !== 'string' || posix.normalize(f) !== f || !f.startsWith(`${base}/`) || f.includes('\0')) return undefined;
      const parts = f.slice(base.length + 1).split('/');
      if (parts.length !== 4 || !parts[0]!.startsWith('model=') || !parts[1]!.startsWith('version=') || !/^date=\d{4}-\d{2}-\d{2}$/.test(parts[2]!)) return undefined;
      if (!PART_FILE.test(parts[3]!)) return undefined;
    }
    return { sink, files: files as string[] };
  }

  /** Checks one job sink against the allowed folders (lexically); returns its canonical key. */
  check(spec: string, jobId: string): string {
    const refuse = (why: string): never => {
      throw new InvalidInputError(`job sink "${printable(String(spec))}"${why.startsWith(':') ? '' : ' '}${why}${jobSuffix(jobId)}`, { jobId, code: 'SINK_NOT_ALLOWED' });
    };
    if (typeof spec !== 'string') refuse('is not a string');
    // eslint-disable-next-line no-control-regex -- exactly the characters refused
    if (/[\u0000-\u001f\u007f]/.test(spec)) refuse('contains a control character');
    const uri = spec.startsWith('parquet:') ? spec.slice('parquet:'.length) : spec;
    let key = '';
    try {
      key = canonicalKey(uri);
    } catch (err) {
      refuse(`: ${(err as Error).message}`);
    }
    if (this.defaultKeys.includes(key)) return key;
    if (this.allowed.length === 0) refuse('is not allowed: this worker takes no job sinks (start it with --allow-job-sinks <folder>)');
    if (this.allowedRoot(key) === undefined) refuse(`is not allowed: this worker takes job sinks under ${this.allowed.map((a) => `"${a.uri}"`).join(', ')} only`);
    const jobSinks = this.byKey.size - this.defaultKeys.length;
    if (!this.byKey.has(key) && jobSinks >= (this.opts.maxJobSinks ?? 64)) refuse(`refused: this worker already writes to ${jobSinks} job sinks, its limit`);
    return key;
  }

  private allowedRoot(key: string): { readonly key: string; readonly uri: string } | undefined {
    return this.allowed.find((a) => key === a.key || key.startsWith(`${a.key}/`));
  }

  /** Opens a job sink once: on local disk its real path (symlinks followed) must stay inside the allowed folder; then it is probed. */
  private openJobSink(key: string, jobId: string): Promise<ParquetSink> {
    let p = this.opening.get(key);
    if (p === undefined) {
      p = (async () => {
        const root = this.allowedRoot(key);
        if (root !== undefined && key.startsWith('file://')) {
          const [real, realRoot] = await Promise.all([realDeepest(key.slice('file://'.length)), realDeepest(root.key.slice('file://'.length))]);
          if (real !== realRoot && !real.startsWith(`${realRoot}/`)) {
            throw new InvalidInputError(`job sink "${printable(key)}" is not allowed: it resolves to ${printable(real)}, outside "${root.uri}" (a symlink)${jobSuffix(jobId)}`, { jobId, code: 'SINK_NOT_ALLOWED' });
          }
        }
        const sink = this.opts.open(key);
        try {
          await sink.probe();
        } catch (err) {
          if (!isPermanentWriteError(err)) throw err;
          throw new SinkRefusedError(`job sink "${printable(key)}" cannot be written: ${(err as Error).message}${jobSuffix(jobId)}`, { jobId, sink: key, cause: err });
        }
        this.byKey.set(key, sink);
        return sink;
      })();
      this.opening.set(key, p);
      // A refused or unreachable folder is tried again by the next job that names it.
      p.then(
        () => this.opening.delete(key),
        () => this.opening.delete(key),
      );
    }
    return p;
  }
}

/** The real path of a local path: its deepest existing ancestor with symlinks resolved, joined with the rest. */
async function realDeepest(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    const parent = dirname(path);
    return parent === path ? path : join(await realDeepest(parent), basename(path));
  }
}

/**
 * One spelling per folder: `file:///abs/path` for local disk, `<scheme>://<authority>/path`
 * for HDFS, with `.`/`..` resolved and no trailing slash. It is also a URI parseLocation reads.
 */
export function canonicalKey(uri: string): string {
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^/]*)(\/.*)?$/i.exec(uri);
  if (m !== null && m[1]!.toLowerCase() !== 'file') {
    parseLocation(uri); // refuses unknown schemes
    const path = posix.normalize(m[3] ?? '/').replace(/\/+$/, '');
    return `${m[1]!.toLowerCase()}://${m[2]!.toLowerCase()}${path === '' ? '/' : path}`;
  }
  const path = parseLocation(uri).path.replace(/\/+$/, '');
  return `file://${path === '' ? '/' : path}`;
}
