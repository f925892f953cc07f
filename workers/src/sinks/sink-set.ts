/**
 * The sinks a worker writes to: its own (`--sink`, every result), and the extra sinks a job
 * may name (`enqueue(…, { sinks })`), allowed only under the folders the worker was given
 * (`--allow-job-sinks`), so a job cannot make a worker write anywhere it can reach.
 *
 * A job sink is a Parquet folder, written `parquet:<uri>` or `<uri>` (a local path, file://,
 * webhdfs:// or hdfs://). It is allowed when it lies inside an allowed folder of the same
 * store, after `..` and `.` segments are resolved. Each distinct folder is opened once, on
 * first use, with the worker's roll settings.
 */
import { posix } from 'node:path';
import { InvalidInputError, jobSuffix } from '@inferq/shared';
import { parseLocation } from '../io/store.js';
import type { ParquetSink } from './parquet-sink.js';

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

export class SinkSet {
  private readonly opts: SinkSetOptions;
  private readonly allowed: { readonly key: string; readonly uri: string }[];
  /** Every open sink by its canonical key (defaults first). */
  private readonly byKey = new Map<string, ParquetSink>();
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

  /** The key under which a sink's rolls are recorded. */
  keyOf(sink: ParquetSink): string {
    return canonicalKey(sink.location.uri);
  }

  /**
   * The sinks a job's rows go to: the worker's own, then the job's own (deduplicated).
   * Throws InvalidInputError naming the first job sink that is not allowed.
   */
  forJob(jobSinks: readonly string[] | undefined, jobId: string): ParquetSink[] {
    const keys = [...this.defaultKeys];
    for (const spec of jobSinks ?? []) {
      const key = this.check(spec, jobId);
      if (!keys.includes(key)) keys.push(key);
    }
    return keys.map((key) => this.sinkFor(key));
  }

  /** The sink recorded under `key` (a job run again finds its earlier rolls there); opened when needed. */
  recorded(key: string, jobId: string): ParquetSink {
    const sink = this.byKey.get(key);
    if (sink !== undefined) return sink;
    this.check(key, jobId);
    return this.sinkFor(key);
  }

  /** Checks one job sink against the allowed folders; returns its canonical key. */
  check(spec: string, jobId: string): string {
    const uri = spec.startsWith('parquet:') ? spec.slice('parquet:'.length) : spec;
    let key: string;
    try {
      key = canonicalKey(uri);
    } catch (err) {
      throw new InvalidInputError(`job sink "${spec}": ${(err as Error).message}${jobSuffix(jobId)}`, { jobId });
    }
    if (this.defaultKeys.includes(key)) return key;
    if (this.allowed.length === 0) {
      throw new InvalidInputError(`job sink "${spec}" is not allowed: this worker takes no job sinks (start it with --allow-job-sinks <folder>)${jobSuffix(jobId)}`, { jobId });
    }
    if (!this.allowed.some((a) => key === a.key || key.startsWith(`${a.key}/`))) {
      throw new InvalidInputError(
        `job sink "${spec}" is not allowed: this worker takes job sinks under ${this.allowed.map((a) => `"${a.uri}"`).join(', ')} only${jobSuffix(jobId)}`,
        { jobId },
      );
    }
    const jobSinks = this.byKey.size - this.defaultKeys.length;
    if (!this.byKey.has(key) && jobSinks >= (this.opts.maxJobSinks ?? 64)) {
      throw new InvalidInputError(`job sink "${spec}" refused: this worker already writes to ${jobSinks} job sinks, its limit${jobSuffix(jobId)}`, { jobId });
    }
    return key;
  }

  private sinkFor(key: string): ParquetSink {
    let sink = this.byKey.get(key);
    if (sink === undefined) {
      sink = this.opts.open(key);
      this.byKey.set(key, sink);
    }
    return sink;
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
